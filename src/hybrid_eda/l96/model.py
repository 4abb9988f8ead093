"""Lorenz-96 dynamics, RK4 integrator, tangent-linear and adjoint models.

    dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F,        i = 0 .. n-1 (cyclic)

Every function works over the **last axis**, so the same call steps one state ``[n]``, an ensemble
``[N, n]`` or a batch of independent experiments ``[B, N, n]`` (Lorenz 1996; DAPPER's habit).

The tangent-linear (TL) model of one RK4 step maps a perturbation ``dx`` at ``x`` to the perturbation of
the step's output; the adjoint (AD) is its exact transpose, so ``<M dx, lam> == <dx, M^T lam>`` to rounding
(the dot-product test, checked in ``tests/test_l96_model.py``).

The module-level functions are plain numpy and serve as the float64 reference. :class:`Lorenz96`'s methods
run compiled numba kernels (:mod:`hybrid_eda.l96._kernels`) on float64 input, which is 10-50x faster for the
small arrays of a Lorenz-96 cycle, and fall back to the numpy functions for other dtypes or for broadcasting
patterns the kernels do not cover. Both paths agree to rounding (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid_eda.l96 import _kernels

__all__ = [
    "Lorenz96",
    "tendency",
    "tendency_tl",
    "tendency_ad",
    "rk4_step",
    "rk4_step_tl",
    "rk4_step_ad",
]


def tendency(x: np.ndarray, forcing: float) -> np.ndarray:
    """Lorenz-96 right-hand side over the last axis: ``[..., n] -> [..., n]``."""
    xp1 = np.roll(x, -1, axis=-1)  # x_{i+1}
    xm1 = np.roll(x, 1, axis=-1)  # x_{i-1}
    xm2 = np.roll(x, 2, axis=-1)  # x_{i-2}
    return (xp1 - xm2) * xm1 - x + forcing


def tendency_tl(x: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Jacobian of :func:`tendency` at ``x`` applied to ``dx`` (both ``[..., n]``).

    d(dx_i/dt) = (x_{i+1} - x_{i-2}) dx_{i-1} + (dx_{i+1} - dx_{i-2}) x_{i-1} - dx_i
    """
    return (
        (np.roll(x, -1, -1) - np.roll(x, 2, -1)) * np.roll(dx, 1, -1)
        + (np.roll(dx, -1, -1) - np.roll(dx, 2, -1)) * np.roll(x, 1, -1)
        - dx
    )


def tendency_ad(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Transpose of the Jacobian of :func:`tendency` at ``x`` applied to ``lam`` (both ``[..., n]``).

    (J^T lam)_j = (x_{j+2} - x_{j-1}) lam_{j+1} + x_{j-2} lam_{j-1} - x_{j+1} lam_{j+2} - lam_j
    """
    return (
        (np.roll(x, -2, -1) - np.roll(x, 1, -1)) * np.roll(lam, -1, -1)
        + np.roll(x, 2, -1) * np.roll(lam, 1, -1)
        - np.roll(x, -1, -1) * np.roll(lam, -2, -1)
        - lam
    )


def _rk4_stages(x: np.ndarray, dt: float, forcing: float) -> tuple[np.ndarray, ...]:
    """States at which the four RK4 slopes are evaluated, and the slopes: ``(x1, x2, x3, x4, k1, k2, k3, k4)``."""
    k1 = tendency(x, forcing)
    x2 = x + 0.5 * dt * k1
    k2 = tendency(x2, forcing)
    x3 = x + 0.5 * dt * k2
    k3 = tendency(x3, forcing)
    x4 = x + dt * k3
    k4 = tendency(x4, forcing)
    return x, x2, x3, x4, k1, k2, k3, k4


def rk4_step(x: np.ndarray, dt: float, forcing: float) -> np.ndarray:
    """One classical RK4 step of length ``dt``: ``[..., n] -> [..., n]``."""
    *_, k1, k2, k3, k4 = _rk4_stages(x, dt, forcing)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def rk4_step_tl(x: np.ndarray, dx: np.ndarray, dt: float, forcing: float) -> tuple[np.ndarray, np.ndarray]:
    """RK4 step and its tangent-linear model.

    Returns ``(x_next, dx_next)`` where ``dx_next = M(x) dx`` and ``M`` is the exact Jacobian of
    :func:`rk4_step` at ``x``. ``dx`` may carry extra leading axes that broadcast against ``x``.
    """
    x1, x2, x3, x4, k1, k2, k3, k4 = _rk4_stages(x, dt, forcing)
    dk1 = tendency_tl(x1, dx)
    dk2 = tendency_tl(x2, dx + 0.5 * dt * dk1)
    dk3 = tendency_tl(x3, dx + 0.5 * dt * dk2)
    dk4 = tendency_tl(x4, dx + dt * dk3)
    x_next = x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    dx_next = dx + (dt / 6.0) * (dk1 + 2.0 * dk2 + 2.0 * dk3 + dk4)
    return x_next, dx_next


def rk4_step_ad(x: np.ndarray, lam: np.ndarray, dt: float, forcing: float) -> np.ndarray:
    """Adjoint of :func:`rk4_step_tl` at ``x``: returns ``M(x)^T lam`` (``[..., n]``)."""
    x1, x2, x3, x4, *_ = _rk4_stages(x, dt, forcing)
    lam_k1 = (dt / 6.0) * lam
    lam_k2 = (dt / 3.0) * lam
    lam_k3 = (dt / 3.0) * lam
    lam_k4 = (dt / 6.0) * lam
    out = lam.copy()
    u4 = tendency_ad(x4, lam_k4)  # dk4 = J4 (dx + dt dk3)
    out = out + u4
    lam_k3 = lam_k3 + dt * u4
    u3 = tendency_ad(x3, lam_k3)  # dk3 = J3 (dx + dt/2 dk2)
    out = out + u3
    lam_k2 = lam_k2 + 0.5 * dt * u3
    u2 = tendency_ad(x2, lam_k2)  # dk2 = J2 (dx + dt/2 dk1)
    out = out + u2
    lam_k1 = lam_k1 + 0.5 * dt * u2
    return out + tendency_ad(x1, lam_k1)  # dk1 = J1 dx


@dataclass(frozen=True)
class Lorenz96:
    """Lorenz-96 model configuration and integrator.

    Parameters
    ----------
    n : int
        Number of variables on the ring (40 in the Sakov & Oke 2008 setting); at least 4.
    forcing : float
        Constant forcing F (8 gives chaotic dynamics with 13 positive Lyapunov exponents at n=40).
    dt : float
        RK4 time step (0.05 model time units ~ 6 hours of atmospheric time).
    """

    n: int = 40
    forcing: float = 8.0
    dt: float = 0.05

    def __post_init__(self) -> None:
        if self.n < 4:
            raise ValueError(f"Lorenz96 needs at least 4 variables on the ring, got n={self.n}; use n >= 4 (e.g. 40).")
        if not self.dt > 0:
            raise ValueError(f"Lorenz96 time step must be positive, got dt={self.dt}; use e.g. dt=0.05.")

    def _check_state(self, x: np.ndarray, name: str = "x") -> None:
        if x.ndim == 0 or x.shape[-1] != self.n:
            raise ValueError(
                f"{name} must have the {self.n} model variables on its last axis ([..., n={self.n}]), "
                f"got shape {x.shape}; pass one state [n], an ensemble [N, n] or a batch [B, N, n]."
            )

    def _integrate(self, x: np.ndarray, n_steps: int) -> np.ndarray:
        x = np.asarray(x)
        self._check_state(x)
        if x.dtype != np.float64:
            out = x
            for _ in range(n_steps):
                out = rk4_step(out, self.dt, self.forcing)
            return out
        rows = np.ascontiguousarray(x).reshape(-1, self.n)  # [M, n]
        out = np.empty(x.shape)
        _kernels.rk4_steps(rows, self.dt, self.forcing, n_steps, out.reshape(-1, self.n))
        return out

    def step(self, x: np.ndarray) -> np.ndarray:
        """One RK4 step: ``[..., n] -> [..., n]`` (a new array)."""
        return self._integrate(x, 1)

    def forecast(self, x: np.ndarray, n_steps: int) -> np.ndarray:
        """Integrate ``n_steps`` RK4 steps: ``[..., n] -> [..., n]`` (a new array)."""
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}.")
        return self._integrate(x, int(n_steps))

    def trajectory(self, x0: np.ndarray, n_steps: int) -> np.ndarray:
        """States after ``1 .. n_steps`` steps of one state ``x0 [n]``: returns ``[n_steps, n]``."""
        x0 = np.ascontiguousarray(x0, dtype=np.float64)
        if x0.shape != (self.n,):
            raise ValueError(f"trajectory starts from one state of shape ({self.n},), got {x0.shape}.")
        out = np.empty((int(n_steps), self.n))
        _kernels.rk4_trajectory(x0, self.dt, self.forcing, int(n_steps), out)
        return out

    def step_tl(self, x: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RK4 step and tangent-linear propagation of ``dx``; see :func:`rk4_step_tl`.

        Compiled fast paths: ``dx`` of the same shape as ``x``, or ``x [..., 1, n]`` with ``dx [..., J, n]``
        (J perturbations around each state, the 4D-Var pattern); anything else broadcasts through numpy.
        """
        x = np.asarray(x)
        dx = np.asarray(dx)
        self._check_state(x)
        self._check_state(dx, "dx")
        if x.dtype == np.float64 and dx.dtype == np.float64:
            if x.shape == dx.shape:
                n_pert = 1
            elif x.ndim == dx.ndim and x.ndim >= 2 and x.shape[-2] == 1 and x.shape[:-2] == dx.shape[:-2]:
                n_pert = dx.shape[-2]
            else:
                n_pert = 0
            if n_pert:
                rows = np.ascontiguousarray(x).reshape(-1, self.n)  # [M, n]
                drows = np.ascontiguousarray(dx).reshape(rows.shape[0], n_pert, self.n)  # [M, J, n]
                x_next = np.empty(x.shape)
                dx_next = np.empty(dx.shape)
                _kernels.rk4_tl(
                    rows, drows, self.dt, self.forcing, x_next.reshape(rows.shape), dx_next.reshape(drows.shape)
                )
                return x_next, dx_next
        return rk4_step_tl(x, dx, self.dt, self.forcing)

    def step_ad(self, x: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """Adjoint of one RK4 step at ``x``; see :func:`rk4_step_ad` (``x`` and ``lam`` broadcast)."""
        x = np.asarray(x)
        lam = np.asarray(lam)
        self._check_state(x)
        self._check_state(lam, "lam")
        if x.dtype != np.float64 or lam.dtype != np.float64:
            return rk4_step_ad(x, lam, self.dt, self.forcing)
        if x.shape != lam.shape:
            x, lam = np.broadcast_arrays(x, lam)
        rows = np.ascontiguousarray(x).reshape(-1, self.n)  # [M, n]
        out = np.empty(x.shape)
        _kernels.rk4_ad(
            rows, np.ascontiguousarray(lam).reshape(rows.shape), self.dt, self.forcing, out.reshape(rows.shape)
        )
        return out
