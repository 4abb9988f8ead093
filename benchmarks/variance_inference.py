"""Inference time and peak memory of the variance emulator for one date at N80 x 137 levels x 6 variables.

    python benchmarks/variance_inference.py                                  # operational config, 1 and 2 threads
    python benchmarks/variance_inference.py --paths chunked --threads 2 --settings config latent=24 latent=16
    python benchmarks/variance_inference.py --levels 27 --phases --json inference.json

One row per (path, settings, threads), each in a fresh process (its own peak resident memory):

* ``core``: ``VarianceEmulatorCore.forward`` (what ``predict_step`` and the runner call), under
  ``torch.inference_mode``. At N80 x 686 channels it needs about 8 token tensors of 3.1 GB (latent 32), more than
  the development machine has, so it is timed on ``--core-levels`` levels (``5 L + 1`` channels) and scaled to
  the full channel count: every block's cost is linear in the channels (marked ``x`` in the table).
* ``chunked``: :func:`hybrid_eda.models.chunked_inference.chunked_forward`, the same function evaluated in
  channel chunks (message passing) and point chunks (column mixing), in place; timed at the full size.

The model is the shipped config's (``--config``, default ``variance_emulator_n80``), built through its anemoi
adapter as anemoi-training builds it, with random weights (seeded; the timing does not depend on them), on the
package's N80 grid (:func:`hybrid_eda.synthetic.grids.make_grid`) with the graph of ``configs/graph`` (anemoi-graphs
9-NN, edge length and direction). Input: ``--members`` random positive members of one date. ``--settings``
overrides ``model.model`` (``latent=24,rounds=3``) per row. Times exclude building the model and graph (~2 s).
glibc malloc keeps freed memory (:func:`hybrid_eda.training.malloc.keep_freed_memory`), as in training;
``OMP_WAIT_POLICY=PASSIVE`` unless set (spinning OpenMP threads starve numba's: 16 times slower on 2 threads).
``--phases`` adds the chunked path's time per phase (features, embedding, message passing, column mixing,
output). Threads: ``torch.set_num_threads``; the load average of the machine is printed with the table.
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

from hybrid_eda.models.chunked_inference import DEFAULT_CHANNEL_CHUNK, DEFAULT_GRID_CHUNK  # noqa: E402

PATHS = ("core", "chunked")


def worker(spec: dict) -> dict:
    """One row, in this process: build the model, time ``spec['repeats']`` forward passes."""
    import torch

    from hybrid_eda.models._inference_kernels import warm_up
    from hybrid_eda.models.chunked_inference import chunked_forward
    from hybrid_eda.training.malloc import keep_freed_memory
    from variance_setup import build_emulator, grid_graph, n_parameters, peak_rss_mb, random_members, setting_overrides

    keep_freed_memory()
    warm_up()  # compiles the numba kernel once per machine (cached on disk), never inside a timed run
    torch.set_num_threads(spec["threads"])
    levels = spec["levels"] if spec["path"] == "chunked" else min(spec["levels"], spec["core_levels"])
    coordinates, graph_data = grid_graph(spec["grid"])
    model = build_emulator(spec["config"], levels, coordinates, graph_data, setting_overrides(spec["settings"]))
    core = model.core
    members = random_members(spec["members"], core.n_grid, core.n_channels, seed=spec["seed"])
    base_rss = peak_rss_mb()
    times, phases = [], {}
    with torch.inference_mode():
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            if spec["path"] == "core":
                out = core(members)
            else:
                out = chunked_forward(
                    core,
                    members,
                    channel_chunk=spec["channel_chunk"],
                    grid_chunk=spec["grid_chunk"],
                    timings=phases if spec["phases"] else None,
                )
            times.append(time.perf_counter() - start)
            del out
    settings = core.settings
    return {
        **spec,
        "timed_channels": core.n_channels,
        "parameters": n_parameters(model),
        "latent": settings.latent,
        "rounds": settings.rounds,
        "heads": settings.heads,
        "hidden_ratio": settings.hidden_ratio,
        "seconds": times,
        "phases": {name: value / spec["repeats"] for name, value in phases.items()},
        "peak_rss_mb": peak_rss_mb(),
        "model_rss_mb": base_rss,
    }


def run_row(spec: dict) -> dict:
    # NUMBA_NUM_THREADS: the chunked path's numba kernels. OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads sleep
    # between operations instead of spinning, which otherwise steal the cores from numba's threads (and from
    # other processes): 2 threads were 16 times slower than 1 without it on the shared 2-core machine.
    env = {**os.environ, "NUMBA_NUM_THREADS": str(spec["threads"])}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run_worker(__file__, spec, env)


def full_channels(levels: int) -> int:
    return len(channel_names(levels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="variance_emulator_n80", help="shipped training config of the model")
    parser.add_argument("--grid", default="N80")
    parser.add_argument("--levels", type=int, default=137, help="model levels (5 L + 1 channels; 137: 686)")
    parser.add_argument("--core-levels", type=int, default=3, help="levels at which the plain core is timed")
    parser.add_argument("--members", type=int, default=5, help="M members of the date")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--settings", nargs="+", default=["config"], help="model.model overrides per row")
    parser.add_argument("--repeats", type=int, default=2, help="timed forward passes per row (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", action="store_true", help="time per phase of the chunked path")
    parser.add_argument("--channel-chunk", type=int, default=DEFAULT_CHANNEL_CHUNK, help="chunked path's channels")
    parser.add_argument("--grid-chunk", type=int, default=DEFAULT_GRID_CHUNK, help="chunked path's points per tile")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    rows = []
    header = (
        f"| path | settings | parameters | threads | timed ch | s (median of {args.repeats}) | "
        f"s at {full_channels(args.levels)} ch | peak RSS GB |"
    )
    print(f"variance emulator inference, one date: {args.grid} x {args.levels} levels ({full_channels(args.levels)} "
          f"channels), M = {args.members}, config {args.config}; load average before: {load_average()}")  # fmt: skip
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    for path in args.paths:
        for settings in args.settings:
            for threads in args.threads:
                spec = {
                    "path": path,
                    "settings": settings,
                    "threads": threads,
                    "config": args.config,
                    "grid": args.grid,
                    "levels": args.levels,
                    "core_levels": args.core_levels,
                    "members": args.members,
                    "repeats": args.repeats,
                    "seed": args.seed,
                    "phases": args.phases,
                    "channel_chunk": args.channel_chunk,
                    "grid_chunk": args.grid_chunk,
                }
                row = run_row(spec)
                median = statistics.median(row["seconds"])
                scale = full_channels(args.levels) / row["timed_channels"]
                row["seconds_median"] = median
                row["seconds_full"] = median * scale
                row["extrapolated"] = scale != 1
                mark = " x" if row["extrapolated"] else ""
                label = f"latent={row['latent']},rounds={row['rounds']},heads={row['heads']},hr={row['hidden_ratio']}"
                print(
                    f"| {path} | {label} | {row['parameters']:,} | {threads} | {row['timed_channels']} | "
                    f"{median:.2f} | {row['seconds_full']:.1f}{mark} | {row['peak_rss_mb'] / 1024:.2f} |",
                    flush=True,
                )
                if row["phases"]:
                    phases = ", ".join(f"{name} {value:.2f}" for name, value in row["phases"].items())
                    print(f"|  | phases (s): {phases} | | | | | | |", flush=True)
                rows.append(row)
    print(
        f"load average after: {load_average()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')} (rows)"
    )
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"load_average": load_average(), "rows": rows}, stream, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
