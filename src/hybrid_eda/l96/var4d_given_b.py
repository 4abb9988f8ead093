"""Deterministic 4D-Var with a given background-error covariance ``B = D^1/2 C D^1/2``.

The "control" of the variance-impact experiment (:mod:`hybrid_eda.l96.variance_impact`): a fixed correlation
``C`` (``[n, n]``, unit diagonal) and variances ``D = diag(d)`` that may change every cycle (from an EDA, a
5-member subset, an emulator or a climatology)::

    B   = D^1/2 C D^1/2 = U U^T,     U = D^1/2 L_C,     C = L_C L_C^T (Cholesky)
    x0  = xb + U v,                  J(v) = 1/2 v^T v + 1/2 sum_l (y_l - H M_l(x0))^T R^-1 (y_l - H M_l(x0))

minimised by the Gauss-Newton loop of :meth:`hybrid_eda.l96.var4d.Var4DEDA.solve` (incremental 4D-Var; the
observations are not perturbed). With a window of one observation time (``window=1``) one outer loop gives the
exact linear analysis ``xb + B H^T (H B H^T + R)^-1 (y - H xb)``; a zero variance ``d_k = 0`` leaves variable
``k`` at its background (the control-variable form needs no inverse of ``B``).

Glossary: ``n`` state size, ``N`` members (1 for the control), ``L`` observation times, ``p`` observations each.
"""

from __future__ import annotations

import numpy as np

from hybrid_eda.l96.base import Assimilator, FilterDivergenceError, analyses_kept
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.var4d import Var4DEDA, Var4DResult
from hybrid_eda.l96.var4d_control import static_b_sqrt

__all__ = ["Var4DGivenB", "assemble_b", "correlation_from_covariance"]


def correlation_from_covariance(cov: np.ndarray) -> np.ndarray:
    """``C = S^-1/2 P S^-1/2`` with ``S = diag(P)``: ``[n, n] -> [n, n]`` (unit diagonal).

    Raises
    ------
    ValueError
        When ``cov`` is not square or has a non-positive variance.
    """
    cov = np.asarray(cov, dtype=float)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"a covariance must be a square [n, n] matrix, got shape {cov.shape}.")
    std = np.sqrt(np.diag(cov))
    if not np.all(std > 0):
        raise ValueError("the covariance has a zero or negative variance on its diagonal; no correlation exists.")
    corr = cov / std[:, None] / std[None, :]
    return 0.5 * (corr + corr.T)


def assemble_b(variances: np.ndarray, correlation: np.ndarray) -> np.ndarray:
    """``B = D^1/2 C D^1/2``: variances ``[..., n]`` and correlation ``[n, n]`` -> ``[..., n, n]``."""
    s = np.sqrt(np.asarray(variances, dtype=float))  # [..., n]
    return s[..., :, None] * np.asarray(correlation, dtype=float) * s[..., None, :]


class Var4DGivenB(Assimilator):
    """Strong-constraint 4D-Var whose ``B = D^1/2 C D^1/2`` has a fixed correlation and given variances.

    Parameters
    ----------
    model : Lorenz96
        Forecast model inside the window (with tangent-linear and adjoint).
    obs : ObservationOperator
        Observation operator and error statistics.
    correlation : np.ndarray
        ``[n, n]`` correlation ``C`` (symmetric positive definite; its diagonal is used as given).
    variances : np.ndarray, optional
        ``[n]`` default variances ``d`` (a static ``D``), used when :meth:`analyse` gets none.
    window : int
        Observation times per window (the first at the window start).
    steps_per_obs : int
        Model steps between observation times.
    outer_loops : int
        Gauss-Newton iterations.
    """

    def __init__(
        self,
        model: Lorenz96,
        obs: ObservationOperator,
        correlation: np.ndarray,
        variances: np.ndarray | None = None,
        window: int = 1,
        steps_per_obs: int = 1,
        outer_loops: int = 2,
    ) -> None:
        super().__init__(model, obs)
        # The inner 4D-Var only lends its Gauss-Newton solver, tangent-linear and adjoint; its B is never used.
        self._var = Var4DEDA(
            model,
            obs,
            window=window,
            steps_per_obs=steps_per_obs,
            b_mode="static",
            static_b=correlation,
            outer_loops=outer_loops,
            perturb=False,
        )
        self.window, self.steps_per_obs = self._var.window, self._var.steps_per_obs
        self.correlation_sqrt = static_b_sqrt(correlation, model.n)  # [n, n] lower L_C
        self.variances = None if variances is None else self._check_variances(np.asarray(variances, float))

    def basis(self, variances: np.ndarray) -> np.ndarray:
        """Rows of ``U^T = L_C^T D^1/2``: variances ``[..., n]`` -> ``[..., n, n]`` with ``B = Ut^T Ut``."""
        d = self._check_variances(np.asarray(variances, dtype=float))
        return self.correlation_sqrt.T * np.sqrt(d)[..., None, :]

    def b_matrix(self, variances: np.ndarray) -> np.ndarray:
        """``B = Ut^T Ut`` for variances ``[..., n]`` -> ``[..., n, n]`` (equals :func:`assemble_b`)."""
        ut = self.basis(variances)
        return np.swapaxes(ut, -1, -2) @ ut

    def analyse(
        self,
        background: np.ndarray,
        observations: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        n_analyses: int | None = None,
        variances: np.ndarray | None = None,
    ) -> np.ndarray:
        """Analyse every member with the same ``B`` and the unperturbed observations.

        Parameters
        ----------
        background : np.ndarray
            ``[..., N, n]`` backgrounds (``N = 1``: the deterministic control).
        observations : np.ndarray
            ``[..., L, p]`` observations of the window.
        rng : unused
            Accepted for the :class:`~hybrid_eda.l96.base.Assimilator` contract (nothing is random).
        n_analyses : int, optional
            Analyse the first ``n_analyses`` members only.
        variances : np.ndarray, optional
            ``[..., n]`` variances ``d`` of this window (leading axes those of ``background`` without ``N``);
            default: the constructor's static ``variances``.

        Returns
        -------
        np.ndarray
            ``[..., N, n]`` analyses at the window start.
        """
        return self.minimise(background, observations, variances, n_analyses=n_analyses).analysis

    def minimise(
        self,
        background: np.ndarray,
        observations: np.ndarray,
        variances: np.ndarray | None = None,
        *,
        n_analyses: int | None = None,
    ) -> Var4DResult:
        """As :meth:`analyse`, with the cost and gradient history (``[..., N, outer_loops + 1]``)."""
        xb = np.asarray(background, dtype=float)
        y = np.asarray(observations, dtype=float)
        if xb.ndim < 2 or xb.shape[-1] != self.model.n:
            raise ValueError(f"background must be [..., N, n] with n={self.model.n}, got shape {xb.shape}.")
        if not np.all(np.isfinite(xb)):
            raise FilterDivergenceError("the background contains NaN or infinite values: the forecast diverged.")
        expected = xb.shape[:-2] + (self.window, self.obs.p)
        if y.shape != expected:
            raise ValueError(
                f"observations must have shape [..., L, p] = {expected} (window={self.window}, p={self.obs.p}, "
                f"leading axes of the background), got {y.shape}."
            )
        if variances is None:
            if self.variances is None:
                raise ValueError(
                    "no variances: pass variances=[..., n] to analyse, or a static variances=[n] to Var4DGivenB."
                )
            variances = self.variances
        d = np.asarray(variances, dtype=float)
        if d.shape[-1:] != (self.model.n,) or d.ndim > xb.ndim - 1:
            raise ValueError(
                f"variances must have shape [..., n] = {xb.shape[:-2] + (self.model.n,)} (or broadcast to it), "
                f"got {d.shape}."
            )
        n_out = analyses_kept(n_analyses, xb.shape[-2])
        xb = xb[..., :n_out, :]
        ut = np.broadcast_to(self.basis(d), xb.shape[:-2] + (self.model.n, self.model.n))  # [..., n, n]
        y_members = np.broadcast_to(y[..., None, :, :], xb.shape[:-1] + y.shape[-2:])  # [..., N, L, p]
        return self._var.solve(xb, ut, y_members)

    def _check_variances(self, d: np.ndarray) -> np.ndarray:
        if d.shape[-1:] != (self.model.n,):
            raise ValueError(f"variances must have a last axis of size n={self.model.n}, got shape {d.shape}.")
        if not np.all(np.isfinite(d)) or np.any(d < 0):
            raise ValueError(
                "variances must be finite and >= 0 (got NaN, inf or a negative value); clip an emulator's output "
                "with np.clip(std, 0, None) ** 2 before passing it."
            )
        return d
