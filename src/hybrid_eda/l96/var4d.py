"""Ensemble of 4D-Vars (EDA, Isaksen et al. 2010): every member is a perturbed-observation strong-constraint 4D-Var.

Member ``i`` minimises, over the state ``x0`` at the window start,

    J_i(x0) = 1/2 (x0 - xb_i)^T B^-1 (x0 - xb_i)
              + 1/2 sum_l (y_l + eps_il - H M_l(x0))^T R^-1 (y_l + eps_il - H M_l(x0)),    l = 0 .. L-1

where ``M_l`` integrates ``l * steps_per_obs`` model steps and ``eps_il ~ N(0, R)``. With the control-variable
transform ``x0 = xb_i + U v``, ``B = U U^T`` (see :mod:`hybrid_eda.l96.var4d_control`), the cost becomes
``J_i(v) = 1/2 v^T v + J_o(xb_i + U v)`` and needs no inverse of a rank-deficient ensemble ``B``.

Minimisation is incremental 4D-Var, i.e. Gauss-Newton: each outer loop integrates the nonlinear trajectory from
the current ``x0`` and propagates all columns of ``U`` with the tangent-linear model, giving
``G_l = H M_l U`` (``[p, m]`` per observation time); the quadratic inner problem

    (I + sum_l G_l^T R^-1 G_l) dv = -(v - sum_l G_l^T R^-1 d_l),    d_l = y_l + eps_il - H M_l(x0)

is solved exactly in the (small, ``m <= n + N``) control space, batched over members and experiments. The adjoint
model gives the gradient in :meth:`Var4DEDA.cost_and_gradient` (checked against finite differences in the tests
and used for the convergence diagnostics after the last outer loop).

Observation perturbations are **centred** across members and rescaled by ``sqrt(N / (N - 1))``: their sample
mean is exactly zero (so in the linear case the analysis mean is the analysis of the background mean with the
real observations) while their sample variance stays an unbiased estimate of ``R``. A single member (``N = 1``,
static ``B`` only) gets no perturbation: it is the deterministic 4D-Var.

In a hybrid EDA (``analyse(..., n_analyses=N_s)``) only the N_s real members are minimised: ``B`` is still the
(inflated) covariance of all N backgrounds, but the perturbations are drawn for, and centred over, the N_s
real members only, so the saving is real (about ``N_s / N`` of the minimisation time, see
``CycleOutput.analysis_seconds``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hybrid_eda.l96.base import Assimilator, FilterDivergenceError, analyses_kept
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.var4d_control import ControlTransform, static_b_sqrt

__all__ = ["Var4DEDA", "Var4DResult"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Var4DResult:
    """What one EDA minimisation returns.

    Attributes
    ----------
    analysis : np.ndarray
        ``[..., N, n]`` analysis members at the window start.
    control : np.ndarray
        ``[..., N, m]`` final control vectors ``v`` (``analysis = background_i + U v``).
    cost : np.ndarray
        ``[..., N, outer_loops + 1]`` nonlinear cost ``J_i`` at the start of every outer loop and at the end.
    grad_norm : np.ndarray
        ``[..., N, outer_loops + 1]`` Euclidean norm of the control-space gradient at the same points.
    """

    analysis: np.ndarray
    control: np.ndarray
    cost: np.ndarray
    grad_norm: np.ndarray


class Var4DEDA(Assimilator):
    """Ensemble of perturbed-observation strong-constraint 4D-Vars, minimised by Gauss-Newton.

    Parameters
    ----------
    model : Lorenz96
        Forecast model used inside the window (with its tangent-linear and adjoint).
    obs : ObservationOperator
        Observation operator and error statistics (``R = obs_std^2 I``).
    window : int
        Number ``L`` of observation times per window (the first at the window start; 1 = 3D-Var).
    steps_per_obs : int
        Model steps between two observation times.
    inflation : float
        Multiplicative inflation (>= 1) of the background anomalies; it inflates both the member backgrounds
        ``xb_i`` and the ensemble part of ``B``, like inflation in an EnKF.
    b_mode : str
        ``"ensemble"`` (sample covariance of the background members), ``"static"`` (``static_b``) or
        ``"hybrid"`` (``(1 - w) static_b + w`` ensemble covariance).
    static_b : np.ndarray or None
        ``[n, n]`` static covariance, e.g. a scaled climatological covariance; needed for static and hybrid.
    hybrid_weight : float
        Weight ``w`` of the ensemble part of a hybrid ``B``.
    outer_loops : int
        Gauss-Newton iterations (relinearisations); one is exact when the window has a single observation time.
    perturb : bool
        Perturb the observations of every member (the EDA); ``False`` runs N unperturbed 4D-Vars.
    """

    def __init__(
        self,
        model: Lorenz96,
        obs: ObservationOperator,
        window: int = 1,
        steps_per_obs: int = 1,
        inflation: float = 1.0,
        b_mode: str = "ensemble",
        static_b: np.ndarray | None = None,
        hybrid_weight: float = 0.5,
        outer_loops: int = 2,
        perturb: bool = True,
    ) -> None:
        super().__init__(model, obs)
        if obs.n != model.n:
            raise ValueError(
                f"the observation operator is built for n={obs.n} variables but the model has n={model.n}; "
                "build both with the same state size."
            )
        for name, value in (("window", window), ("steps_per_obs", steps_per_obs), ("outer_loops", outer_loops)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}; use e.g. {name}=1.")
        if not inflation >= 1.0:
            raise ValueError(
                f"inflation must be >= 1 (1 = none), got {inflation}; use e.g. 1.02 to inflate the anomalies by 2%."
            )
        if static_b is not None and b_mode == "ensemble":
            LOGGER.warning("static_b is ignored with b_mode='ensemble'; use b_mode='static' or 'hybrid' to use it.")
        sqrt_b = static_b_sqrt(static_b, model.n) if static_b is not None and b_mode != "ensemble" else None
        self.control = ControlTransform(b_mode=b_mode, static_sqrt=sqrt_b, hybrid_weight=hybrid_weight)
        self.window = int(window)
        self.steps_per_obs = int(steps_per_obs)
        self.inflation = float(inflation)
        self.outer_loops = int(outer_loops)
        self.perturb = bool(perturb)

    # ----------------------------------------------------------------------------------------------------------
    # public entry points

    def analyse(
        self,
        background: np.ndarray,
        observations: np.ndarray,
        rng: np.random.Generator,
        *,
        n_analyses: int | None = None,
    ) -> np.ndarray:
        """Perturbed-observation 4D-Var of every member; see :class:`~hybrid_eda.l96.base.Assimilator`.

        ``background`` is ``[..., N, n]``, ``observations`` ``[..., L, p]``; returns ``[..., N, n]``.
        ``n_analyses=N_s`` runs the minimisations of the first N_s members only (``[..., N_s, n]``): ``B`` still
        comes from all N backgrounds, the N_s perturbations are centred over the N_s members (rescaled by
        ``sqrt(N_s / (N_s - 1))``), and the cost falls roughly by ``N_s / N`` (the hybrid EDA's saving).
        """
        self._check_inputs(background, observations)
        n_out = analyses_kept(n_analyses, np.shape(background)[-2])
        perturbed = self.perturbed_observations(observations, n_out, rng)
        return self.minimise(background, perturbed).analysis

    def perturbed_observations(self, observations: np.ndarray, n_members: int, rng: np.random.Generator) -> np.ndarray:
        """Centred observation perturbations added to the observations.

        Parameters
        ----------
        observations : np.ndarray
            ``[..., L, p]`` observations of the window.
        n_members : int
            Ensemble size ``N``.
        rng : np.random.Generator
            Source of the perturbations.

        Returns
        -------
        np.ndarray
            ``[..., N, L, p]`` ``y_l + eps_il``, with ``eps`` of zero sample mean over members and unbiased
            sample variance ``R`` (no perturbation when ``N == 1`` or ``perturb`` is off).
        """
        y = np.asarray(observations, dtype=float)[..., None, :, :]  # [..., 1, L, p]
        shape = y.shape[:-3] + (n_members,) + y.shape[-2:]
        if not self.perturb or n_members < 2:
            return np.broadcast_to(y, shape).copy()
        eps = self.obs.obs_std * rng.standard_normal(shape)  # [..., N, L, p]
        eps -= eps.mean(axis=-3, keepdims=True)
        eps *= np.sqrt(n_members / (n_members - 1.0))
        return y + eps

    def control_basis(self, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inflated member backgrounds and the rows of ``U^T``.

        Parameters
        ----------
        background : np.ndarray
            ``[..., N, n]`` background ensemble.

        Returns
        -------
        tuple of np.ndarray
            ``xb`` ``[..., N, n]`` (anomalies inflated about the mean) and ``Ut`` ``[..., m, n]`` with
            ``B = Ut^T Ut``.
        """
        mean = background.mean(axis=-2, keepdims=True)  # [..., 1, n]
        anomalies = self.inflation * (background - mean)  # [..., N, n]
        return mean + anomalies, self.control.basis(anomalies)

    def minimise(self, background: np.ndarray, perturbed_obs: np.ndarray) -> Var4DResult:
        """Gauss-Newton minimisation of every member's cost, given its (perturbed) observations.

        Parameters
        ----------
        background : np.ndarray
            ``[..., N, n]`` background ensemble (inflated here).
        perturbed_obs : np.ndarray
            ``[..., N_out, L, p]`` observations of the first ``N_out <= N`` members (``N_out = N``: all of them),
            e.g. from :meth:`perturbed_observations`; only these members are minimised, with ``B`` from all N.

        Returns
        -------
        Var4DResult
            Analysis members, final control vectors and the cost / gradient history of the ``N_out`` members.
        """
        background = np.asarray(background, dtype=float)
        perturbed_obs = np.asarray(perturbed_obs, dtype=float)
        self._check_background(background)
        n_out = perturbed_obs.shape[-3] if perturbed_obs.ndim >= 3 else -1
        expected = background.shape[:-2] + (n_out, self.window, self.obs.p)
        if perturbed_obs.shape != expected or not 1 <= n_out <= background.shape[-2]:
            raise ValueError(
                f"perturbed observations must have shape [..., N, L, p] = "
                f"{background.shape[:-2] + (background.shape[-2], self.window, self.obs.p)} (or [..., N_out, L, p] "
                f"for the first N_out <= N members only), got {perturbed_obs.shape}."
            )
        xb, ut = self.control_basis(background)  # [..., N, n], [..., m, n]: B from all N members
        return self.solve(xb[..., :n_out, :], ut, perturbed_obs)  # only the first N_out are minimised

    def solve(self, xb: np.ndarray, ut: np.ndarray, perturbed_obs: np.ndarray) -> Var4DResult:
        """Gauss-Newton minimisation of ``J(v) = 1/2 v^T v + J_o(xb + U v)`` for a given square root of ``B``.

        The core of :meth:`minimise` without the ensemble: ``B = Ut^T Ut`` may come from anywhere (a 4D-Var
        with given variances, :class:`hybrid_eda.l96.var4d_given_b.Var4DGivenB`). Inputs are not checked here.

        Parameters
        ----------
        xb : np.ndarray
            ``[..., N, n]`` backgrounds (already inflated where that applies).
        ut : np.ndarray
            ``[..., m, n]`` rows of ``U^T``, shared by the ``N`` members of a batch entry.
        perturbed_obs : np.ndarray
            ``[..., N, L, p]`` observations of every member.

        Returns
        -------
        Var4DResult
            Analyses, control vectors and the cost / gradient history.
        """
        r_inv = 1.0 / self.obs.variance
        v = np.zeros(xb.shape[:-1] + ut.shape[-2:-1])  # [..., N, m]
        eye = np.eye(v.shape[-1])
        costs, grad_norms = [], []
        for _ in range(self.outer_loops):
            x0 = xb + v @ ut  # [..., N, n]
            hx, g = self._linearise(x0, ut)  # [..., N, L*p], [..., N, m, L*p]
            d = perturbed_obs.reshape(hx.shape) - hx  # [..., N, L*p] innovations
            grad = v - r_inv * np.einsum("...mk,...k->...m", g, d)  # [..., N, m]
            hess = eye + r_inv * (g @ np.swapaxes(g, -1, -2))  # [..., N, m, m]
            costs.append(0.5 * (np.sum(v * v, axis=-1) + r_inv * np.sum(d * d, axis=-1)))
            grad_norms.append(np.linalg.norm(grad, axis=-1))
            v = v - np.linalg.solve(hess, grad[..., None])[..., 0]
        cost, grad = self.cost_and_gradient(v, xb, ut, perturbed_obs)
        costs.append(cost)
        grad_norms.append(np.linalg.norm(grad, axis=-1))
        LOGGER.debug("4D-Var mean cost per outer loop: %s", [float(np.mean(c)) for c in costs])
        return Var4DResult(
            analysis=xb + v @ ut,
            control=v,
            cost=np.stack(costs, axis=-1),
            grad_norm=np.stack(grad_norms, axis=-1),
        )

    def cost_and_gradient(
        self, v: np.ndarray, xb: np.ndarray, ut: np.ndarray, perturbed_obs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nonlinear cost and its control-space gradient by the adjoint model.

        Parameters
        ----------
        v : np.ndarray
            ``[..., N, m]`` control vectors.
        xb : np.ndarray
            ``[..., N, n]`` member backgrounds (already inflated, see :meth:`control_basis`).
        ut : np.ndarray
            ``[..., m, n]`` rows of ``U^T``.
        perturbed_obs : np.ndarray
            ``[..., N, L, p]`` observations of every member.

        Returns
        -------
        tuple of np.ndarray
            ``J`` ``[..., N]`` and ``dJ/dv = v - U^T sum_l M_l^T H^T R^-1 d_l`` ``[..., N, m]``.
        """
        r_inv = 1.0 / self.obs.variance
        x = xb + v @ ut  # [..., N, n]
        trajectory = [x]  # states at every model step, [..., N, n] each
        forcings = []  # H^T R^-1 d_l at every observation time, [..., N, n] each
        cost = 0.5 * np.sum(v * v, axis=-1)  # [..., N]
        for lead in range(self.window):
            if lead > 0:
                for _ in range(self.steps_per_obs):
                    x = self.model.step(x)
                    trajectory.append(x)
            d = perturbed_obs[..., lead, :] - self.obs.apply(x)  # [..., N, p]
            cost = cost + 0.5 * r_inv * np.sum(d * d, axis=-1)
            forcings.append(self.obs.adjoint(r_inv * d))
        # Adjoint sweep: lam accumulates sum_l M_l^T H^T R^-1 d_l from the last observation time backwards.
        lam = forcings[-1]
        for step in range(len(trajectory) - 2, -1, -1):
            lam = self.model.step_ad(trajectory[step], lam)
            if step % self.steps_per_obs == 0:
                lam = lam + forcings[step // self.steps_per_obs]
        grad = v - lam @ np.swapaxes(ut, -1, -2)  # [..., N, m]
        return cost, grad

    # ----------------------------------------------------------------------------------------------------------
    # internals

    def _linearise(self, x0: np.ndarray, ut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nonlinear ``H M_l(x0)`` and tangent-linear ``(H M_l U)^T`` over the window, stacked over ``l``.

        ``x0`` is ``[..., N, n]`` and ``ut`` ``[..., m, n]``; returns ``[..., N, L*p]`` and ``[..., N, m, L*p]``.
        """
        p = self.obs.p
        x = x0[..., None, :]  # [..., N, 1, n]
        dx = np.broadcast_to(ut[..., None, :, :], x0.shape[:-1] + ut.shape[-2:])  # [..., N, m, n]
        hx = np.empty(x0.shape[:-1] + (self.window * p,))  # [..., N, L*p]
        hdx = np.empty(dx.shape[:-1] + (self.window * p,))  # [..., N, m, L*p]
        for lead in range(self.window):
            if lead > 0:
                for _ in range(self.steps_per_obs):
                    x, dx = self.model.step_tl(x, dx)
            hx[..., lead * p : (lead + 1) * p] = self.obs.apply(x[..., 0, :])
            hdx[..., lead * p : (lead + 1) * p] = self.obs.apply(dx)
        return hx, hdx

    def _check_background(self, background: np.ndarray) -> None:
        if background.ndim < 2 or background.shape[-1] != self.model.n:
            raise ValueError(
                f"background must be an ensemble [..., N, n] with n={self.model.n}, got shape {background.shape}."
            )
        n_members = background.shape[-2]
        if self.control.uses_ensemble and n_members < 2:
            raise ValueError(
                f"b_mode={self.control.b_mode!r} estimates B from the background ensemble and needs N >= 2 "
                f"members, got N={n_members}; add members or use b_mode='static'."
            )
        if not np.all(np.isfinite(background)):
            raise FilterDivergenceError(
                "the background ensemble contains NaN or infinite values: the forecast diverged; "
                "increase inflation or ensemble size, or shorten the window."
            )

    def _check_inputs(self, background: np.ndarray, observations: np.ndarray) -> None:
        background = np.asarray(background)
        observations = np.asarray(observations)
        self._check_background(background)
        expected = background.shape[:-2] + (self.window, self.obs.p)
        if observations.shape != expected:
            raise ValueError(
                f"observations must have shape [..., L, p] = {expected} (window={self.window} observation "
                f"times, p={self.obs.p} observations each, same leading axes as the background), got "
                f"{observations.shape}."
            )
