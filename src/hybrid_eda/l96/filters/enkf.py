"""Stochastic EnKF with perturbed observations (Burgers et al. 1998; Evensen 2003).

Every member assimilates its own perturbed copy of the observations with the Kalman gain of the (inflated)
background ensemble::

    x_i^a = x_i + K (y + eps_i - H x_i),    eps_i ~ N(0, R),
    K     = Pb H^T (H Pb H^T + R)^-1 = A^T (Y R^-1 Y^T + (N-1) I)^-1 Y R^-1

with ``A`` the inflated anomalies ``[N, n]`` and ``Y = A H^T`` (the second form solves an ``N x N`` system
instead of a ``p x p`` one). Centring the perturbations (``sum_i eps_i = 0``, as DAPPER's ``PertObs`` does)
makes the analysis mean exactly the Kalman mean and leaves their sample covariance, hence the expected analysis
covariance ``(I - K H) Pb``, unchanged.
"""

from __future__ import annotations

import numpy as np

from hybrid_eda.l96 import _kernels
from hybrid_eda.l96.base import analyses_kept
from hybrid_eda.l96.filters.etkf import EnsembleFilter
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.seeding import is_generator

__all__ = ["EnKF", "enkf_reference"]


def enkf_reference(
    ens: np.ndarray,
    y: np.ndarray,
    perturbations: np.ndarray,
    obs_index: np.ndarray,
    obs_variance: float,
    inflation: float,
) -> np.ndarray:
    """Plain numpy float64 perturbed-observation EnKF (reference for the compiled kernel).

    Parameters
    ----------
    ens : np.ndarray
        ``[..., N, n]`` background ensemble.
    y : np.ndarray
        ``[..., p]`` observations.
    perturbations : np.ndarray
        ``[..., N_out, p]`` observation perturbations ``eps_i`` of the first ``N_out <= N`` members, the only
        ones updated (``N_out = N`` for the whole ensemble).
    obs_index : np.ndarray
        ``[p]`` observed variables.
    obs_variance : float
        ``r`` in ``R = r I``.
    inflation : float
        Multiplicative inflation of the background anomalies.

    Returns
    -------
    np.ndarray
        ``[..., N_out, n]`` analysis members.
    """
    n_mem = ens.shape[-2]
    mean = ens.mean(axis=-2, keepdims=True)  # [..., 1, n]
    anom = inflation * (ens - mean)  # [..., N, n]
    n_out = perturbations.shape[-2]  # update only the first n_out <= N members (the gain uses all N)
    members = (mean + anom)[..., :n_out, :]  # inflated members [..., N_out, n]
    yanom = anom[..., obs_index]  # [..., N, p]
    innov = y[..., None, :] + perturbations - members[..., obs_index]  # [..., N_out, p]
    m = yanom @ np.swapaxes(yanom, -1, -2) / obs_variance + (n_mem - 1.0) * np.eye(n_mem)  # [..., N, N]
    g = innov @ np.swapaxes(yanom, -1, -2) / obs_variance  # [..., N_out, N]
    return members + np.swapaxes(np.linalg.solve(m, np.swapaxes(g, -1, -2)), -1, -2) @ anom


class EnKF(EnsembleFilter):
    """Perturbed-observation (stochastic) EnKF with multiplicative inflation and no localisation.

    Parameters
    ----------
    model : Lorenz96
        Forecast model.
    obs : ObservationOperator
        Observation operator (``R = obs_std^2 I``).
    inflation : float
        Multiplicative inflation of the background anomalies (>= 1).
    centred : bool
        Remove the ensemble mean of the observation perturbations (default, as DAPPER's ``PertObs``); ``False``
        gives Burgers et al.'s original independent perturbations.
    compiled : bool
        Use the numba kernel (default); ``False`` runs :func:`enkf_reference`.
    """

    def __init__(
        self,
        model: Lorenz96,
        obs: ObservationOperator,
        inflation: float = 1.0,
        centred: bool = True,
        compiled: bool = True,
    ) -> None:
        super().__init__(model, obs, inflation)
        self.centred = centred
        self.compiled = compiled

    def perturbations(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Observation perturbations ``[K, N, p]`` drawn from ``N(0, R)``, centred over members if asked."""
        pert = self.obs.obs_std * rng.standard_normal(shape)
        if self.centred:
            pert -= pert.mean(axis=-2, keepdims=True)
        return pert

    def analyse(
        self,
        background: np.ndarray,
        observations: np.ndarray,
        rng: np.random.Generator,
        *,
        n_analyses: int | None = None,
    ) -> np.ndarray:
        """Analysis ensemble ``[..., N, n]`` from ``background [..., N, n]`` and ``observations [..., 1, p]``.

        ``n_analyses=N_s`` returns ``[..., N_s, n]``: the gain comes from all N backgrounds, and only the first
        N_s members get a perturbed-observation update. Their N_s perturbations are drawn (and centred) over
        those N_s members (zero sample mean over the real members, as DAPPER's centring over the whole ensemble).
        """
        if not is_generator(rng):
            raise ValueError(
                f"EnKF draws observation perturbations and needs a numpy Generator, got {type(rng).__name__}; "
                "pass rng=np.random.default_rng(seed)."
            )
        ens, y = self._flatten(background, observations)  # [K, N, n], [K, p]
        n_out = analyses_kept(n_analyses, ens.shape[1])
        out_shape = np.shape(background)[:-2] + (n_out, self.model.n)
        pert = self.perturbations((ens.shape[0], n_out, self.obs.p), rng)  # [K, N_s, p]
        if not self.compiled:
            bad = np.flatnonzero(~np.isfinite(ens).all(axis=(-2, -1)))
            if bad.size:
                self._raise_divergence(int(bad[0]))
            out = enkf_reference(ens, y, pert, self._idx, self.obs.variance, self.inflation)
            return out.reshape(out_shape)
        out = np.empty((ens.shape[0], n_out, self.model.n))
        status = _kernels.enkf_update(ens, y, pert, self._idx, self._r_inv, self.inflation, out)
        if status >= 0:
            self._raise_divergence(status)
        return out.reshape(out_shape)
