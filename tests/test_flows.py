"""Stratonovich integrators, Brownian increments and time schedules of the member generator's flow.

The strong order is measured, not assumed: one set of Brownian paths on a fine grid is coarsened by summing
increments, each scheme integrates the same paths at several step sizes, and the slope of ``log E|X_h - X|``
against ``log h`` is fitted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.flows import (
    PowerSchedule,
    SDECoefficients,
    StochasticHeun,
    StochasticMidpoint,
    UniformSchedule,
    brownian_increments,
    coarsen_increments,
    integrate,
)

# Geometric Brownian motion dX = a X dt + b X o dW, X_0 = 1: X_T = exp(a T + b W_T) (Stratonovich);
# the Ito SDE with the same coefficients has X_T = exp((a - b^2 / 2) T + b W_T).
A, B, PATHS, FINE_STEPS = 0.5, 0.8, 4000, 1024
COARSE_STEPS = (8, 16, 32, 64, 128, 256)


def _gbm(x: torch.Tensor, t: torch.Tensor) -> SDECoefficients:
    return SDECoefficients(drift=A * x, diffusion=B * x)


def _euler_maruyama(field, x0, times, increments):
    """Ito's scheme, as a reference of what the Stratonovich schemes must not converge to."""
    x = x0
    for k in range(increments.shape[0]):
        out = field(x, times[k])
        x = x + out.drift * (times[k + 1] - times[k]) + out.diffusion * increments[k]
    return x


def _fine_paths(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    times = UniformSchedule().times(FINE_STEPS, dtype=torch.float64)
    return brownian_increments(times, (PATHS,), generator)  # [FINE_STEPS, PATHS]


def _slope(steps, errors) -> float:
    return float(np.polyfit(np.log(1.0 / np.asarray(steps)), np.log(np.asarray(errors)), 1)[0])


def _strong_errors(solve, exact) -> list[float]:
    fine = _fine_paths()
    errors = []
    for steps in COARSE_STEPS:
        increments = coarsen_increments(fine, FINE_STEPS // steps)
        times = UniformSchedule().times(steps, dtype=torch.float64)
        errors.append(float((solve(times, increments) - exact(fine)).abs().mean()))
    return errors


def _stratonovich_exact(fine: torch.Tensor) -> torch.Tensor:
    return torch.exp(A + B * fine.sum(dim=0))


@pytest.mark.parametrize("scheme", [StochasticHeun(), StochasticMidpoint()], ids=["heun", "midpoint"])
def test_strong_order_one_on_geometric_brownian_motion(scheme):
    x0 = torch.ones(PATHS, dtype=torch.float64)
    errors = _strong_errors(lambda t, dw: integrate(_gbm, x0, t, dw, scheme=scheme).final, _stratonovich_exact)
    slope = _slope(COARSE_STEPS, errors)
    assert scheme.strong_order == 1.0
    assert 0.85 <= slope <= 1.15, (slope, errors)
    assert errors[-1] < 0.01 * float(_stratonovich_exact(_fine_paths()).abs().mean())


def test_euler_maruyama_is_inconsistent_with_stratonovich_and_half_order_for_ito():
    x0 = torch.ones(PATHS, dtype=torch.float64)
    errors = _strong_errors(lambda t, dw: _euler_maruyama(_gbm, x0, t, dw), _stratonovich_exact)
    # Against the Stratonovich solution the error does not vanish: it tends to E|X (1 - exp(-b^2 T / 2))|.
    limit = float((_stratonovich_exact(_fine_paths()) * (1.0 - math.exp(-(B**2) / 2))).abs().mean())
    assert abs(_slope(COARSE_STEPS, errors)) < 0.15, errors
    assert errors[-1] == pytest.approx(limit, rel=0.1)

    def ito_exact(fine):
        return torch.exp(A - B**2 / 2 + B * fine.sum(dim=0))

    ito_errors = _strong_errors(lambda t, dw: _euler_maruyama(_gbm, x0, t, dw), ito_exact)
    assert 0.35 <= _slope(COARSE_STEPS, ito_errors) <= 0.65, ito_errors


def test_heun_is_half_order_for_non_commutative_noise():
    """dX1 = X2 o dW1, dX2 = -X1 o dW2: diagonal noise whose s_1 depends on x_2, so Levy areas matter."""

    def field(x, t):
        return SDECoefficients(drift=torch.zeros_like(x), diffusion=torch.stack([x[1], -x[0]]))

    paths, fine_steps = 2000, 4096
    generator = torch.Generator().manual_seed(1)
    fine = brownian_increments(UniformSchedule().times(fine_steps, dtype=torch.float64), (2, paths), generator)
    x0 = torch.ones(2, paths, dtype=torch.float64)
    reference = integrate(field, x0, UniformSchedule().times(fine_steps, dtype=torch.float64), fine).final
    steps_list, errors = (4, 8, 16, 32, 64), []
    for steps in steps_list:
        increments = coarsen_increments(fine, fine_steps // steps)
        solution = integrate(field, x0, UniformSchedule().times(steps, dtype=torch.float64), increments).final
        errors.append(float((solution - reference).norm(dim=0).mean()))
    assert StochasticHeun.general_strong_order == 0.5
    assert 0.35 <= _slope(steps_list, errors) <= 0.65, errors


def test_integrate_returns_the_trajectory_and_is_differentiable():
    a = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def field(x, t):
        return SDECoefficients(drift=a * x, diffusion=0.1 * x)

    times = UniformSchedule().times(4, dtype=torch.float64)
    dw = brownian_increments(times, (3,), torch.Generator().manual_seed(0))
    x0 = torch.ones(3, dtype=torch.float64)
    solution = integrate(field, x0, times, dw, return_trajectory=True)
    assert solution.trajectory.shape == (5, 3)
    torch.testing.assert_close(solution.trajectory[0], x0)
    torch.testing.assert_close(solution.trajectory[-1], solution.final)
    solution.final.sum().backward()
    assert a.grad is not None and float(a.grad) > 0


def test_integrate_reports_shape_errors():
    times = UniformSchedule().times(2)
    x0 = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"diffusion has shape \(3,\) but the state has shape \(4, 3\)"):
        integrate(lambda x, t: SDECoefficients(x, x[0]), x0, times, torch.zeros(2, 4, 3))
    with pytest.raises(UserInputError, match=r"increments must be \[steps=2, \*state=\(4, 3\)\]"):
        integrate(lambda x, t: SDECoefficients(x, x), x0, times, torch.zeros(3, 4, 3))
    with pytest.raises(TypeError, match="must return SDECoefficients"):
        integrate(lambda x, t: (x, x), x0, times, torch.zeros(2, 4, 3))


def test_brownian_increments_are_seeded_scaled_and_coarsen_to_the_same_path():
    times = PowerSchedule(2.0).times(8, dtype=torch.float64)
    first = brownian_increments(times, (20000,), torch.Generator().manual_seed(3))
    again = brownian_increments(times, (20000,), torch.Generator().manual_seed(3))
    other = brownian_increments(times, (20000,), torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)
    h = torch.diff(times)
    # Var(dW_k) = h_k: the sample variance of 20000 draws is within 5% (4 standard errors: sqrt(2/20000) = 1%).
    torch.testing.assert_close(first.var(dim=1) / h, torch.ones(8, dtype=torch.float64), rtol=0, atol=0.05)
    coarse = coarsen_increments(first, 4)
    torch.testing.assert_close(coarse.sum(dim=0), first.sum(dim=0))
    torch.testing.assert_close(coarse[0], first[:4].sum(dim=0))
    with pytest.raises(UserInputError, match="divide the steps"):
        coarsen_increments(first, 3)


def test_schedules():
    uniform = UniformSchedule().times(4, dtype=torch.float64)
    torch.testing.assert_close(uniform, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    power = PowerSchedule(2.0).times(4, dtype=torch.float64)
    torch.testing.assert_close(power, uniform**2)
    assert bool((torch.diff(PowerSchedule(0.5).times(7)) > 0).all())
    with pytest.raises(UserInputError, match="at least 1 integration step"):
        UniformSchedule().times(0)
    with pytest.raises(UserInputError, match="power > 0"):
        PowerSchedule(0.0)
