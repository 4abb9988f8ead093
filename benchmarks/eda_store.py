"""Build time, peak memory and sample read time of the variance emulator's stores, from the synthetic EDA.

    python benchmarks/eda_store.py --grid N80 --levels 137 --members 5 10 --dates 4 --sample-members 5

1. writes one synthetic EDA with max(--members) members (``hybrid-eda synthetic``) in ``--workdir``;
2. for each N in ``--members`` builds the member store (``recipes/eda-n80-ml-local.yaml`` with members 1..N) step
   by step (``anemoi-datasets init``, ``load``, ``finalise``) and the std store
   (``recipes/eda-n80-ml-std-local.yaml``, ``create``), each step in its own process, recording wall time and peak
   resident memory (largest process);
3. reads training samples as anemoi-training does (its data reader, one time step per sample) from the largest
   stores: M random members (``number: {random: M}``, :mod:`hybrid_eda.data.members`) plus the target std, every
   date, ``--repeats`` times; and, for comparison, all N members of a date (what anemoi's own ``number:`` reads
   before masking);
4. fits ``a + b N`` to every build time and memory and extrapolates to ``--extrapolate-to`` (default 50).

A sample's read cost does not depend on N (only the M chosen members are read); the member store's build memory
does (anemoi-datasets holds one date row, variables x N x grid x 4 bytes, and its statistics take ~5 rows).
Disk: the GRIB (backgrounds and analyses) plus the stores, ~4 GB at N80 x 137 levels x 10 members x 4 dates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

# pyproj must load its PROJ library before eccodes does (findlibs loads eckitlib's libproj globally).
import pyproj  # noqa: F401  isort: skip
import numpy as np
import yaml

from hybrid_eda.resources import recipes_dir

_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
    "print(r.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.stderr.write(r.stderr[-4000:] if r.returncode else '')\n"
)


def measured(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd`` in a fresh process tree; return (wall seconds, peak RSS in MB of its largest process)."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, capture_output=True, text=True)
    code, seconds, max_kb = result.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return float(seconds), float(max_kb) / 1024.0


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def recipe_for(name: str, start: datetime, end: datetime, members: int, out: Path) -> Path:
    """The shipped twin recipe with the benchmark's dates and members 1..N (composition, not a copy)."""
    recipe = yaml.safe_load((recipes_dir() / name).read_text())
    recipe["dates"] = {"start": start.isoformat(), "end": end.isoformat(), "frequency": "6h"}

    def walk(node):
        if isinstance(node, dict):
            if "grib" in node:
                node["grib"]["number"] = list(range(1, members + 1))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(recipe["input"])
    path = out / f"{name.removesuffix('.yaml')}-{members}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def read_samples(members: str, target: str, m: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per sample through anemoi-training's reader: M random members, the target, all N members."""
    from anemoi.training.data.data_reader import create_dataset

    from hybrid_eda.data.members import member_selection_installed

    times: dict[str, list[float]] = {"subset": [], "target": [], "all": []}
    with member_selection_installed():
        inputs = create_dataset({"dataset_config": {"dataset": members, "number": {"random": m, "seed": 0}}})
        truth = create_dataset({"dataset_config": {"dataset": target}})
        full = create_dataset({"dataset_config": {"dataset": members}})
        for _ in range(repeats):
            for t in range(inputs.data.shape[0]):
                for key, reader in (("subset", inputs), ("target", truth), ("all", full)):
                    start = time.perf_counter()
                    sample = reader.get_sample(0, slice(t, t + 1), slice(None))  # [1, ens, grid, variables]
                    times[key].append(time.perf_counter() - start)
                    del sample
    return times


def linear_fit(ns: list[int], values: list[float], at: int) -> float:
    """``a + b N`` through the measurements (least squares), evaluated at ``N = at``."""
    if len(set(ns)) < 2:
        return float("nan")
    slope, intercept = np.polyfit(np.asarray(ns, float), np.asarray(values, float), 1)
    return float(intercept + slope * at)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="N80")
    parser.add_argument("--levels", type=int, default=137)
    parser.add_argument("--members", type=int, nargs="+", default=[5, 10], help="EDA sizes N to build")
    parser.add_argument("--dates", type=int, default=4)
    parser.add_argument("--sample-members", type=int, default=5, help="M read per sample")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--extrapolate-to", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the GRIB and zarr files")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="eda-store-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    start = datetime(2023, 1, 1, 0)
    end = start + timedelta(hours=6 * (args.dates - 1))
    bins = Path(sys.executable).parent
    ns = sorted(set(args.members))
    rows: list[tuple[str, str, str, str, str]] = []
    results: dict = {"settings": {k: str(v) for k, v in vars(args).items()}, "builds": {}}
    try:
        seconds, rss = measured(
            [str(bins / "hybrid-eda"), "synthetic", "--grid", args.grid, "--levels", str(args.levels),
             "--members", str(max(ns)), "--start", start.isoformat(), "--end", end.isoformat(),
             "--out", "synthetic-eda", "--overwrite"],
            work,
        )  # fmt: skip
        size = du_mb(work / "synthetic-eda")
        label = "synthetic EDA (bg + an GRIB, truth)"
        rows.append((str(max(ns)), label, f"{seconds:.1f}", f"{rss:.0f}", f"{size:.0f}"))
        results["synthetic"] = {"seconds": seconds, "rss_mb": rss, "mb": size}
        for n in ns:
            members = recipe_for("eda-n80-ml-local.yaml", start, end, n, work)
            target = recipe_for("eda-n80-ml-std-local.yaml", start, end, n, work)
            store, std = f"members-{n}.zarr", f"std-{n}.zarr"
            steps = {
                "members init": ["init", members.name, store, "--overwrite"],
                "members load": ["load", store],
                "members finalise": ["finalise", store],
                "std create": ["create", target.name, std, "--overwrite"],
            }
            for step, cmd in steps.items():
                seconds, rss = measured([str(bins / "anemoi-datasets"), *cmd], work)
                size = du_mb(work / cmd[2 if step.endswith(("init", "create")) else 1])
                rows.append((str(n), step, f"{seconds:.1f}", f"{rss:.0f}", f"{size:.0f}"))
                results["builds"].setdefault(step, []).append({"n": n, "seconds": seconds, "rss_mb": rss, "mb": size})
        target_n = args.extrapolate_to
        if len(ns) > 1 and target_n not in ns:
            for step, runs in results["builds"].items():
                x = [r["n"] for r in runs]
                seconds = linear_fit(x, [r["seconds"] for r in runs], target_n)
                rss = linear_fit(x, [r["rss_mb"] for r in runs], target_n)
                size = linear_fit(x, [r["mb"] for r in runs], target_n)
                rows.append((f"{target_n} (fit)", step, f"{seconds:.0f}", f"{rss:.0f}", f"{size:.0f}"))
                results["builds"][step].append({"n": target_n, "fit": True, "seconds": seconds, "rss_mb": rss})

        n = max(ns)
        times = read_samples(str(work / f"members-{n}.zarr"), str(work / f"std-{n}.zarr"), args.sample_members,
                             args.repeats)  # fmt: skip
        first = args.dates
        sample = [a + b for a, b in zip(times["subset"], times["target"], strict=True)]
        for label, values in (
            (f"read sample: {args.sample_members} random members + target, first pass", sample[:first]),
            (f"read sample: {args.sample_members} random members + target, again", sample[first:] or sample),
            (f"read all {n} members of a date (anemoi's number: reads these)", times["all"]),
        ):
            rows.append((str(n), label, f"{statistics.median(values):.3f} (max {max(values):.3f})", "", ""))
            results[label] = values
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    from hybrid_eda.synthetic import make_grid

    grid = make_grid(args.grid)
    fields = 5 * args.levels + 1
    row_mb = fields * grid.npoints * 4 / 2**20
    print(
        f"\nEDA stores: {args.grid} ({grid.npoints} points) x {args.levels} levels x 6 variables = {fields} fields, "
        f"{args.dates} dates, M={args.sample_members}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')},"
        f" {os.cpu_count()} cores"
    )
    print(
        f"one member of one date: {row_mb:.0f} MB; a sample (M members + target): "
        f"{row_mb * (args.sample_members + 1):.0f} MB; a date of the member store: N x {row_mb:.0f} MB\n"
    )
    width = max(len(r[1]) for r in rows)
    print(f"{'N':>9}  {'step':<{width}}  {'seconds':>20}  {'peak RSS MB':>11}  {'size MB':>8}")
    for n_label, label, seconds, rss, size in rows:
        print(f"{n_label:>9}  {label:<{width}}  {seconds:>20}  {rss:>11}  {size:>8}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
