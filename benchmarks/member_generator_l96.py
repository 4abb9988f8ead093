"""Score a trained L96 member generator on held-out dates of an EDA store, against the untrained core and the
local-regression baseline (``hybrid_eda.l96.regression_emulators.LocalRegression``).

    python benchmarks/member_generator_l96.py --store l96-eda.zarr --checkpoint .../inference-last.ckpt \
        --start 2001-11-18T12 --end 2002-01-19T18 --n-real 10 --replicas 8 [--regression noise=0.2,window=2,ridge=1]

Per date, the 20 members are put in a seeded random order; the first ``--n-real`` are guides (analysis and
background), the others targets: each generator makes ``--replicas`` members from every target background, scored
against the target's analysis (fair CRPS per point, fair energy score over the ring, RMSE of the replica mean,
spread/skill of the replicas). The hybrid ensemble (the guides plus one generated member per target) is also
scored against the truth, beside the full EDA. Medians over dates are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def fair_crps(members: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``members [..., R, n]``, ``target [..., n]`` -> fair CRPS ``[..., n]``."""
    r = members.shape[-2]
    skill = np.abs(members - target[..., None, :]).mean(axis=-2)
    pairs = np.abs(members[..., :, None, :] - members[..., None, :, :]).sum(axis=(-3, -2))
    return skill - pairs / (2 * r * (r - 1))


def fair_energy(members: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``members [..., R, n]``, ``target [..., n]`` -> fair energy score (Euclidean norm over ``n``) ``[...]``."""
    r = members.shape[-2]
    skill = np.linalg.norm(members - target[..., None, :], axis=-1).mean(axis=-1)
    pairs = np.linalg.norm(members[..., :, None, :] - members[..., None, :, :], axis=-1).sum(axis=(-2, -1))
    return skill - pairs / (2 * r * (r - 1))


def scores(members: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``members [k, R, n]`` of the targets ``[k, n]``."""
    mean = members.mean(axis=1)
    error = np.sqrt(((mean - target) ** 2).mean())
    spread = np.sqrt(members.var(axis=1, ddof=1).mean())
    return {
        "crps": float(fair_crps(members, target).mean()),
        "energy": float(fair_energy(members, target).mean()),
        "rmse": float(error),
        "spread_skill": float(spread / error),
    }


def hybrid_scores(ensemble: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The ensemble ``[N, n]`` against the truth ``[n]``: RMSE of the mean, spread, fair CRPS."""
    rmse = np.sqrt(((ensemble.mean(axis=0) - truth) ** 2).mean())
    spread = np.sqrt(ensemble.var(axis=0, ddof=1).mean())
    return {"rmse": float(rmse), "spread": float(spread), "crps": float(fair_crps(ensemble, truth).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--n-real", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--regression", default="noise=0.2,window=2,ridge=1")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from anemoi.datasets import open_dataset

    from hybrid_eda.l96.emulators import get_emulator
    from hybrid_eda.models import load_member_generator
    from hybrid_eda.models.member_generator_core import base_flow_solution

    data = open_dataset({"dataset": args.store, "start": args.start, "end": args.end})
    v = data.variables
    runner = load_member_generator(args.checkpoint)
    regression = get_emulator(f"local-regression:{args.regression}")
    rows: dict[str, list[dict[str, float]]] = {"trained": [], "untrained": [], "regression": []}
    hybrid: dict[str, list[dict[str, float]]] = {"full": [], "trained": [], "untrained": [], "regression": []}
    n_s, r = args.n_real, args.replicas
    seconds = 0.0
    for t in range(len(data.dates)):
        fields = np.asarray(data[t], dtype=np.float64)  # [var, N, n]
        order = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(t,))).permutation(fields.shape[1])
        bg, an = fields[v.index("x_bg")][order], fields[v.index("x_an")][order]  # [N, n]
        truth, obs = fields[v.index("truth"), 0], fields[v.index("obs"), 0]
        gb, ga, tb, ta = bg[:n_s], an[:n_s], bg[n_s:], an[n_s:]
        k = tb.shape[0]
        start = time.perf_counter()
        generated = runner.generate(
            tb[..., None],
            ga[..., None],
            r * k,
            torch.Generator().manual_seed(t),
            guide_backgrounds=gb[..., None],
            observations=obs[:, None],
        )[..., 0]
        seconds += time.perf_counter() - start
        trained = generated.reshape(r, k, -1).transpose(1, 0, 2)  # [k, R, n]
        tensors = [torch.as_tensor(a[..., None]) for a in (tb, ga, gb)]
        base = base_flow_solution(*tensors).numpy()[..., 0]  # the untrained core's end point (zero last layer)
        untrained = np.repeat(base[:, None], r, axis=1)
        rng = np.random.default_rng(np.random.SeedSequence(args.seed + 1, spawn_key=(t,)))
        regressed = np.stack([regression.generate(tb, ga, k, rng, guide_backgrounds=gb) for _ in range(r)], axis=1)
        for name, members in (("trained", trained), ("untrained", untrained), ("regression", regressed)):
            rows[name].append(scores(members, ta))
            hybrid[name].append(hybrid_scores(np.concatenate([ga, members[:, 0]]), truth))
        hybrid["full"].append(hybrid_scores(an, truth))

    def medians(table):
        return {name: {key: float(np.median([row[key] for row in rs])) for key in rs[0]} for name, rs in table.items()}

    out = {
        "dates": len(data.dates),
        "n_real": n_s,
        "replicas": r,
        "against_target_analyses": medians(rows),
        "hybrid_against_truth": medians(hybrid),
        "generation_seconds_per_date": seconds / len(data.dates),
        "regression": args.regression,
        "checkpoint": args.checkpoint,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
