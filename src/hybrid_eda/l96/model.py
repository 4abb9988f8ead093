"""Lorenz-96 dynamics, RK4 integrator, tangent-linear and adjoint models.

    dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F,        i = 0 .. n-1 (cyclic)

Every function works over the **last axis**, so the same call steps one state ``[n]``, an ensemble
``[N, n]`` or a batch of independent experiments ``[B, N, n]`` (Lorenz 1996; DAPPER's habit).

The tangent-linear (TL) model of one RK4 step maps a perturbation ``dx`` at ``x`` to the perturbation of
the step's output; the adjoint (AD) is its exact transpose, so ``<M dx, lam> == <dx, M^T lam>`` to rounding
(the dot-product test, checked in ``tests/test_l96_model.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    return (np.roll(x, -1, -1) - np.roll(x, 2, -1)) * np.roll(dx, 1, -1) + (
        np.roll(dx, -1, -1) - np.roll(dx, 2, -1)
    ) * np.roll(x, 1, -1) - dx


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

    def step(self, x: np.ndarray) -> np.ndarray:
        """One RK4 step: ``[..., n] -> [..., n]``."""
        return rk4_step(x, self.dt, self.forcing)

    def forecast(self, x: np.ndarray, n_steps: int) -> np.ndarray:
        """Integrate ``n_steps`` RK4 steps: ``[..., n] -> [..., n]``."""
        for _ in range(n_steps):
            x = rk4_step(x, self.dt, self.forcing)
        return x

    def step_tl(self, x: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RK4 step and tangent-linear propagation of ``dx``; see :func:`rk4_step_tl`."""
        return rk4_step_tl(x, dx, self.dt, self.forcing)

    def step_ad(self, x: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """Adjoint of one RK4 step at ``x``; see :func:`rk4_step_ad`."""
        return rk4_step_ad(x, lam, self.dt, self.forcing)
