"""Scores of ``s_N`` estimates: normalised MSE, the share of the raw-to-floor gap closed, calibration.

Normalised MSE of an estimate ``x`` of field ``f`` (area weights ``w``, over held-out dates and points)::

    nmse_f = sum_dg w_g (x - s_N)^2 / sum_dg w_g s_N^2

and the headline number is its mean over fields. ``E[s_N^2] = sigma^2``, so this is the "per ``sigma^2``"
normalisation of the reference numbers (for iid Gaussian members, M=5 of N=50: raw ``s_5`` 0.110, best constant
0.107, the oracle knowing ``sigma`` 0.0093, analytically and by Monte Carlo) and it needs no ``sigma_b``,
so it is the same on stores built from MARS.

* ``gap_closed = (nmse_raw - nmse_x) / (nmse_raw - nmse_floor)``;
* ``improvement_over_filter = 1 - nmse_x / nmse_filter`` (0.5 = half the filter's MSE);
* coverage of the central 90% interval (5% and 95% quantiles), overall and on the sharp features;
* PIT histogram (``cdf(s_N)`` in 10 bins; flat when calibrated);
* CRPS and NLL of ``s_N / r_f`` with ``r_f = sqrt(mean s_N^2)`` of the field, so fields of different units
  average (the NLL drops by ``log r_f``, the CRPS divides by ``r_f``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "coverage",
    "field_rms",
    "gap_closed",
    "improvement_over_filter",
    "nmse",
    "pit_histogram",
    "probabilistic_scores",
]


def _weights(w: np.ndarray | None, g: int) -> np.ndarray:
    return np.ones(g) if w is None else np.asarray(w, dtype=np.float64)


def nmse(estimate: np.ndarray, s_n: np.ndarray, area_weights: np.ndarray | None = None) -> np.ndarray:
    """Normalised MSE per field: ``estimate, s_n [D, G, F]`` -> ``[F]`` (module docstring)."""
    estimate, s_n = np.asarray(estimate, dtype=np.float64), np.asarray(s_n, dtype=np.float64)
    if estimate.shape != s_n.shape or estimate.ndim != 3:
        raise ValueError(f"estimate {estimate.shape} and s_N {s_n.shape} must both be [date, grid, field].")
    w = _weights(area_weights, s_n.shape[1])
    return np.einsum("dgf,g->f", (estimate - s_n) ** 2, w) / np.einsum("dgf,g->f", s_n**2, w)


def field_rms(s_n: np.ndarray, area_weights: np.ndarray | None = None) -> np.ndarray:
    """``r_f = sqrt(area-mean s_N^2)`` per field: ``[D, G, F]`` -> ``[F]``."""
    s_n = np.asarray(s_n, dtype=np.float64)
    w = _weights(area_weights, s_n.shape[1])
    return np.sqrt(np.einsum("dgf,g->f", s_n**2, w) / (s_n.shape[0] * w.sum()))


def gap_closed(raw: float | np.ndarray, estimate: float | np.ndarray, floor: float | np.ndarray):
    """Share of the raw-to-floor gap closed, ``(raw - estimate) / (raw - floor)`` (1 = at the floor)."""
    raw, estimate, floor = (np.asarray(v, dtype=np.float64) for v in (raw, estimate, floor))
    if np.any(raw <= floor):
        raise ValueError("the raw MSE must exceed the floor's for a gap to close; check the inputs' order.")
    out = (raw - estimate) / (raw - floor)
    return float(out) if out.ndim == 0 else out


def improvement_over_filter(estimate: float | np.ndarray, filtered: float | np.ndarray):
    """``1 - estimate / filtered``: the relative MSE reduction against the tuned filter."""
    out = 1.0 - np.asarray(estimate, dtype=np.float64) / np.asarray(filtered, dtype=np.float64)
    return float(out) if out.ndim == 0 else out


def _mean(values: np.ndarray, w: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Area-weighted mean over dates and points per field: ``[D, G, F]`` -> ``[F]`` (NaN where nothing)."""
    weight = np.broadcast_to(w[None, :, None], values.shape)
    if mask is not None:
        weight = weight * mask
    total = weight.sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (values * weight).sum(axis=(0, 1)) / np.where(total > 0, total, 1.0), np.nan)


def coverage(
    lower: np.ndarray,
    upper: np.ndarray,
    s_n: np.ndarray,
    area_weights: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Share of ``s_N`` inside ``[lower, upper]`` per field (``mask``: only those points): ``[F]``."""
    s_n = np.asarray(s_n, dtype=np.float64)
    inside = ((s_n >= lower) & (s_n <= upper)).astype(np.float64)
    return _mean(inside, _weights(area_weights, s_n.shape[1]), mask)


def pit_histogram(pit: np.ndarray, bins: int = 10, mask: np.ndarray | None = None) -> np.ndarray:
    """Density of the PIT values (``cdf(s_N)``) in ``bins`` equal bins of [0, 1]; 1 everywhere when calibrated."""
    values = np.asarray(pit, dtype=np.float64)
    values = values[mask] if mask is not None else values.ravel()
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return counts * bins / max(counts.sum(), 1)


def probabilistic_scores(
    distribution,
    s_n: np.ndarray,
    area_weights: np.ndarray | None = None,
    sharp: np.ndarray | None = None,
    interval: float = 0.9,
    bins: int = 10,
) -> dict[str, np.ndarray]:
    """Coverage, PIT, CRPS and NLL of a predictive distribution of ``s_N [D, G, F]``.

    ``distribution`` is a :class:`~hybrid_eda.evaluation.probabilistic.ParametricPrediction` or any object with
    ``quantile(q)``, ``crps(y)``, ``log_prob(y)`` and (for the PIT) ``cdf(y)`` returning ``[D, G, F]`` arrays.

    Returns
    -------
    dict
        ``coverage`` / ``coverage_sharp`` ``[F]``, ``crps`` ``[F]`` and ``nll`` ``[F]`` of ``s_N / r_f``,
        ``pit`` / ``pit_sharp`` ``[bins]`` (pooled over fields); ``*_sharp`` only when ``sharp`` is given.
    """
    s_n = np.asarray(s_n, dtype=np.float64)
    w = _weights(area_weights, s_n.shape[1])
    tail = 0.5 * (1.0 - interval)
    lower = np.asarray(distribution.quantile(tail))
    upper = np.asarray(distribution.quantile(1.0 - tail))
    rms = field_rms(s_n, w)  # [F]
    out = {
        "coverage": coverage(lower, upper, s_n, w),
        "crps": _mean(np.asarray(distribution.crps(s_n)), w, None) / rms,
        "nll": _mean(-np.asarray(distribution.log_prob(s_n)), w, None) - np.log(rms),
    }
    pit = np.asarray(distribution.cdf(s_n)) if hasattr(distribution, "cdf") else None
    if pit is not None:
        out["pit"] = pit_histogram(pit, bins)
    if sharp is not None:
        out["coverage_sharp"] = coverage(lower, upper, s_n, w, mask=sharp)
        if pit is not None:
            out["pit_sharp"] = pit_histogram(pit, bins, mask=np.asarray(sharp, dtype=bool))
    return out
