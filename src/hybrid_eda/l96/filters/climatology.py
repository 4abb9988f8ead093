"""Static-covariance baselines: the model climatology, optimal interpolation (OI) and cycled 3D-Var.

Both baselines use the Kalman update with a fixed prior covariance ``P`` and a constant gain::

    K   = P H^T (H P H^T + R)^-1                             [n, p]
    OI:     x_a = mu_C + K (y - H mu_C),     P = P_C           (no memory of earlier cycles)
    3D-Var: x_a = x_b  + K (y - H x_b),      P = s P_C         (cycled: x_b is the forecast of the last x_a)

with ``mu_C, P_C`` the climatological mean and covariance of a long free model run (DAPPER's ``OptInterp`` and
``Var3D(xB=s)``; in the Sakov & Oke 2008 setting they score about 0.95 and, for ``s = 0.02``, 0.41). The
methods are deterministic: they compute one analysis (from the background mean) and give it to every member,
so an ensemble collapses to identical members (spread 0) after the first cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from hybrid_eda.l96.base import Assimilator, FilterDivergenceError
from hybrid_eda.l96.filters.etkf import flatten_filter_input
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator

__all__ = ["Climatology", "OptimalInterpolation", "Var3D", "static_gain"]


@dataclass(frozen=True)
class Climatology:
    """Climatological mean and covariance of the model.

    Attributes
    ----------
    mean : np.ndarray
        ``[n]`` time mean.
    cov : np.ndarray
        ``[n, n]`` time covariance (unbiased).
    """

    mean: np.ndarray
    cov: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        cov = np.asarray(self.cov, dtype=np.float64)
        if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
            raise ValueError(f"climatology needs mean [n] and cov [n, n], got {mean.shape} and {cov.shape}.")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)

    @property
    def n(self) -> int:
        return int(self.mean.size)

    @classmethod
    def from_free_run(
        cls, model: Lorenz96, rng: np.random.Generator, n_steps: int = 20_000, spinup_steps: int = 2_000
    ) -> Climatology:
        """Estimate the climatology from one long free run of ``model``.

        Parameters
        ----------
        model : Lorenz96
            The model.
        rng : np.random.Generator
            Draws the start state (the rest state ``F`` plus unit Gaussian noise).
        n_steps : int
            Steps averaged over (20,000 steps = 1,000 time units; the estimate's sampling error is ~1%).
        spinup_steps : int
            Steps discarded first, so the run is on the attractor.
        """
        if n_steps < 2 or spinup_steps < 0:
            raise ValueError(
                f"a climatology needs n_steps >= 2 and spinup_steps >= 0, got {n_steps} and {spinup_steps}."
            )
        x0 = model.forcing + rng.standard_normal(model.n)  # [n]
        if spinup_steps:
            x0 = model.forecast(x0, spinup_steps)
        run = model.trajectory(x0, n_steps)  # [T, n]
        return cls(mean=run.mean(axis=0), cov=np.cov(run, rowvar=False))


def static_gain(cov: np.ndarray, obs: ObservationOperator) -> np.ndarray:
    """Kalman gain ``K = P H^T (H P H^T + R)^-1`` of a fixed covariance ``P [n, n]``: returns ``[n, p]``."""
    idx = obs.index
    hph = cov[np.ix_(idx, idx)] + obs.variance * np.eye(obs.p)  # [p, p]
    # K^T = (H P H^T + R)^-1 H P, both factors symmetric/positive definite.
    return scipy.linalg.solve(hph, cov[idx, :], assume_a="pos").T


class _StaticBaseline(Assimilator):
    """Shared set-up of OI and 3D-Var: a climatology of the model's size and a constant gain."""

    def __init__(self, model: Lorenz96, obs: ObservationOperator, climatology: Climatology, scale: float) -> None:
        super().__init__(model, obs)
        if obs.n != model.n:
            raise ValueError(
                f"the observation operator is built for n={obs.n} variables but the model has n={model.n}; "
                "build both with the same n."
            )
        if climatology.n != model.n:
            raise ValueError(
                f"the climatology has n={climatology.n} variables but the model has n={model.n}; "
                "compute it with Climatology.from_free_run(model, rng)."
            )
        self.climatology = climatology
        self.gain = static_gain(scale * climatology.cov, obs)  # [n, p]
        self._gain_t = np.ascontiguousarray(self.gain.T)  # [p, n]

    def _analysis(self, prior: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``prior + K (y - H prior)`` for ``prior [K, n]``, ``y [K, p]``."""
        return prior + (y - prior[:, self.obs.index]) @ self._gain_t

    def _check_finite(self, ens: np.ndarray) -> None:
        if not np.isfinite(ens).all():
            bad = int(np.flatnonzero(~np.isfinite(ens).all(axis=(-2, -1)))[0])
            raise FilterDivergenceError(
                f"{type(self).__name__}: the background of experiment {bad} is not finite (the model blew up)."
            )

    @staticmethod
    def _to_members(xa: np.ndarray, ens: np.ndarray, background: np.ndarray) -> np.ndarray:
        out = np.empty(ens.shape)  # [K, N, n]
        out[...] = xa[:, None, :]
        return out.reshape(np.shape(background))


class OptimalInterpolation(_StaticBaseline):
    """Optimal interpolation: every analysis is the Kalman update of the climatology by the observations.

    Parameters
    ----------
    model : Lorenz96
        Forecast model.
    obs : ObservationOperator
        Observation operator.
    climatology : Climatology
        Prior mean and covariance (:meth:`Climatology.from_free_run`).
    """

    min_members = 1

    def __init__(self, model: Lorenz96, obs: ObservationOperator, climatology: Climatology) -> None:
        super().__init__(model, obs, climatology, 1.0)
        self._prior = climatology.mean[None, :]  # [1, n]

    def analyse(
        self, background: np.ndarray, observations: np.ndarray, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Analysis ``[..., N, n]`` (all members equal); the background only sets the shape."""
        ens, y = flatten_filter_input(background, observations, self.model.n, self.obs.p, 1, "OptimalInterpolation")
        xa = self._analysis(np.broadcast_to(self._prior, (ens.shape[0], self.model.n)), y)  # [K, n]
        return self._to_members(xa, ens, background)


class Var3D(_StaticBaseline):
    """Cycled 3D-Var with the static covariance ``B = b_scale * P_C`` (solved exactly: one linear update).

    Parameters
    ----------
    model : Lorenz96
        Forecast model.
    obs : ObservationOperator
        Observation operator.
    climatology : Climatology
        Source of ``P_C``.
    b_scale : float
        ``B = b_scale * P_C`` (0.02 is DAPPER's tuned value for the Sakov & Oke 2008 setting).
    """

    min_members = 1

    def __init__(
        self, model: Lorenz96, obs: ObservationOperator, climatology: Climatology, b_scale: float = 0.02
    ) -> None:
        if not b_scale > 0:
            raise ValueError(f"b_scale must be positive (B = b_scale * climatological covariance), got {b_scale}.")
        super().__init__(model, obs, climatology, float(b_scale))
        self.b_scale = float(b_scale)

    def analyse(
        self, background: np.ndarray, observations: np.ndarray, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Analysis ``[..., N, n]``: the update of the background mean, given to every member."""
        ens, y = flatten_filter_input(background, observations, self.model.n, self.obs.p, 1, "Var3D")
        self._check_finite(ens)
        xa = self._analysis(ens.mean(axis=1), y)  # [K, n]
        return self._to_members(xa, ens, background)
