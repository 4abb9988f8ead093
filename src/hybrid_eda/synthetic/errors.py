"""The known, flow-dependent background-error standard deviation ``sigma_b(x, level, t)``.

    log sigma_b = log S_v(p_k) + large_scale(lat) + log(front_factor) * front(F_k(x, t)) + a * Lambda_k(x, t)

* ``S_v(p_k)``: the variable's error profile (absolute for vo, d, t, lnsp; relative to the truth for q, o3);
* ``large_scale``: more error in the southern extratropics and towards the poles (smooth, climatological);
* ``front``: a sharp logistic mask of ``F_k = |grad t'_k| / rms(|grad t'_k|)``, the normalised horizontal
  temperature-gradient magnitude of the truth at level ``k`` (fronts and jets): narrow, flow-linked bands where
  the error is up to ``front_factor`` times larger. The mask is much sharper than the flow, so smoothing an
  ensemble variance cannot recover it, while a model that sees the flow (the ensemble mean) can;
* ``Lambda_k``: a unit-variance, slowly evolving large-scale latent field, independent of the flow (changes in
  the observing system, model error), so ``sigma_b`` cannot be read off the ensemble mean alone.

For the positive variables (q, o3) ``sigma_b = cap * truth * tanh(S_v * m / cap)`` with ``m`` the modulation
above: close to ``S_v * m * truth`` and never above ``cap * truth``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid_eda.synthetic.config import ErrorConfig
from hybrid_eda.synthetic.variables import VariableSpec

__all__ = ["ErrorModel", "front_indicator"]


def front_indicator(gradient: np.ndarray, area_weights: np.ndarray) -> np.ndarray:
    """``F = |grad f| / sqrt(area-mean |grad f|^2)``: ``gradient [2, G]`` (unit-sphere components) -> ``[G]``."""
    magnitude2 = np.sum(gradient**2, axis=0)  # [G]
    rms2 = np.dot(magnitude2, area_weights) / area_weights.sum()
    return np.sqrt(magnitude2 / rms2)


@dataclass(frozen=True, eq=False)
class ErrorModel:
    """Evaluate ``sigma_b`` from its ingredients (all exact, nothing estimated).

    Parameters
    ----------
    config : ErrorConfig
    latitudes : np.ndarray
        ``[G]`` degrees.
    """

    config: ErrorConfig
    latitudes: np.ndarray

    def __post_init__(self) -> None:
        lat = np.asarray(self.latitudes, dtype=float)
        southern = 0.5 * (1.0 - np.tanh((lat + 30.0) / 10.0))
        large = self.config.hemispheric_contrast * southern + self.config.polar_boost * np.sin(np.radians(lat)) ** 4
        large.setflags(write=False)
        object.__setattr__(self, "_large_scale", large)

    def large_scale(self) -> np.ndarray:
        """Climatological log-modulation ``[G]``: southern extratropics and poles have larger errors."""
        return self._large_scale

    def front_mask(self, indicator: np.ndarray) -> np.ndarray:
        """Sharp logistic mask in [0, 1] of the front indicator ``[G]``."""
        z = (indicator - self.config.front_threshold) / self.config.front_width
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow

    def log_modulation(self, indicator: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """``log(sigma_b / S_v)`` before the positivity cap: ``[G]``."""
        return (
            self.large_scale()
            + np.log(self.config.front_factor) * self.front_mask(indicator)
            + self.config.latent_amplitude * latent
        )

    @staticmethod
    def reference_sigma(spec: VariableSpec, pressure_pa: float, reference: np.ndarray) -> np.ndarray:
        """Unmodulated error scale ``[G]``: ``S_v(p)`` (additive) or ``S_v(p) * reference`` (q, o3).

        Used for the observation errors, which do not know about fronts or the latent field.
        """
        scale = float(spec.error_scale(np.asarray(pressure_pa)))
        if spec.multiplicative:
            return scale * np.asarray(reference)
        return np.full(np.shape(reference), scale)

    def sigma_b(
        self,
        spec: VariableSpec,
        pressure_pa: float,
        truth: np.ndarray,
        indicator: np.ndarray,
        latent: np.ndarray,
    ) -> np.ndarray:
        """Background-error std ``[G]`` of ``spec`` at one level.

        Parameters
        ----------
        spec : VariableSpec
        pressure_pa : float
            Reference pressure of the level.
        truth : np.ndarray
            ``[G]`` true field at the level (scales q and o3).
        indicator : np.ndarray
            ``[G]`` front indicator ``F_k`` of the level.
        latent : np.ndarray
            ``[G]`` latent field ``Lambda_k`` of the level (unit variance).
        """
        scale = float(spec.error_scale(np.asarray(pressure_pa)))
        modulation = np.exp(self.log_modulation(indicator, latent))
        if spec.multiplicative:
            cap = self.config.relative_cap
            return cap * np.asarray(truth) * np.tanh(scale * modulation / cap)
        return scale * modulation
