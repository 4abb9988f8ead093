"""Cycles per second of the Lorenz-96 DA methods in the Sakov & Oke (2008) setting, optionally against DAPPER.

Setting: 40 variables, F = 8, one RK4 step of dt = 0.05 per cycle, every variable observed, R = I.
One timed cycle is everything a twin experiment does in its Python cycle loop: advance the truth, draw the
observations, forecast the ensemble, analyse, and score the background and analysis (RMSE, spread, rank,
fair CRPS). A batch row advances B independent experiments per call and reports experiment-cycles per second.
Each row is the best of ``--repeats`` runs (the machine is shared), after a short warm-up that pays numba's
compile or cache load.

DAPPER (``EnKF('Sqrt', N=20, infl=1.02, rot=True)``, its ETKF) is timed around ``xp.assimilate`` only (the
truth and observations are simulated before the clock starts), in its own interpreter::

    python3 -m venv /work/dapper-venv && /work/dapper-venv/bin/pip install dapper==1.7.1
    OMP_NUM_THREADS=1 python benchmarks/l96_cycles.py --dapper-python /work/dapper-venv/bin/python
"""

from __future__ import annotations

import os

# One thread everywhere: on small shared machines BLAS threads only add contention for 20 x 20 matrices.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

from hybrid_eda.l96.base import Assimilator  # noqa: E402
from hybrid_eda.l96.filters import ETKF, EnKF  # noqa: E402
from hybrid_eda.l96.metrics import ScoreAccumulator  # noqa: E402
from hybrid_eda.l96.model import Lorenz96  # noqa: E402
from hybrid_eda.l96.observations import ObservationOperator  # noqa: E402

MODEL = Lorenz96(n=40, forcing=8.0, dt=0.05)
OBS = ObservationOperator(n=40, every=1, obs_std=1.0)

DAPPER_SCRIPT = """
import json, sys, time
import numpy as np
import dapper.tools.progressbar as pb
pb.disable_progbar = True
import dapper.mods as modelling
import dapper.da_methods as da
from dapper.mods.Lorenz96 import sakov2008
cycles, members, infl, repeats = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
HMM = sakov2008.HMM.copy()
HMM.tseq = modelling.Chronology(0.05, dko=1, Ko=cycles, BurnIn=min(25.0, cycles * 0.05 / 5))
np.random.seed(3000)
xx, yy = HMM.simulate()
rates, rmse = [], float("nan")
for _ in range(repeats):
    xp = da.EnKF("Sqrt", N=members, infl=infl, rot=True)
    t0 = time.perf_counter()
    xp.assimilate(HMM, xx, yy)
    rates.append(cycles / (time.perf_counter() - t0))
    xp.stats.average_in_time()
    rmse = float(xp.avrgs.err.rms.a.val) if hasattr(xp.avrgs, "err") else float(xp.avrgs.rmse.a.val)
import dapper
print(json.dumps({"rates": rates, "rmse": rmse, "version": dapper.__version__}))
"""


@dataclass
class Row:
    name: str
    members: int
    batch: int
    cycles: int
    rates: list[float]  # cycles per second of each repeat
    rmse: float
    note: str = ""

    @property
    def best(self) -> float:
        return max(self.rates)


def twin_loop(method: Assimilator, members: int, batch: int, cycles: int, seed: int) -> tuple[float, float]:
    """Run a twin experiment; return (cycles per second, mean analysis RMSE over the batch)."""
    rng = np.random.default_rng(seed)
    lead = () if batch == 1 else (batch,)
    window, spo = int(method.window), int(method.steps_per_obs)
    truth = MODEL.forecast(MODEL.forcing + rng.standard_normal(lead + (MODEL.n,)), 1000)  # [*B, n]
    ens = truth[..., None, :] + rng.standard_normal(lead + (members, MODEL.n))  # [*B, N, n]
    scores = ScoreAccumulator(spinup=min(500, cycles // 5))
    start = time.perf_counter()
    for _ in range(cycles):
        if window == 1:
            y = OBS.sample(truth, rng)[..., None, :]  # [*B, 1, p]
            truth_next = MODEL.forecast(truth, spo)
        else:
            states = [truth]
            for _lag in range(1, window):
                states.append(MODEL.forecast(states[-1], spo))
            y = np.stack([OBS.sample(x, rng) for x in states], axis=-2)  # [*B, L, p]
            truth_next = MODEL.forecast(states[-1], spo)
        analysis = method.analyse(ens, y, rng)
        scores.update(ens, analysis, truth)
        ens = MODEL.forecast(analysis, window * spo)
        truth = truth_next
    rate = cycles / (time.perf_counter() - start)
    rmse = float(np.mean([s["analysis_rmse"] for s in scores.summaries()]))
    return rate, rmse


def measure(name: str, make: Callable[[], Assimilator], members: int, batch: int, cycles: int, repeats: int) -> Row:
    method = make()
    t0 = time.perf_counter()
    twin_loop(method, members, batch, 3, seed=0)  # warm-up: numba compile or cache load
    warm = time.perf_counter() - t0
    rates, rmses = [], []
    for r in range(repeats):
        rate, rmse = twin_loop(method, members, batch, cycles, seed=1 + r)
        rates.append(rate)
        rmses.append(rmse)
    return Row(name, members, batch, cycles, rates, float(np.mean(rmses)), f"warm-up {warm:.2f} s")


def harness_row(members: int, cycles: int, repeats: int) -> Row:
    """The project's cycling harness (``hybrid_eda.l96.cycle.run_cycles``) running the same ETKF."""
    from hybrid_eda.l96.cycle import CycleSettings, run_cycles

    rates, rmses = [], []
    for r in range(repeats + 1):
        settings = CycleSettings(
            cycles=cycles if r else 10, spinup=min(500, cycles // 5) if r else 1, members=members, seed=r
        )
        out = run_cycles(MODEL, OBS, ETKF(MODEL, OBS, 1.02), settings)
        if r:
            rates.append(cycles / out.wall_seconds)
            rmses.append(out.experiments[0]["analysis_rmse"])
    return Row("ETKF via run_cycles (harness)", members, 1, cycles, rates, float(np.mean(rmses)))


def var4d_row(members: int, cycles: int, repeats: int, window: int) -> Row:
    try:
        from hybrid_eda.l96.filters.var4d import Var4DEDA  # type: ignore[import-not-found]
    except ImportError:
        from hybrid_eda.l96.var4d import Var4DEDA
    row = measure(
        f"4D-Var EDA (window {window})",
        lambda: Var4DEDA(MODEL, OBS, window=window, inflation=1.02),
        members,
        1,
        cycles,
        repeats,
    )
    return row


def dapper_row(python: str, members: int, cycles: int, repeats: int) -> Row:
    proc = subprocess.run(
        [python, "-c", DAPPER_SCRIPT, str(cycles), str(members), "1.02", str(repeats)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "DAPPER run failed")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return Row(f"DAPPER {result['version']} EnKF('Sqrt')", members, 1, cycles, result["rates"], result["rmse"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=5000, help="timed cycles per single-experiment run")
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="experiments in the batched rows")
    parser.add_argument("--batch-cycles", type=int, default=500, help="timed cycles per batched run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the best is reported")
    parser.add_argument("--var4d-cycles", type=int, default=300)
    parser.add_argument("--var4d-window", type=int, default=1, help="observation times per 4D-Var window")
    parser.add_argument("--dapper-python", default=None, help="interpreter with dapper installed")
    parser.add_argument("--dapper-cycles", type=int, default=3000)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    n_mem, reps = args.members, args.repeats

    rows: list[Row] = []
    failures: list[str] = []
    rows.append(measure("ETKF", lambda: ETKF(MODEL, OBS, 1.02), n_mem, 1, args.cycles, reps))
    rows.append(measure("ETKF", lambda: ETKF(MODEL, OBS, 1.02), n_mem, args.batch, args.batch_cycles, reps))
    rows.append(
        measure(
            "ETKF rotate=True (as DAPPER)", lambda: ETKF(MODEL, OBS, 1.02, rotate=True), n_mem, 1, args.cycles, reps
        )
    )
    rows.append(
        measure(
            "ETKF numpy reference",
            lambda: ETKF(MODEL, OBS, 1.02, compiled=False),
            n_mem,
            1,
            max(args.cycles // 5, 200),
            reps,
        )
    )
    rows.append(measure("EnKF (perturbed obs)", lambda: EnKF(MODEL, OBS, 1.06), n_mem, 1, args.cycles, reps))
    rows.append(
        measure("EnKF (perturbed obs)", lambda: EnKF(MODEL, OBS, 1.06), n_mem, args.batch, args.batch_cycles, reps)
    )
    for label, fn in (
        ("harness", lambda: harness_row(n_mem, args.cycles, reps)),
        ("4D-Var EDA", lambda: var4d_row(n_mem, args.var4d_cycles, reps, args.var4d_window)),
    ):
        try:
            rows.append(fn())
        except Exception as err:  # noqa: BLE001 - optional rows: report and go on
            failures.append(f"{label}: not measured ({type(err).__name__}: {err})")
    dapper = None
    if args.dapper_python:
        try:
            dapper = dapper_row(args.dapper_python, n_mem, args.dapper_cycles, max(1, min(reps, 2)))
            rows.append(dapper)
        except Exception as err:  # noqa: BLE001
            failures.append(f"DAPPER: not measured ({type(err).__name__}: {err})")

    print(
        f"Lorenz-96 Sakov & Oke 2008 setting, N={n_mem}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    header = f"{'method':34s} {'N':>3s} {'batch':>5s} {'cycles':>6s} {'cycles/s':>10s} {'exp-cycles/s':>12s} "
    header += f"{'median':>10s} {'rmse_a':>7s} {'x DAPPER':>9s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"{row.best * row.batch / dapper.best:9.1f}" if dapper is not None else f"{'-':>9s}"
        print(
            f"{row.name:34s} {row.members:3d} {row.batch:5d} {row.cycles:6d} {row.best:10.0f} "
            f"{row.best * row.batch:12.0f} {statistics.median(row.rates) * row.batch:10.0f} {row.rmse:7.3f} {ratio}"
        )
    for line in failures:
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([row.__dict__ | {"best": row.best} for row in rows], f, indent=1)


if __name__ == "__main__":
    main()
