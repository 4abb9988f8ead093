"""Relaxation to prior spread (RTPS; Whitaker and Hamill 2012, Mon. Wea. Rev. 140, 3078-3089) of an analysis ensemble.

Per experiment and variable, the analysis anomalies about their mean are rescaled so that their spread moves a
fraction ``alpha`` of the way back to the background's::

    sigma_a' = sigma_a + alpha (sigma_b - sigma_a),    x_i <- xbar_a + (sigma_a' / sigma_a) (x_i - xbar_a)

with ``sigma`` the sample standard deviation over the members (``ddof=1``) and ``sigma_b`` that of the background
as forecast (before any multiplicative inflation). The mean is unchanged; ``alpha = 0`` leaves the members alone and
``alpha = 1`` restores the background spread at every variable. Where the analysis has no spread the members are
left as they are.

In the Lorenz-96 cycle (``--rtps``) it acts on the whole analysis ensemble after the analysis, in a hybrid cycle on
the real and the emulated members together (:class:`~hybrid_eda.l96.cycle._AnalysisStep`): it restores spread
where the update removed it, which is where a perturbed-observation EDA's observation perturbations put it and
where emulated members that carry only the deterministic part of the update lack it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_rtps", "relax_to_prior_spread"]


def check_rtps(alpha: float) -> float:
    """``alpha`` as a float in ``[0, 1]`` (``ValueError`` naming the fix otherwise)."""
    value = float(alpha)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(
            f"rtps (relaxation to prior spread) must be between 0 (off) and 1 (the background spread), got {alpha}; "
            "use e.g. --rtps 0.2."
        )
    return value


def relax_to_prior_spread(background: np.ndarray, analysis: np.ndarray, alpha: float) -> np.ndarray:
    """The analysis members with their spread relaxed towards the background's (module docstring).

    Parameters
    ----------
    background : np.ndarray
        ``[..., N, n]`` background members (not inflated).
    analysis : np.ndarray
        ``[..., N, n]`` analysis members of the same experiments.
    alpha : float
        Relaxation weight in ``[0, 1]``.

    Returns
    -------
    np.ndarray
        ``[..., N, n]``: the relaxed members (a copy; the analysis itself for ``alpha = 0``).

    Raises
    ------
    ValueError
        ``alpha`` outside ``[0, 1]``; background and analysis of different shapes.
    """
    alpha = check_rtps(alpha)
    if np.shape(background) != np.shape(analysis):
        raise ValueError(
            f"background and analysis must have the same [..., N, n] shape, got {np.shape(background)} and "
            f"{np.shape(analysis)}."
        )
    if alpha == 0.0 or analysis.shape[-2] < 2:
        return analysis
    mean = analysis.mean(axis=-2, keepdims=True)  # [..., 1, n]
    anomalies = analysis - mean
    sigma_a = anomalies.std(axis=-2, ddof=1, keepdims=True)
    sigma_b = background.std(axis=-2, ddof=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(sigma_a > 0, 1.0 + alpha * (sigma_b - sigma_a) / sigma_a, 1.0)
    return mean + factor * anomalies
