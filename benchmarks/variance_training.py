"""Training samples per second and peak memory of the variance emulator, synthetic and operational configs.

    python benchmarks/variance_training.py                              # both configs, 1 thread
    python benchmarks/variance_training.py --threads 1 2 --n80-levels 3 9 --json training.json

What is timed: the model's training step itself, not anemoi-training's loop: the shipped config's model built
through its anemoi adapter (as anemoi-training builds it; random init, seeded), ``batch`` samples of M = 5
random positive members in, the log-normal negative log-likelihood of random positive targets
(:class:`hybrid_eda.distributions.LogNormal`, the config's training loss without anemoi's scalers), backward,
one AdamW step at the config's learning rate. Data loading, validation and logging are not in it (anemoi-training
adds them: about 0.1-0.3 s per step of the synthetic config). One warm-up step, then ``--steps`` timed steps
(median reported). Each row runs in a fresh process; peak memory is its peak resident set (``ru_maxrss``).

Rows:

* ``synthetic``: ``variance_emulator_synthetic`` at its data's size (``hybrid-eda variance-data``: O32 x 5 levels
  x 6 variables = 26 channels), its batch size (2);
* ``operational``: ``variance_emulator_n80`` (latent 32, gradient checkpointing, batch 1) on the N80 grid. A full
  sample (686 channels) needs ~40 GB on a CPU even with checkpointing (4 saved token tensors of 3.1 GB plus one
  round's ~12), so it is timed on ``--n80-levels`` levels (``5 L + 1`` channels) and scaled to 686 channels:
  per row proportionally (marked ``x``; every block's time is linear in the channels), and, with two or more
  level counts, by a fitted ``a + b C`` for time and peak memory (the grid-sized part, e.g. edge tensors and
  the grid features, does not grow with the channels).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from variance_setup import channel_names, load_average, run_worker, set_threads_default

set_threads_default()

ROWS = {
    "synthetic": {"config": "variance_emulator_synthetic", "grid": "O32", "batch": 2},
    "operational": {"config": "variance_emulator_n80", "grid": "N80", "batch": 1},
}


def worker(spec: dict) -> dict:
    import torch

    from hybrid_eda.distributions import LogNormal
    from hybrid_eda.training.malloc import keep_freed_memory
    from variance_setup import build_emulator, composed_config, grid_graph, n_parameters, peak_rss_mb, random_members

    keep_freed_memory()  # as the training callback does
    torch.set_num_threads(spec["threads"])
    coordinates, graph_data = grid_graph(spec["grid"])
    model = build_emulator(spec["config"], spec["levels"], coordinates, graph_data)
    model.train()
    lr = float(composed_config(spec["config"]).training.optimization.lr)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    core = model.core
    members = random_members(5, core.n_grid, core.n_channels, seed=1).expand(spec["batch"], -1, -1, -1).contiguous()
    target = random_members(1, core.n_grid, core.n_channels, seed=2).expand(spec["batch"], -1, -1, -1)
    base_rss = peak_rss_mb()
    times, losses = [], []
    for _ in range(spec["steps"] + 1):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss = -LogNormal.from_tensor(core(members)).log_prob(target).mean()
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return {
        **spec,
        "channels": core.n_channels,
        "grid_points": core.n_grid,
        "parameters": n_parameters(model),
        "gradient_checkpointing": bool(core.settings.gradient_checkpointing),
        "latent": core.settings.latent,
        "seconds": times[1:],
        "warm_up_seconds": times[0],
        "losses": losses,
        "peak_rss_mb": peak_rss_mb(),
        "model_rss_mb": base_rss,
    }


def run_row(spec: dict) -> dict:
    return run_worker(__file__, spec)


def fit_channels(rows: list[dict], channels: int) -> dict[int, dict]:
    """Per thread count with two or more channel counts: ``a + b C`` fitted to s/step and peak RSS, at ``channels``."""
    import numpy as np

    fits = {}
    for threads in sorted({row["threads"] for row in rows}):
        same = [row for row in rows if row["threads"] == threads]
        if len({row["channels"] for row in same}) < 2:
            continue
        c = np.array([row["channels"] for row in same], dtype=float)
        seconds = np.polyval(np.polyfit(c, [row["seconds_median"] for row in same], 1), channels)
        peak = np.polyval(np.polyfit(c, [row["peak_rss_mb"] / 1024 for row in same], 1), channels)
        fits[threads] = {"channels": sorted(c.astype(int).tolist()), "seconds": float(seconds), "peak_gb": float(peak)}
    return fits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--synthetic-levels", type=int, default=5, help="levels of the synthetic row (26 channels)")
    parser.add_argument("--n80-levels", type=int, nargs="+", default=[3], help="levels timed for the N80 row")
    parser.add_argument("--full-levels", type=int, default=137, help="levels the N80 row is scaled to")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    full_channels = len(channel_names(args.full_levels))
    print(f"variance emulator training step (model forward + NLL + backward + AdamW), M = 5; load average before: "
          f"{load_average()}")  # fmt: skip
    print("| config | grid x channels | batch | parameters | threads | s/step (median) | samples/s | peak RSS GB |"
          f" at {full_channels} ch: s/step, samples/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.rows:
        for levels in [args.synthetic_levels] if name == "synthetic" else args.n80_levels:
            for threads in args.threads:
                spec = {**ROWS[name], "row": name, "levels": levels, "threads": threads, "steps": args.steps}
                row = run_row(spec)
                median = statistics.median(row["seconds"])
                row["seconds_median"], row["samples_per_second"] = median, row["batch"] / median
                scaled = ""
                if name == "operational":
                    scale = full_channels / row["channels"]
                    row["scaled_seconds"] = median * scale
                    scaled = f"{median * scale:.0f} x, {row['batch'] / (median * scale):.4f} x"
                print(
                    f"| {row['config']} | {row['grid']} x {row['channels']} | {row['batch']} | {row['parameters']:,} | "
                    f"{threads} | {median:.2f} | {row['samples_per_second']:.3f} | {row['peak_rss_mb'] / 1024:.2f} | "
                    f"{scaled} |",
                    flush=True,
                )
                rows.append(row)
    fits = fit_channels([row for row in rows if row["row"] == "operational"], full_channels)
    for threads, fit in fits.items():
        print(
            f"operational, {threads} thread(s), fitted a + b x channels over {fit['channels']} channels: "
            f"{fit['seconds']:.0f} s/step ({1 / fit['seconds']:.4f} samples/s), peak RSS {fit['peak_gb']:.1f} GB "
            f"at {full_channels} channels (batch 1)"
        )
    print(f"load average after: {load_average()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"load_average": load_average(), "rows": rows, "fits": fits}, stream, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
