"""Estimators of the N-member std ``s_N`` from the M-member std ``s_M``, fitted on training dates.

Each is an :class:`Estimator`: ``fit(train)`` on :class:`~hybrid_eda.evaluation.data.EDAStatistics` of training
dates, ``predict(test) -> Prediction`` (a point ``[D, G, F]`` and, for the regression, a log-normal
distribution). Fitting never looks at the test dates.

* :class:`RawStd`: ``s_M``.
* :class:`Rescaled`: ``c_f s_M``, ``c_f`` the least-squares constant per field.
* :class:`IsotropicFilter`: ``c_f sqrt(K_L s_M^2)``, ``K_L`` the Gaussian kernel of
  :mod:`~hybrid_eda.evaluation.smoothing`, ``L`` and ``c_f`` chosen per field for the least training MSE.
* :class:`BoostedRegression`: gradient-boosted trees per variable on multi-scale features (``log`` of
  ``sqrt(K_L s_M^2)`` at several ``L``, latitude, level), optionally with the same features of the other
  variables of the level (``pooled``): the fronts that raise ``sigma_b`` are shared by every variable of a level.
* :class:`TruthFloor`, :class:`SigmaOracle`, :class:`SigmaB`: the bounds of :mod:`~hybrid_eda.evaluation.floor`
  (synthetic data only; nothing to fit).
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from hybrid_eda.evaluation.data import EDAStatistics
from hybrid_eda.evaluation.features import GradientOperator, make_gradient, normalised_gradient
from hybrid_eda.evaluation.floor import conditional_std_mean, oracle_std_mean
from hybrid_eda.evaluation.probabilistic import ParametricPrediction
from hybrid_eda.evaluation.smoothing import Smoother, make_smoother

__all__ = [
    "DEFAULT_FILTER_LENGTHS_KM",
    "BoostedRegression",
    "Estimator",
    "IsotropicFilter",
    "Prediction",
    "RawStd",
    "Rescaled",
    "SigmaB",
    "SigmaOracle",
    "TruthFloor",
]

LOGGER = logging.getLogger(__name__)

#: Candidate lengths of the tuned isotropic filter (0 = no smoothing).
DEFAULT_FILTER_LENGTHS_KM = (0.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 600.0, 700.0, 850.0, 1000.0)
#: Smoothing lengths of the regression's multi-scale features.
DEFAULT_FEATURE_LENGTHS_KM = (0.0, 250.0, 500.0, 1000.0, 2000.0)
#: Smoothing lengths of the regression's flow features (gradient magnitude of the seen members' mean).
DEFAULT_FLOW_LENGTHS_KM = (0.0, 150.0, 300.0)
#: Degree of the Legendre fit in ``sin(latitude)`` of the training climatology removed before the gradient.
CLIMATOLOGY_DEGREE = 8


@dataclass(frozen=True, eq=False)
class Prediction:
    """An estimator's output: ``point [D, G, F]`` and optionally a predictive distribution of ``s_N``."""

    point: np.ndarray
    distribution: ParametricPrediction | None = None


def _weighted_ls_scale(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per field ``argmin_c sum w (c x - y)^2``: ``x, y [D, G, F]``, ``w [G]`` -> ``[F]``."""
    return np.einsum("dgf,dgf,g->f", x, y, w) / np.einsum("dgf,dgf,g->f", x, x, w)


def _weighted_mse(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``[D, G, F]`` -> ``[F]`` area-weighted mean squared difference."""
    return np.einsum("dgf,g->f", (x - y) ** 2, w) / (x.shape[0] * w.sum())


class Estimator(abc.ABC):
    """Fit on training statistics, predict ``s_N`` on others."""

    name: str = "estimator"
    #: Whether it needs the truth and ``sigma_b`` (synthetic data only; skipped on stores).
    needs_truth: bool = False

    def fit(self, train: EDAStatistics) -> Estimator:
        """Fit on the training dates (default: nothing to fit)."""
        return self

    @abc.abstractmethod
    def predict(self, stats: EDAStatistics) -> Prediction:
        """Predict ``s_N`` on ``stats``' dates."""


class RawStd(Estimator):
    """``s_M`` itself."""

    name = "raw"

    def predict(self, stats: EDAStatistics) -> Prediction:
        return Prediction(np.asarray(stats.s_m, dtype=np.float64))


class Rescaled(Estimator):
    """``c_f s_M`` with the least-squares ``c_f`` per field (~0.945 at M=5, N=50 for Gaussian members)."""

    name = "rescaled"

    def fit(self, train: EDAStatistics) -> Rescaled:
        self.scale_ = _weighted_ls_scale(train.s_m.astype(float), train.s_n.astype(float), train.area_weights)
        return self

    def predict(self, stats: EDAStatistics) -> Prediction:
        return Prediction(stats.s_m * self.scale_)


class _Smoothed(Estimator):
    """Shared smoother set-up (one per grid)."""

    def __init__(self, smoother: Smoother | None = None) -> None:
        self.smoother = smoother

    def _smoother(self, stats: EDAStatistics, max_length_km: float) -> Smoother:
        if self.smoother is None:
            self.smoother = make_smoother(
                stats.latitudes, stats.longitudes, stats.area_weights, stats.grid, max_length_km=max_length_km
            )
        return self.smoother


class IsotropicFilter(_Smoothed):
    """``c_f sqrt(K_L s_M^2)`` with ``L`` and ``c_f`` tuned per field on the training dates.

    Parameters
    ----------
    lengths_km : tuple of float
        Candidate lengths (default :data:`DEFAULT_FILTER_LENGTHS_KM`).
    smoother : Smoother, optional
        Default :func:`~hybrid_eda.evaluation.smoothing.make_smoother` for the data's grid.
    """

    name = "filter"

    def __init__(self, lengths_km: tuple[float, ...] = DEFAULT_FILTER_LENGTHS_KM, smoother: Smoother | None = None):
        super().__init__(smoother)
        self.lengths_km = tuple(float(length) for length in lengths_km)

    def fit(self, train: EDAStatistics) -> IsotropicFilter:
        smoother = self._smoother(train, max(self.lengths_km))
        variance, target, w = train.s_m.astype(float) ** 2, train.s_n.astype(float), train.area_weights
        errors, scales = [], []
        for length in self.lengths_km:
            smoothed = np.sqrt(smoother.smooth(variance, length))  # [D, G, F]
            scale = _weighted_ls_scale(smoothed, target, w)
            scales.append(scale)
            errors.append(_weighted_mse(smoothed * scale, target, w))
        errors_ = np.stack(errors)  # [nL, F]
        best = errors_.argmin(axis=0)  # [F]
        self.training_mse_ = errors_  # [nL, F]
        self.length_km_ = np.array(self.lengths_km)[best]  # [F]
        self.scale_ = np.stack(scales)[best, np.arange(best.size)]  # [F]
        return self

    def predict(self, stats: EDAStatistics) -> Prediction:
        smoother = self._smoother(stats, max(self.lengths_km))
        variance = stats.s_m.astype(float) ** 2
        out = np.empty(variance.shape)
        for length in np.unique(self.length_km_):
            fields = np.flatnonzero(self.length_km_ == length)
            out[..., fields] = np.sqrt(smoother.smooth(variance[..., fields], float(length)))
        return Prediction(out * self.scale_)


def _area_rows(rng: np.random.Generator, weight: np.ndarray, max_rows: int) -> np.ndarray:
    """``min(max_rows, n)`` rows drawn with replacement with probability ``weight / sum(weight)``.

    The area weighting by resampling instead of ``sample_weight``: scikit-learn bins weighted samples with one
    weighted percentile per bin edge, which took 70% of the fitting time (O32, 3 levels, 20 dates).
    """
    return rng.choice(weight.size, size=min(int(max_rows), weight.size), replace=True, p=weight / weight.sum())


@dataclass
class _VariableModel:
    fields: np.ndarray  # [F_p] field indices of this variable
    mean: object = None  # HistGradientBoostingRegressor of log s_N
    variance: object = None  # ... of the squared log residual
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))  # [F_p] point rescaling
    columns: np.ndarray | None = None  # [n_features] bool: the design columns used (not all NaN in training)


class BoostedRegression(_Smoothed):
    """Gradient boosting (scikit-learn ``HistGradientBoostingRegressor``) of ``log s_N`` per variable.

    Features at a point of field ``f`` (variable ``p``, level ``k``): ``log sqrt(K_L s_M^2) - o_f`` for each
    feature length ``L`` (``o_f`` the training mean of ``log s_M`` of the field, so levels share one model),
    ``sin(latitude)``, the level (normalised); with ``pooled``, also the first three length features of every
    variable at the same level (missing ones are NaN, which the trees handle). With ``flow`` (and the seen
    members' mean ``stats.mean_m`` known), the flow features of :mod:`~hybrid_eda.evaluation.features`: the
    normalised gradient magnitude ``|grad m| / rms`` of the M-member mean, after removing a zonal training
    climatology (a Legendre fit in ``sin(latitude)``), of the field itself and of the temperature at the same level
    (the synthetic fronts follow it; NaN without a ``t`` field), each as ``sqrt(K_L F^2)`` at ``flow_lengths_km``,
    and, for fields positive on every training point (q, o3: their spread scales with the value), ``log m - o``.

    The training dates are split in time: the first ``1 - holdout`` fit the mean ``mu`` of ``log s_N``, the
    rest fit a second model of the squared residual (the log-normal ``sigma^2``, out of sample) and a per-field
    constant ``c_f`` for the point ``c_f exp(mu + sigma^2 / 2)``. Prediction: that point and
    ``LogNormal(mu, sigma)``.

    Parameters
    ----------
    pooled : bool
    lengths_km : tuple of float
    flow : bool
        Use the flow features (default True; ignored, with a log line, when the statistics carry no mean).
    flow_lengths_km : tuple of float
    max_rows : int
        Training rows per variable, drawn with replacement with probability proportional to the area weights.
    holdout : float
        Fraction of the training dates (the last ones) for the residual model.
    max_iter, learning_rate, max_leaf_nodes : HistGradientBoostingRegressor settings.
    seed : int
    smoother : Smoother, optional
    """

    def __init__(
        self,
        pooled: bool = False,
        lengths_km: tuple[float, ...] = DEFAULT_FEATURE_LENGTHS_KM,
        flow: bool = True,
        flow_lengths_km: tuple[float, ...] = DEFAULT_FLOW_LENGTHS_KM,
        max_rows: int = 200_000,
        holdout: float = 0.25,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        seed: int = 0,
        smoother: Smoother | None = None,
    ) -> None:
        super().__init__(smoother)
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}; use e.g. 0.25.")
        self.pooled = pooled
        self.name = "regression_pooled" if pooled else "regression"
        self.lengths_km = tuple(float(length) for length in lengths_km)
        self.flow = bool(flow)
        self.flow_lengths_km = tuple(float(length) for length in flow_lengths_km)
        self.gradient: GradientOperator | None = None
        self.max_rows, self.holdout, self.seed = int(max_rows), float(holdout), int(seed)
        self.hgb = {"max_iter": max_iter, "learning_rate": learning_rate, "max_leaf_nodes": max_leaf_nodes}

    # ------------------------------------------------------------------------------------------- features
    def _log_features(self, stats: EDAStatistics) -> np.ndarray:
        """``[nL, D, G, F]`` float32 ``log sqrt(K_L s_M^2)``."""
        smoother = self._smoother(stats, max(self.lengths_km))
        variance = np.maximum(stats.s_m.astype(float) ** 2, 1e-300)
        return np.stack(
            [0.5 * np.log(np.maximum(smoother.smooth(variance, length), 1e-300)) for length in self.lengths_km]
        ).astype(np.float32)

    def _climatology_basis(self, stats: EDAStatistics) -> np.ndarray:
        return np.polynomial.legendre.legvander(np.sin(np.radians(stats.latitudes)), CLIMATOLOGY_DEGREE)  # [G, P]

    def _fit_flow(self, train: EDAStatistics) -> None:
        """Training climatology of the mean (``[P, F]`` Legendre coefficients) and which fields are positive."""
        self.flow_ = self.flow and train.mean_m is not None
        if self.flow and not self.flow_:
            LOGGER.info("%s: no members' mean in the statistics; fitting without flow features", self.name)
        if not self.flow_:
            return
        basis = self._climatology_basis(train)
        root = np.sqrt(train.area_weights)[:, None]
        mean = train.mean_m.astype(float).mean(axis=0)  # [G, F]
        self.climatology_ = np.linalg.lstsq(basis * root, mean * root, rcond=None)[0]  # [P, F]
        self.positive_ = (train.mean_m > 0).all(axis=(0, 1))  # [F]
        positive_log = np.log(np.where(self.positive_, np.maximum(train.mean_m, 1e-300), 1.0))
        self.log_mean_offset_ = np.einsum("dgf,g->f", positive_log, train.area_weights) / (
            train.mean_m.shape[0] * train.area_weights.sum()
        )
        self.temperature_ = {
            group: f for f, (p, group) in enumerate(zip(train.params, train.groups, strict=True)) if p == "t"
        }

    def _flow_features(self, stats: EDAStatistics) -> np.ndarray | None:
        """``[n_flow, D, G, F]`` float32 flow features (class docstring), or ``None`` without ``flow``."""
        if not self.flow_:
            return None
        if stats.mean_m is None:
            raise ValueError(
                f"{self.name} was fitted with flow features but these statistics carry no members' mean; "
                "build them with from_members/from_synthetic (or fit with flow=False)."
            )
        if self.gradient is None:
            self.gradient = make_gradient(stats.latitudes, stats.longitudes, stats.grid)
        smoother = self._smoother(stats, max(self.lengths_km))
        anomaly = stats.mean_m.astype(float) - self._climatology_basis(stats) @ self.climatology_  # [D, G, F]
        front = normalised_gradient(anomaly, self.gradient, stats.area_weights)  # [D, G, F]
        squared = front**2
        scales = [np.sqrt(np.maximum(smoother.smooth(squared, length), 0.0)) for length in self.flow_lengths_km]
        temperature = np.array([self.temperature_.get(group, -1) for group in stats.groups])  # [F]
        present = temperature >= 0
        columns = []
        for scaled in scales:
            columns.append(scaled)
            of_t = np.full(scaled.shape, np.nan)
            of_t[..., present] = scaled[..., temperature[present]]
            columns.append(of_t)
        log_mean = np.full(stats.mean_m.shape, np.nan)
        positive = self.positive_ & (stats.mean_m > 0).all(axis=(0, 1))
        log_mean[..., positive] = np.log(stats.mean_m[..., positive]) - self.log_mean_offset_[positive]
        columns.append(log_mean)
        return np.stack(columns).astype(np.float32)

    def _design(
        self, stats: EDAStatistics, logs: np.ndarray, fields: np.ndarray, flow: np.ndarray | None = None
    ) -> np.ndarray:
        """Feature matrix ``[D * G * F_p, n_features]`` (rows date-major, then grid, then field)."""
        d, g, _ = stats.s_m.shape
        own = logs[..., fields] - self.offset_[fields]  # [nL, D, G, F_p]
        columns = [own]
        if flow is not None:
            columns.append(flow[..., fields])
        lat = np.sin(np.radians(stats.latitudes)).astype(np.float32)
        columns.append(np.broadcast_to(lat[None, None, :, None], (1, d, g, fields.size)))
        level = np.array([stats.levels[f] for f in fields], dtype=np.float32) / max(max(stats.levels), 1)
        columns.append(np.broadcast_to(level[None, None, None, :], (1, d, g, fields.size)))
        if self.pooled:
            n_pool = min(3, len(self.lengths_km))
            for param in self.params_:
                partner = np.full(fields.size, -1)
                for j, f in enumerate(fields):
                    for other in range(len(stats.variables)):
                        if stats.params[other] == param and stats.groups[other] == stats.groups[f]:
                            partner[j] = other
                block = np.full((n_pool, d, g, fields.size), np.nan, dtype=np.float32)
                present = partner >= 0
                block[..., present] = logs[:n_pool][..., partner[present]] - self.offset_[partner[present]]
                columns.append(block)
        stacked = np.concatenate(columns, axis=0)  # [n_features, D, G, F_p]
        return np.moveaxis(stacked, 0, -1).reshape(-1, stacked.shape[0])

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, train: EDAStatistics) -> BoostedRegression:
        from sklearn.ensemble import HistGradientBoostingRegressor

        started = time.perf_counter()
        n_dates = train.s_m.shape[0]
        n_fit = min(n_dates - 1, max(1, int(round(n_dates * (1.0 - self.holdout)))))  # 2 dates: 1 + 1
        if n_fit < 1:
            raise ValueError(
                f"{n_dates} training dates cannot be split {1 - self.holdout:.0%}/{self.holdout:.0%}; "
                "use at least 2 dates (better 15 or more)."
            )
        logs = self._log_features(train)
        self._fit_flow(train)
        flow = self._flow_features(train)
        w = train.area_weights
        self.offset_ = np.einsum("dgf,g->f", logs[0], w) / (n_dates * w.sum())  # [F] mean log s_M
        self.params_ = tuple(dict.fromkeys(train.params))
        rng = np.random.default_rng(self.seed)
        log_target = np.log(np.maximum(train.s_n.astype(float), 1e-300))  # [D, G, F]
        self.models_: dict[str, _VariableModel] = {}
        fit_part, hold_part = train.take_dates(slice(0, n_fit)), train.take_dates(slice(n_fit, None))
        logs_fit, logs_hold = logs[:, :n_fit], logs[:, n_fit:]
        flow_fit, flow_hold = (None, None) if flow is None else (flow[:, :n_fit], flow[:, n_fit:])
        for param in self.params_:
            fields = np.array([f for f, p in enumerate(train.params) if p == param])
            model = _VariableModel(fields=fields)
            x = self._design(fit_part, logs_fit, fields, flow_fit)
            model.columns = ~np.all(np.isnan(x), axis=0)  # e.g. log-mean features of a signed variable
            x = x[:, model.columns]
            y = (log_target[:n_fit][..., fields] - self.offset_[fields]).reshape(-1)
            weight = np.broadcast_to(w[None, :, None], log_target[:n_fit][..., fields].shape).reshape(-1)
            rows = _area_rows(rng, weight, self.max_rows)
            model.mean = HistGradientBoostingRegressor(random_state=self.seed, **self.hgb)
            model.mean.fit(x[rows], y[rows])
            # out-of-sample residuals on the held-out training dates -> log-normal variance and point scale
            x_hold = self._design(hold_part, logs_hold, fields, flow_hold)[:, model.columns]
            mu = model.mean.predict(x_hold)
            y_hold = (log_target[n_fit:][..., fields] - self.offset_[fields]).reshape(-1)
            weight_hold = np.broadcast_to(w[None, :, None], log_target[n_fit:][..., fields].shape).reshape(-1)
            rows = _area_rows(rng, weight_hold, self.max_rows)
            model.variance = HistGradientBoostingRegressor(random_state=self.seed, **self.hgb)
            model.variance.fit(x_hold[rows], (y_hold - mu)[rows] ** 2)
            var = np.maximum(model.variance.predict(x_hold), 1e-6)
            shape = log_target[n_fit:][..., fields].shape
            point = np.exp((mu + 0.5 * var).reshape(shape) + self.offset_[fields])  # [D_hold, G, F_p]
            model.scale = _weighted_ls_scale(point, hold_part.s_n[..., fields].astype(float), w)
            self.models_[param] = model
        LOGGER.info("%s fitted in %.1f s", self.name, time.perf_counter() - started)
        return self

    def predict(self, stats: EDAStatistics) -> Prediction:
        logs = self._log_features(stats)
        flow = self._flow_features(stats)
        shape = stats.s_m.shape
        loc, scale, point = np.empty(shape), np.empty(shape), np.empty(shape)
        for param, model in self.models_.items():
            if param not in stats.params:
                continue
            fields = np.array([f for f, p in enumerate(stats.params) if p == param])
            x = self._design(stats, logs, fields, flow)[:, model.columns]
            sub = (*shape[:2], fields.size)
            mu = model.mean.predict(x).reshape(sub) + self.offset_[fields]
            var = np.maximum(model.variance.predict(x).reshape(sub), 1e-6)
            loc[..., fields], scale[..., fields] = mu, np.sqrt(var)
            point[..., fields] = model.scale * np.exp(mu + 0.5 * var)
        return Prediction(point, ParametricPrediction("lognormal", loc, scale))


class _NeedsTruth(Estimator):
    needs_truth = True

    def _check(self, stats: EDAStatistics) -> None:
        if not stats.has_truth:
            raise ValueError(
                f"the {self.name} estimator needs sigma_b and the truth (a synthetic EDA); this data has neither."
            )


class TruthFloor(_NeedsTruth):
    """``E[s_N | M members, truth, sigma_b]``: the sampling floor (closed form, :mod:`floor`)."""

    name = "floor"

    def predict(self, stats: EDAStatistics) -> Prediction:
        self._check(stats)
        return Prediction(conditional_std_mean(stats.s_m, stats.error_of_mean, stats.sigma_b, stats.n, stats.m))


class SigmaOracle(_NeedsTruth):
    """``E[s_N | M members, sigma_b]``: an oracle that knows ``sigma_b`` but not the truth."""

    name = "oracle_sigma"

    def predict(self, stats: EDAStatistics) -> Prediction:
        self._check(stats)
        return Prediction(oracle_std_mean(stats.s_m, stats.sigma_b, stats.n, stats.m))


class SigmaB(_NeedsTruth):
    """``sigma_b`` itself (what ``s_N`` estimates)."""

    name = "sigma_b"

    def predict(self, stats: EDAStatistics) -> Prediction:
        self._check(stats)
        return Prediction(np.asarray(stats.sigma_b, dtype=np.float64))
