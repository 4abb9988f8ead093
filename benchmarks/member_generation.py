"""Generating the emulated members against the 4D-Var minimisations they replace, per cycle, in the hybrid cycle.

Setting: the perturbed-observation 4D-Var EDA of issue 8 (``pan2026`` twin, N = 20, window 4, hybrid B,
inflation 1.02), hybrid 10 real + 10 emulated. One short hybrid run per batch size B times, like
:class:`~hybrid_eda.l96.cycle.CycleOutput` does for every run, the method's analyses (``analysis_seconds``: the
N_s = 10 real minimisations, each member its own) and the emulator (``emulation_seconds``: one ``generate`` call for
the whole batch, the 10 emulated members of all B experiments). The 10 minimisations the emulator replaces cost what
the 10 real ones cost, so ``generation / minimisations`` is the fraction issue 8 wants below 10%::

    OMP_NUM_THREADS=1 python benchmarks/member_generation.py                                  # untrained core
    OMP_NUM_THREADS=1 python benchmarks/member_generation.py --emulator run/inference-last.ckpt --batches 1,16,64
    OMP_NUM_THREADS=1 python benchmarks/member_generation.py --emulator run/inference-last.ckpt --steps 1,2,4

Rows are per cycle (all B experiments) and per experiment-cycle; the best of ``--repeats`` runs (shared machine).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402

from hybrid_eda.l96.config import ExperimentConfig  # noqa: E402
from hybrid_eda.l96.experiment import run_experiment  # noqa: E402


def time_row(emulator: str, batch: int, cycles: int, n_real: int, repeats: int, seed: int) -> dict:
    """Best-of-``repeats`` per-cycle seconds of the real minimisations and of the generation, batch ``batch``."""
    config = ExperimentConfig.from_preset(
        "pan2026",
        method="4dvar",
        members=20,
        window=4,
        b_mode="hybrid",
        inflation=1.02,
        cycles=cycles,
        spinup=min(cycles - 1, 10),
        batch=batch,
        seed=seed,
        emulator=emulator,
        n_real=n_real,
    )
    best: dict | None = None
    for _ in range(repeats):
        out = run_experiment(config, mask_diverged=True).output
        row = {
            "emulator": emulator,
            "batch": batch,
            "cycles": cycles,
            "real": n_real,
            "emulated": 20 - n_real,
            "minimisations_s_per_cycle": out.analysis_seconds / cycles,
            "generation_s_per_cycle": out.emulation_seconds / cycles,
        }
        row["ratio"] = row["generation_s_per_cycle"] / row["minimisations_s_per_cycle"]
        if best is None or row["generation_s_per_cycle"] < best["generation_s_per_cycle"]:
            best = row
    return best  # type: ignore[return-value]


def with_steps(emulator: str, steps: int | None) -> str:
    """The emulator spec with ``steps`` flow steps (a checkpoint path becomes ``generator:checkpoint=PATH,steps=S``)."""
    if steps is None:
        return emulator
    if emulator.endswith((".ckpt", ".pt", ".pth")):
        return f"generator:checkpoint={emulator},steps={steps}"
    if emulator.startswith("generator:"):
        return f"{emulator},steps={steps}"
    raise SystemExit(f"--steps needs a checkpoint or a generator:... spec, got --emulator {emulator}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--emulator", default="generator:untrained=true", help="checkpoint path or generator:... spec")
    p.add_argument("--batches", default="1,16", help="comma-separated batch sizes B")
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--n-real", type=int, default=10, help="real members N_s; 20 - N_s are emulated")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--steps", help="comma-separated flow steps (default: the checkpoint's own)")
    p.add_argument("--json", help="write the rows as JSON")
    args = p.parse_args()
    steps = [None] if args.steps is None else [int(s) for s in args.steps.split(",")]
    rows = [
        time_row(with_steps(args.emulator, s), int(b), args.cycles, args.n_real, args.repeats, args.seed)
        for b in args.batches.split(",")
        for s in steps
    ]
    print(f"# {platform.processor() or platform.machine()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"# 4D-Var EDA N=20 window 4 hybrid B, {args.n_real} real + {20 - args.n_real} emulated by {args.emulator}")
    head = "| B | emulator | cycles | min. ms/cycle | per exp. | generation ms/cycle | per exp. | gen. / min. |"
    print(head + "\n|" + "---|" * 8)
    for r in rows:
        b, mins, gen = r["batch"], 1e3 * r["minimisations_s_per_cycle"], 1e3 * r["generation_s_per_cycle"]
        print(
            f"| {b} | {r['emulator']} | {r['cycles']} | {mins:.2f} | {mins / b:.2f} | {gen:.2f} | {gen / b:.2f} | "
            f"{r['ratio']:.1%} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
