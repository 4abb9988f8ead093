"""Score every estimator of ``s_N`` on held-out dates and write one JSON-ready summary.

    evaluation = evaluate_baselines(train, test)        # raw, rescaled, filter, regression(s), floor, ...
    evaluation.add("emulator", Prediction(mean, distribution))   # the model, from the CLI
    summary = evaluation.summary()                      # json.dumps(summary) works

The summary's keys (issue 7): ``nmse`` (one entry per estimator; ``emulator`` and ``emulator_no_mp`` are
``None`` until added), ``gap_closed``, ``improvement_over_filter``, ``coverage_90`` (``overall``/``sharp``),
``crps``, ``nll``, ``pit``; the same by variable (``per_variable``) and by level group (``per_level``); the
filter's tuned lengths; settings and timings. Field averages are plain means over fields.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from hybrid_eda.evaluation.baselines import (
    BoostedRegression,
    Estimator,
    IsotropicFilter,
    Prediction,
    RawStd,
    Rescaled,
    SigmaB,
    SigmaOracle,
    TruthFloor,
)
from hybrid_eda.evaluation.data import EDAStatistics
from hybrid_eda.evaluation.scores import gap_closed, improvement_over_filter, nmse, probabilistic_scores

__all__ = ["MODEL_SLOTS", "VarianceEvaluation", "default_estimators", "evaluate_baselines", "evaluate_baselines_on"]

LOGGER = logging.getLogger(__name__)

#: Estimators the model adds later; their entries are ``None`` until then.
MODEL_SLOTS = ("emulator", "emulator_no_mp")


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


class VarianceEvaluation:
    """Predictions of ``s_N`` on one set of test statistics, and their scores."""

    def __init__(self, test: EDAStatistics) -> None:
        self.test = test
        self.predictions: dict[str, Prediction] = {}
        self.extra: dict[str, object] = {}
        self.timings: dict[str, float] = {}

    def add(self, name: str, prediction: Prediction | np.ndarray, seconds: float | None = None) -> None:
        """Add an estimator's prediction (a :class:`Prediction` or a point array ``[D, G, F]``)."""
        if not isinstance(prediction, Prediction):
            prediction = Prediction(np.asarray(prediction, dtype=np.float64))
        if prediction.point.shape != self.test.s_n.shape:
            raise ValueError(f"{name}: prediction {prediction.point.shape} is not [D, G, F] = {self.test.s_n.shape}.")
        self.predictions[name] = prediction
        if seconds is not None:
            self.timings[name] = round(float(seconds), 2)

    def field_nmse(self) -> dict[str, np.ndarray]:
        """``{name: nmse [F]}``."""
        return {n: nmse(p.point, self.test.s_n, self.test.area_weights) for n, p in self.predictions.items()}

    def _by(self, per_field: np.ndarray, keys: Sequence) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for key, value in zip(keys, per_field, strict=True):
            out.setdefault(str(key), []).append(float(value))
        return {k: float(np.nanmean(v)) for k, v in out.items()}

    def summary(self) -> dict:
        """The JSON-ready summary (module docstring)."""
        test = self.test
        per_field = self.field_nmse()
        mean = {name: float(values.mean()) for name, values in per_field.items()}
        summary: dict = {
            "settings": {
                "n": test.n,
                "m": test.m,
                "grid": test.grid,
                "grid_points": int(test.s_n.shape[1]),
                "fields": list(test.variables),
                "test_dates": len(test.s_n),
                "first_test_date": test.dates[0].isoformat() if test.dates else None,
                "normalisation": "sum w (x - s_N)^2 / sum w s_N^2 per field, mean over fields",
            },
            "nmse": {**{slot: None for slot in MODEL_SLOTS}, **mean},
        }
        summary["gap_closed"] = {n: None for n in mean}  # without a floor (stores: no truth) nothing to close
        if "raw" in mean and "floor" in mean:
            summary["gap_closed"] = {n: gap_closed(mean["raw"], v, mean["floor"]) for n, v in mean.items()}
        summary["improvement_over_filter"] = {}
        if "filter" in mean:
            filtered = mean["filter"]
            summary["improvement_over_filter"] = {n: improvement_over_filter(v, filtered) for n, v in mean.items()}
        for slot in MODEL_SLOTS:
            for key in ("gap_closed", "improvement_over_filter"):
                summary[key].setdefault(slot, None)
        summary["coverage_90"], summary["crps"], summary["nll"], summary["pit"] = {}, {}, {}, {}
        per_variable_prob: dict[str, dict] = {}
        for name, prediction in self.predictions.items():
            if prediction.distribution is None:
                continue
            scores = probabilistic_scores(prediction.distribution, test.s_n, test.area_weights, test.sharp)
            summary["coverage_90"][name] = {
                "overall": float(np.nanmean(scores["coverage"])),
                "sharp": float(np.nanmean(scores["coverage_sharp"])) if "coverage_sharp" in scores else None,
            }
            summary["crps"][name] = float(np.mean(scores["crps"]))
            summary["nll"][name] = float(np.mean(scores["nll"]))
            if "pit" in scores:
                summary["pit"][name] = {k: scores[k].tolist() for k in ("pit", "pit_sharp") if k in scores}
            per_variable_prob[name] = {
                "coverage_90": self._by(scores["coverage"], test.params),
                "coverage_90_sharp": self._by(scores["coverage_sharp"], test.params)
                if "coverage_sharp" in scores
                else None,
                "crps": self._by(scores["crps"], test.params),
            }
        for slot in MODEL_SLOTS:
            for key in ("coverage_90", "crps", "nll"):
                summary[key].setdefault(slot, None)
        summary["per_variable"] = {"nmse": {n: self._by(v, test.params) for n, v in per_field.items()}}
        summary["per_variable"]["probabilistic"] = per_variable_prob
        summary["per_level"] = {"nmse": {n: self._by(v, test.groups) for n, v in per_field.items()}}
        summary["per_field"] = {"nmse": {n: dict(zip(test.variables, map(float, v), strict=True))
                                         for n, v in per_field.items()}}  # fmt: skip
        summary.update(self.extra)
        summary["timings_s"] = dict(self.timings)
        return _nan_to_none(summary)


def default_estimators(with_truth: bool = True, pooled: bool = True, **regression) -> list[Estimator]:
    """Raw, rescaled, filter, regression (and pooled regression), and on synthetic data the bounds."""
    estimators: list[Estimator] = [RawStd(), Rescaled(), IsotropicFilter(), BoostedRegression(**regression)]
    if pooled:
        estimators.append(BoostedRegression(pooled=True, **regression))
    if with_truth:
        estimators += [TruthFloor(), SigmaOracle(), SigmaB()]
    return estimators


def evaluate_baselines(
    train: EDAStatistics, test: EDAStatistics, estimators: Sequence[Estimator] | None = None
) -> VarianceEvaluation:
    """Fit every estimator on ``train`` and add its prediction on ``test``.

    Raises
    ------
    ValueError
        If train and test disagree on the fields, the grid or ``M``.
    """
    return evaluate_baselines_on(train, [test], estimators)[0]


def _check_compatible(train: EDAStatistics, test: EDAStatistics) -> None:
    if train.variables != test.variables or train.s_m.shape[1] != test.s_m.shape[1] or train.m != test.m:
        raise ValueError(
            "training and test statistics must have the same fields, grid and M; "
            f"got {len(train.variables)}/{len(test.variables)} fields, {train.s_m.shape[1]}/{test.s_m.shape[1]} "
            f"points, M = {train.m}/{test.m}."
        )


def evaluate_baselines_on(
    train: EDAStatistics, tests: Sequence[EDAStatistics], estimators: Sequence[Estimator] | None = None
) -> list[VarianceEvaluation]:
    """Fit every estimator once on ``train`` and add its prediction on each of ``tests`` (one evaluation each).

    The truth-aware estimators (floor, oracle, ``sigma_b``) are skipped on test sets without a truth (stores).
    An estimator's timing on a test set is its fit plus its prediction there.

    Raises
    ------
    ValueError
        If train and a test set disagree on the fields, the grid or ``M``, or ``tests`` is empty.
    """
    if not tests:
        raise ValueError("no test statistics given; pass at least one held-out set.")
    for test in tests:
        _check_compatible(train, test)
    if estimators is None:
        estimators = default_estimators(with_truth=any(test.has_truth for test in tests))
    evaluations = [VarianceEvaluation(test) for test in tests]
    smoother = None
    for estimator in estimators:
        if getattr(estimator, "smoother", False) is None and smoother is not None:
            estimator.smoother = smoother  # one smoother (and its cached kernels) for all
        started = time.perf_counter()
        estimator.fit(train)
        fitted = time.perf_counter() - started
        for evaluation in evaluations:
            if estimator.needs_truth and not evaluation.test.has_truth:
                continue
            started = time.perf_counter()
            prediction = estimator.predict(evaluation.test)
            evaluation.add(estimator.name, prediction, fitted + time.perf_counter() - started)
        smoother = getattr(estimator, "smoother", None) or smoother
        LOGGER.info("%s: fitted in %.1f s, predicted %d test set(s)", estimator.name, fitted, len(evaluations))
        for evaluation in evaluations:
            if isinstance(estimator, BoostedRegression):
                evaluation.extra.setdefault("regression_settings", {})[estimator.name] = {
                    "flow_features": bool(estimator.flow_),
                    "lengths_km": list(estimator.lengths_km),
                    "flow_lengths_km": list(estimator.flow_lengths_km),
                    **estimator.hgb,
                    "max_rows": estimator.max_rows,
                }
            if isinstance(estimator, IsotropicFilter):
                lengths = map(float, estimator.length_km_)
                evaluation.extra["filter_length_km"] = dict(zip(train.variables, lengths, strict=True))
    for evaluation in evaluations:
        evaluation.extra["settings_train"] = {"train_dates": len(train.s_n)}
    return evaluations
