"""Closed-form scores of Gaussian and log-normal predictions of ``s_N``, in plain numpy.

For ``Y ~ N(mu, sigma^2)``, ``w = (y - mu) / sigma`` (Gneiting et al. 2005):

    CRPS = sigma (w (2 Phi(w) - 1) + 2 phi(w) - 1 / sqrt(pi)),   NLL = log sigma + w^2 / 2 + log(2 pi) / 2.

For ``log Y ~ N(mu, sigma^2)``, ``w = (log y - mu) / sigma`` (Baran & Lerch 2015, eq. 5):

    CRPS = y (2 Phi(w) - 1) - 2 exp(mu + sigma^2 / 2) (Phi(w - sigma) + Phi(sigma / sqrt 2) - 1),
    NLL  = log y + log sigma + w^2 / 2 + log(2 pi) / 2.

:class:`ParametricPrediction` holds ``(family, loc, scale)`` arrays; the scores in
:mod:`~hybrid_eda.evaluation.scores` accept it or any object with the same ``quantile``/``cdf``/``log_prob``/
``crps``/``mean`` methods (the model's predictive distribution, converted with ``np.asarray``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = ["FAMILIES", "ParametricPrediction", "crps_lognormal", "crps_normal", "nll_lognormal", "nll_normal"]

FAMILIES = ("normal", "lognormal")
_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)


def _phi(w: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * w**2) / np.sqrt(2.0 * np.pi)


def _cdf(w: np.ndarray) -> np.ndarray:
    return special.ndtr(w)


def crps_normal(y: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """CRPS of ``N(loc, scale^2)`` at ``y`` (elementwise)."""
    w = (y - loc) / scale
    return scale * (w * (2.0 * _cdf(w) - 1.0) + 2.0 * _phi(w) - 1.0 / np.sqrt(np.pi))


def crps_lognormal(y: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """CRPS of ``LogNormal(loc, scale)`` (``log Y ~ N(loc, scale^2)``) at ``y > 0`` (elementwise)."""
    w = (np.log(y) - loc) / scale
    mean = np.exp(loc + 0.5 * scale**2)
    return y * (2.0 * _cdf(w) - 1.0) - 2.0 * mean * (_cdf(w - scale) + _cdf(scale / np.sqrt(2.0)) - 1.0)


def nll_normal(y: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``-log p(y)`` of ``N(loc, scale^2)``."""
    return np.log(scale) + 0.5 * ((y - loc) / scale) ** 2 + _HALF_LOG_2PI


def nll_lognormal(y: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``-log p(y)`` of ``LogNormal(loc, scale)``."""
    log_y = np.log(y)
    return log_y + np.log(scale) + 0.5 * ((log_y - loc) / scale) ** 2 + _HALF_LOG_2PI


@dataclass(frozen=True, eq=False)
class ParametricPrediction:
    """A Gaussian or log-normal prediction per point: ``family``, ``loc``, ``scale`` (``[D, G, F]`` arrays).

    For ``"lognormal"``, ``loc`` and ``scale`` are the mean and std of ``log s_N``.
    """

    family: str
    loc: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}.")
        if np.shape(self.loc) != np.shape(self.scale):
            raise ValueError(f"loc {np.shape(self.loc)} and scale {np.shape(self.scale)} must have one shape.")
        if not np.all(np.asarray(self.scale) > 0):
            raise ValueError("scale must be positive everywhere; floor it (e.g. at 1e-6) before scoring.")

    @property
    def lognormal(self) -> bool:
        return self.family == "lognormal"

    def mean(self) -> np.ndarray:
        """Predictive mean (the MSE-optimal point)."""
        return np.exp(self.loc + 0.5 * self.scale**2) if self.lognormal else np.asarray(self.loc)

    def quantile(self, q: float) -> np.ndarray:
        """Predictive quantile at probability ``q``."""
        value = self.loc + self.scale * special.ndtri(q)
        return np.exp(value) if self.lognormal else value

    def cdf(self, y: np.ndarray) -> np.ndarray:
        """``P(Y <= y)`` (the PIT of ``y``)."""
        y = np.asarray(y, dtype=np.float64)
        if self.lognormal:
            return _cdf((np.log(np.maximum(y, 1e-300)) - self.loc) / self.scale)
        return _cdf((y - self.loc) / self.scale)

    def log_prob(self, y: np.ndarray) -> np.ndarray:
        """``log p(y)``."""
        y = np.asarray(y, dtype=np.float64)
        return -(nll_lognormal if self.lognormal else nll_normal)(y, self.loc, self.scale)

    def crps(self, y: np.ndarray) -> np.ndarray:
        """CRPS at ``y``."""
        y = np.asarray(y, dtype=np.float64)
        return (crps_lognormal if self.lognormal else crps_normal)(y, self.loc, self.scale)
