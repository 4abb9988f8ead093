"""How well the L96 variance emulator predicts the N-member background std, against baselines and the floor.

    python -m hybrid_eda.l96.variance_quality CKPT --train seed1.npz --train-cycles 200:3700 \\
        --test seed90.npz seed91.npz --test-from 200 --json quality.json

For the background members of EDA archives (``hybrid-eda l96 run ... --archive``), with the first ``M`` members
as the seen ones, the normalised MSE (:func:`hybrid_eda.evaluation.scores.nmse`, ``sum (x - s_N)^2 / sum s_N^2``
over the test dates and the ring) of the estimates of the suite (:mod:`hybrid_eda.evaluation.suite`, fitted on
the training cycles): raw ``s_M``, a constant rescaling, the tuned isotropic filter at ring scales (one grid
length is 1,000 km on the ``lorenz96`` source's equator), gradient boosting on multi-scale log-spreads (the
suite's, without its flow features: a 2-D gradient is undefined on a ring) and on the ring stencil of the seen
members' mean and log-spread (:class:`RingStencilRegression`), the emulator (predictive mean; 90% interval
coverage), and the sampling floor of :mod:`hybrid_eda.evaluation.floor`.

The floor needs the centre and std of the distribution the members are drawn from, which an L96 EDA does not
know. Plugging the N-member estimates into the floor's *prediction* ``E[s_N | ...]`` would leak ``s_N`` (nMSE
~0.001), so the summary's ``floor`` is the floor's expected squared error ``Var[s_N | M members, centre, sigma]``
(:func:`~hybrid_eda.evaluation.floor.floor_mse`, Gaussian members) with centre = N-member mean and sigma =
``s_N`` plugged in, summed over the test points and divided by ``sum s_N^2``; for iid Gaussian members, M = 5
of N = 50, the exact value is 0.0092. ``gap_closed`` is measured against it. Members of an EDA are
exchangeable, so the first M are as good a subset as any.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybrid_eda.data.lorenz96_source import ring_coordinates
from hybrid_eda.l96.archive import EDAArchive

LOGGER = logging.getLogger(__name__)

__all__ = ["RING_LENGTHS_KM", "archive_statistics", "main", "variance_quality"]

#: Filter lengths tried on the ring (one grid length = 1,000 km on the equator of 40 points).
RING_LENGTHS_KM = (0.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0)


class RingStencilRegression:
    """Gradient boosting of ``log(s_N / s_M)`` on the ring stencil: the seen members' mean at offsets
    ``-3..3`` and ``log s_M`` at ``-2..2`` (an L96 spread follows the local flow, not its neighbours' spreads:
    the lag-1 correlation of ``log s_N`` along the ring is about -0.2, so smoothing cannot help).
    Prediction ``c s_M exp(f)`` with the least-squares ``c`` of the training dates.
    An :class:`~hybrid_eda.evaluation.baselines.Estimator` (``fit``/``predict`` on ``EDAStatistics``)."""

    name = "regression_stencil"
    needs_truth = False
    MEAN_OFFSETS, SPREAD_OFFSETS = range(-3, 4), range(-2, 3)

    def __init__(self, max_iter: int = 300, max_rows: int = 200_000, seed: int = 0) -> None:
        self.max_iter, self.max_rows, self.seed = int(max_iter), int(max_rows), int(seed)

    def _features(self, stats) -> np.ndarray:
        mean, log_s = stats.mean_m[..., 0], np.log(stats.s_m[..., 0])  # [D, n]
        columns = [np.roll(mean, k, axis=1) for k in self.MEAN_OFFSETS]
        columns += [np.roll(log_s, k, axis=1) for k in self.SPREAD_OFFSETS]
        return np.stack(columns, axis=-1).reshape(-1, len(columns))  # [D n, features]

    def fit(self, train) -> RingStencilRegression:
        from sklearn.ensemble import HistGradientBoostingRegressor

        x, s_m, s_n = self._features(train), train.s_m.ravel(), train.s_n.ravel()
        rows = np.random.default_rng(self.seed).permutation(len(x))[: self.max_rows]
        self.model_ = HistGradientBoostingRegressor(max_iter=self.max_iter, random_state=self.seed)
        self.model_.fit(x[rows], np.log(s_n[rows] / s_m[rows]))
        fitted = s_m * np.exp(self.model_.predict(x))
        self.scale_ = float(np.sum(fitted * s_n) / np.sum(fitted**2))
        return self

    def predict(self, stats):
        from hybrid_eda.evaluation.baselines import Prediction

        ratio = np.exp(self.model_.predict(self._features(stats))).reshape(stats.s_m.shape)
        return Prediction(self.scale_ * stats.s_m * ratio)


def archive_statistics(background: np.ndarray, m: int):
    """:class:`~hybrid_eda.evaluation.data.EDAStatistics` of ``background [D, N, n]`` (first ``m`` seen), with the
    plug-in centre and sigma of the floor (module docstring)."""
    from hybrid_eda.evaluation.data import from_members

    background = np.asarray(background, dtype=np.float64)
    if background.ndim != 3:
        raise ValueError(f"background must be [date, N, n], got shape {background.shape}.")
    members = background[..., None]  # [D, N, n, 1]
    lat, lon = ring_coordinates(background.shape[-1])
    return from_members(
        members, m, lat, lon, variables=["x_bg"], truth=members.mean(axis=1), sigma_b=members.std(axis=1, ddof=1)
    )


def variance_quality(checkpoint: str | Path | None, train: np.ndarray, tests: Sequence[np.ndarray], m: int = 5) -> dict:
    """nMSE of every estimator on the concatenated ``tests`` (each ``[D_k, N, n]`` backgrounds), fitted on
    ``train [D, N, n]``; the emulator of ``checkpoint`` (skipped if None). Returns the suite's summary plus
    ``emulator_coverage90``, ``train_dates``, ``test_dates`` and ``emulator_seconds_per_date``."""
    from hybrid_eda.evaluation.baselines import (
        BoostedRegression,
        IsotropicFilter,
        RawStd,
        Rescaled,
    )
    from hybrid_eda.evaluation.emulator import emulator_prediction
    from hybrid_eda.evaluation.floor import floor_mse
    from hybrid_eda.evaluation.scores import coverage
    from hybrid_eda.evaluation.suite import evaluate_baselines_on

    test_bg = np.concatenate([np.asarray(t) for t in tests])  # [D, N, n]
    train_stats, test_stats = archive_statistics(train, m), archive_statistics(test_bg, m)
    estimators = [
        RawStd(),
        Rescaled(),
        IsotropicFilter(lengths_km=RING_LENGTHS_KM),
        BoostedRegression(lengths_km=(0.0, 1000.0, 2000.0, 4000.0), flow=False),  # no 2-D gradient on a ring
        RingStencilRegression(),
    ]
    (evaluation,) = evaluate_baselines_on(train_stats, [test_stats], estimators)
    extra: dict = {"train_dates": int(len(train)), "test_dates": int(len(test_bg)), "m": m, "n": test_stats.n}
    s_n = test_stats.s_n
    floor = floor_mse(test_stats.s_m, test_stats.error_of_mean, test_stats.sigma_b, test_stats.n, m)
    extra["floor_expected"] = float(floor.sum() / (s_n**2).sum())
    if checkpoint is not None:
        from hybrid_eda.l96.variance_emulation import load_l96_variance_emulator

        emulator = load_l96_variance_emulator(checkpoint, n=test_bg.shape[-1], members=m)
        start = time.perf_counter()
        distribution = emulator.distribution(test_bg[:, :m])
        seconds = time.perf_counter() - start
        prediction = emulator_prediction(distribution, emulator.predictor)
        evaluation.add("emulator", prediction, seconds)
        low, high = prediction.distribution.quantile(0.05), prediction.distribution.quantile(0.95)
        extra["emulator_coverage90"] = float(coverage(low, high, test_stats.s_n)[0])
        extra["emulator_seconds_per_date"] = seconds / len(test_bg)
    summary = evaluation.summary() | extra
    raw = summary["nmse"]["raw"]
    summary["gap_closed"] = {
        name: (raw - value) / (raw - extra["floor_expected"])
        for name, value in summary["nmse"].items()
        if value is not None
    }
    return summary


def _cycles(text: str) -> slice:
    start, _, stop = text.partition(":")
    return slice(int(start) if start else None, int(stop) if stop else None)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybrid_eda.l96.variance_quality``: print the nMSE table, optionally write the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="inference checkpoint of variance_emulator_l96 (optional)")
    parser.add_argument("--train", required=True, help="EDA archive the baselines are fitted on")
    parser.add_argument("--train-cycles", default="200:", help="cycles START:STOP of --train (default 200:)")
    parser.add_argument("--test", nargs="+", required=True, help="held-out EDA archives (other seeds)")
    parser.add_argument("--test-from", type=int, default=200, help="first cycle of each test archive (spin-up)")
    parser.add_argument("--members", "-M", type=int, default=5, help="members seen (M, the emulator's)")
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args(argv)
    train = EDAArchive.load(args.train).background[_cycles(args.train_cycles)]
    tests = [EDAArchive.load(path).background[args.test_from :] for path in args.test]
    summary = variance_quality(args.checkpoint, train, tests, m=args.members)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    print(f"M={args.members}, {summary['train_dates']} training dates, {summary['test_dates']} test dates")
    for name, value in summary["nmse"].items():
        if value is not None:
            print(f"  {name:20s} nMSE {value:.4f}  gap closed {summary['gap_closed'][name]:.1%}")
    print(f"  {'floor (expected)':20s} nMSE {summary['floor_expected']:.4f}")
    if "emulator_coverage90" in summary:
        print(f"  emulator 90% coverage {summary['emulator_coverage90']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
