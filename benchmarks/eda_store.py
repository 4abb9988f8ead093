"""Build time, peak memory and sample read time of the variance emulator's stores, from the synthetic EDA.

    python benchmarks/eda_store.py --grid N80 --levels 137 --members 50 --dates 4 --sample-members 5
    python benchmarks/eda_store.py --members 5 10 --builders hybrid-eda anemoi        # both builders, fit a + b N
    python benchmarks/eda_store.py --stores members.zarr std.zarr --repeats 5         # sample reads only

1. writes one synthetic EDA with max(--members) members (``hybrid-eda synthetic``) in ``--workdir``, or reuses
   ``--synthetic DIR``;
2. for each N in ``--members`` and each builder builds the member store (``recipes/eda-n80-ml-local.yaml`` with
   members 1..N) step by step (``init``, ``load``, ``finalise``) with ``hybrid-eda store`` (member-streaming, see
   :mod:`hybrid_eda.data.store_build`) or ``anemoi-datasets``, and the std store
   (``recipes/eda-n80-ml-std-local.yaml``, ``anemoi-datasets create``), each step in its own process, recording
   wall time and peak resident memory (largest process);
3. reads training samples as anemoi-training does (its data reader, one time step per sample) from the largest
   stores: M random members (``number: {random: M}``, :mod:`hybrid_eda.data.members`) plus the target std, every
   date, ``--repeats`` times, once per ``--read-threads`` setting (1: members read in turn; 0: the default pool);
   with ``--read-all``, also all N members of each date once (what anemoi's own ``number:`` reads before masking);
4. with several N, fits ``a + b N`` to every build time and memory and extrapolates to ``--extrapolate-to``.

A sample's read cost does not depend on N (only the M chosen members are read). With ``anemoi-datasets`` the member
store's build memory does (it holds ~2 date rows while loading and ~5 for its statistics; a row is variables x N x
grid x 4 bytes); with ``hybrid-eda store`` it does not. Disk: the GRIB (backgrounds and analyses, ~4.9 GB per date
at N80 x 137 levels x 50 members) plus the stores (the member store compresses to ~2/3 of 4.9 GB per date).
Run with ``OMP_NUM_THREADS=1``; the load average (other processes on the machine) is printed with the table.
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
BUILDERS = ("hybrid-eda", "anemoi")


def measured(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd`` in a fresh process tree; return (wall seconds, peak RSS in MB of its largest process)."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, capture_output=True, text=True)
    code, seconds, max_kb = result.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return float(seconds), float(max_kb) / 1024.0


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def recipe_for(name: str, start: datetime, end: datetime, members: int, synthetic: Path, out: Path) -> Path:
    """The shipped twin recipe with the benchmark's dates, members 1..N and absolute GRIB paths (not a copy)."""
    recipe = yaml.safe_load((recipes_dir() / name).read_text())
    recipe["dates"] = {"start": start.isoformat(), "end": end.isoformat(), "frequency": "6h"}

    def walk(node):
        if isinstance(node, dict):
            if "grib" in node:
                node["grib"]["number"] = list(range(1, members + 1))
                relative = Path(node["grib"]["path"]).relative_to("synthetic-eda")  # grib/bg_<date>.grib
                node["grib"]["path"] = str(synthetic.resolve() / relative)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(recipe["input"])
    path = out / f"{name.removesuffix('.yaml')}-{members}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _member_subsets(dataset) -> list:
    """The MemberSubset views in a dataset tree (anemoi-training wraps them in date subsets)."""
    from hybrid_eda.data.members import MemberSubset

    found, node = [], dataset
    while node is not None:
        if isinstance(node, MemberSubset):
            found.append(node)
        node = getattr(node, "forward", None)
    return found


def read_samples(members: str, target: str, m: int, repeats: int, threads: list[int], read_all: bool) -> dict:
    """Seconds per sample through anemoi-training's reader: M random members (per thread setting), the target."""
    from anemoi.training.data.data_reader import create_dataset

    from hybrid_eda.data.members import member_selection_installed

    times: dict[str, list[float]] = {"target": [], "all": []}
    with member_selection_installed():
        inputs = create_dataset({"dataset_config": {"dataset": members, "number": {"random": m, "seed": 0}}})
        truth = create_dataset({"dataset_config": {"dataset": target}})
        subsets = _member_subsets(inputs.data)
        if len(subsets) != 1:
            raise RuntimeError(f"expected one MemberSubset in the reader's dataset, found {len(subsets)}")
        n_dates = inputs.data.shape[0]

        def timed(reader, t) -> float:
            start = time.perf_counter()
            sample = reader.get_sample(0, slice(t, t + 1), slice(None))  # [1, ens, grid, variables]
            seconds = time.perf_counter() - start
            del sample
            return seconds

        for k in threads:
            subsets[0].read_threads = k or None
            times[f"subset/{k}"] = [timed(inputs, t) for _ in range(repeats) for t in range(n_dates)]
        times["target"] = [timed(truth, t) for _ in range(repeats) for t in range(n_dates)]
        if read_all:
            full = create_dataset({"dataset_config": {"dataset": members}})
            times["all"] = [timed(full, t) for t in range(n_dates)]
    return times


def linear_fit(ns: list[int], values: list[float], at: int) -> float:
    """``a + b N`` through the measurements (least squares), evaluated at ``N = at``."""
    if len(set(ns)) < 2:
        return float("nan")
    slope, intercept = np.polyfit(np.asarray(ns, float), np.asarray(values, float), 1)
    return float(intercept + slope * at)


def build(args, work: Path, synthetic: Path, start: datetime, end: datetime, rows: list, results: dict) -> None:
    """Step 2: build the member stores (per builder) and the std store for each N; rows of the table."""
    bins = Path(sys.executable).parent
    for n in sorted(set(args.members)):
        members = recipe_for("eda-n80-ml-local.yaml", start, end, n, synthetic, work)
        target = recipe_for("eda-n80-ml-std-local.yaml", start, end, n, synthetic, work)
        for builder in args.builders:
            tool = [str(bins / "anemoi-datasets")] if builder == "anemoi" else [
                sys.executable, "-m", "hybrid_eda.data.store_cli"]  # fmt: skip
            store = f"members-{n}-{builder}.zarr"
            for step, cmd in (
                ("init", ["init", members.name, store, "--overwrite"]),
                ("load", ["load", store]),
                ("finalise", ["finalise", store]),
            ):
                seconds, rss = measured([*tool, *cmd], work)
                label = f"members {step} ({builder})"
                rows.append((str(n), label, f"{seconds:.1f}", f"{rss:.0f}", f"{du_mb(work / store):.0f}"))
                results["builds"].setdefault(label, []).append({"n": n, "seconds": seconds, "rss_mb": rss})
        std = f"std-{n}.zarr"
        seconds, rss = measured([str(bins / "anemoi-datasets"), "create", target.name, std, "--overwrite"], work)
        rows.append((str(n), "std create (anemoi)", f"{seconds:.1f}", f"{rss:.0f}", f"{du_mb(work / std):.0f}"))
        results["builds"].setdefault("std create (anemoi)", []).append({"n": n, "seconds": seconds, "rss_mb": rss})
    target_n = args.extrapolate_to
    if len(set(args.members)) > 1 and target_n not in args.members:
        for step, runs in results["builds"].items():
            x = [r["n"] for r in runs]
            seconds = linear_fit(x, [r["seconds"] for r in runs], target_n)
            rss = linear_fit(x, [r["rss_mb"] for r in runs], target_n)
            rows.append((f"{target_n} (fit)", step, f"{seconds:.0f}", f"{rss:.0f}", ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="N80")
    parser.add_argument("--levels", type=int, default=137)
    parser.add_argument("--members", type=int, nargs="+", default=[50], help="EDA sizes N to build")
    parser.add_argument("--builders", nargs="+", choices=BUILDERS, default=["hybrid-eda"])
    parser.add_argument("--dates", type=int, default=4)
    parser.add_argument("--sample-members", type=int, default=5, help="M read per sample")
    parser.add_argument("--repeats", type=int, default=5, help="reads of every date per setting")
    parser.add_argument("--read-threads", type=int, nargs="+", default=[1, 0], help="1: in turn, 0: default pool")
    parser.add_argument("--read-all", action="store_true", help="also read all N members of each date once")
    parser.add_argument("--extrapolate-to", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--synthetic", type=Path, default=None, help="reuse this synthetic EDA (its folder)")
    parser.add_argument("--stores", type=Path, nargs=2, default=None, metavar=("MEMBERS", "STD"),
                        help="only read samples from these stores")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the GRIB and zarr files")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="eda-store-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    start = datetime(2023, 1, 1, 0)
    end = start + timedelta(hours=6 * (args.dates - 1))
    n = max(args.members)
    rows: list[tuple[str, str, str, str, str]] = []
    results: dict = {"settings": {k: str(v) for k, v in vars(args).items()}, "builds": {}}
    try:
        if args.stores is None:
            synthetic = args.synthetic
            if synthetic is None:
                synthetic = work / "synthetic-eda"
                seconds, rss = measured(
                    [str(Path(sys.executable).parent / "hybrid-eda"), "synthetic", "--grid", args.grid, "--levels",
                     str(args.levels), "--members", str(n), "--start", start.isoformat(), "--end", end.isoformat(),
                     "--out", str(synthetic), "--overwrite"],
                    work,
                )  # fmt: skip
                size = du_mb(synthetic)
                label = "synthetic EDA (bg + an GRIB, truth)"
                rows.append((str(n), label, f"{seconds:.1f}", f"{rss:.0f}", f"{size:.0f}"))
                results["synthetic"] = {"seconds": seconds, "rss_mb": rss, "mb": size}
            build(args, work, synthetic, start, end, rows, results)
            members, target = work / f"members-{n}-{args.builders[0]}.zarr", work / f"std-{n}.zarr"
        else:
            members, target = args.stores
        times = read_samples(str(members), str(target), args.sample_members, args.repeats, args.read_threads,
                             args.read_all)  # fmt: skip
        results["reads"] = times
        m = args.sample_members
        for k in args.read_threads:
            sample = [a + b for a, b in zip(times[f"subset/{k}"], times["target"], strict=True)]
            how = "in turn" if k == 1 else f"{k} threads" if k else "default thread pool"
            label = f"read sample: {m} random members ({how}) + target"
            rows.append((str(n), label, f"{statistics.median(sample):.3f} (max {max(sample):.3f})", "", ""))
        label = "  of which target alone"
        rows.append((str(n), label, f"{statistics.median(times['target']):.3f}", "", ""))
        if times["all"]:
            label = f"read all {n} members of a date (anemoi's number: reads these)"
            rows.append((str(n), label, f"{statistics.median(times['all']):.3f}", "", ""))
    finally:
        if not args.keep and args.stores is None:
            shutil.rmtree(work, ignore_errors=True)

    from hybrid_eda.synthetic import make_grid

    grid = make_grid(args.grid)
    fields = 5 * args.levels + 1
    row_mb = fields * grid.npoints * 4 / 2**20
    print(
        f"\nEDA stores: {args.grid} ({grid.npoints} points) x {args.levels} levels x 6 variables = {fields} fields, "
        f"{args.dates} dates, M={args.sample_members}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')},"
        f" {os.cpu_count()} cores; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(
        f"one member of one date: {row_mb:.0f} MB; a sample (M members + target): "
        f"{row_mb * (args.sample_members + 1):.0f} MB; a date of the member store: N x {row_mb:.0f} MB; "
        f"{len(times['target'])} reads per setting\n"
    )
    width = max(len(r[1]) for r in rows)
    print(f"{'N':>9}  {'step':<{width}}  {'seconds':>20}  {'peak RSS MB':>11}  {'size MB':>8}")
    for n_label, label, seconds, rss, size in rows:
        print(f"{n_label:>9}  {label:<{width}}  {seconds:>20}  {rss:>11}  {size:>8}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
