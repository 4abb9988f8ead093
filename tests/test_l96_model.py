"""Lorenz-96 dynamics: compiled kernels against the numpy reference, TL against finite differences, adjoint test."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_eda.l96.model import Lorenz96, rk4_step, rk4_step_ad, rk4_step_tl, tendency

MODEL = Lorenz96(n=40, forcing=8.0, dt=0.05)
SHAPES = {"single": (40,), "ensemble": (7, 40), "batch": (3, 5, 40)}


def _on_attractor(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return MODEL.forecast(MODEL.forcing + rng.standard_normal(shape), 200)


def test_rest_state_is_a_fixed_point_and_tendency_matches_the_equation() -> None:
    x = np.full(40, 8.0)
    np.testing.assert_allclose(MODEL.step(x), x, rtol=0, atol=1e-12)
    rng = np.random.default_rng(1)
    y = rng.standard_normal(6)
    i = 3
    expected = (y[i + 1] - y[i - 2]) * y[i - 1] - y[i] + 8.0  # the equation written out at one interior point
    assert tendency(y, 8.0)[i] == pytest.approx(expected)
    assert tendency(y, 8.0)[0] == pytest.approx((y[1] - y[4]) * y[5] - y[0] + 8.0)  # cyclic wrap


@pytest.mark.parametrize("kind", SHAPES)
def test_compiled_step_matches_numpy_reference(kind: str) -> None:
    x = _on_attractor(SHAPES[kind])
    np.testing.assert_allclose(MODEL.step(x), rk4_step(x, 0.05, 8.0), rtol=0, atol=1e-13)
    ref = x
    for _ in range(9):
        ref = rk4_step(ref, 0.05, 8.0)
    np.testing.assert_allclose(MODEL.forecast(x, 9), ref, rtol=0, atol=1e-11)
    assert MODEL.step(x).shape == x.shape


def test_trajectory_and_float32_fallback() -> None:
    x0 = _on_attractor((40,))
    traj = MODEL.trajectory(x0, 5)
    np.testing.assert_allclose(traj[-1], MODEL.forecast(x0, 5), atol=1e-12)
    np.testing.assert_allclose(traj[0], MODEL.step(x0), atol=1e-12)
    x32 = x0.astype(np.float32)
    np.testing.assert_allclose(MODEL.step(x32), rk4_step(x0, 0.05, 8.0), atol=1e-4)


def test_lyapunov_growth_is_chaotic() -> None:
    """Two nearby states separate: the leading Lyapunov exponent at F=8 is about 1.7 per time unit."""
    x = _on_attractor((40,))
    y = x + 1e-8 * np.random.default_rng(2).standard_normal(40)
    d0 = np.linalg.norm(y - x)
    d1 = np.linalg.norm(MODEL.forecast(y, 100) - MODEL.forecast(x, 100))  # 5 time units
    rate = np.log(d1 / d0) / 5.0
    assert 1.0 < rate < 2.5


@pytest.mark.parametrize("kind", SHAPES)
def test_tangent_linear_matches_finite_differences(kind: str) -> None:
    x = _on_attractor(SHAPES[kind])
    dx = np.random.default_rng(3).standard_normal(x.shape)
    x_next, dx_next = MODEL.step_tl(x, dx)
    np.testing.assert_allclose(x_next, rk4_step(x, 0.05, 8.0), atol=1e-13)
    for eps in (1e-4, 1e-5):
        fd = (MODEL.step(x + eps * dx) - MODEL.step(x - eps * dx)) / (2 * eps)
        err = np.max(np.abs(fd - dx_next)) / np.max(np.abs(dx_next))
        assert err < 1e-7  # central differences: O(eps^2) truncation, far below the size of a wrong term
    np.testing.assert_allclose(dx_next, rk4_step_tl(x, dx, 0.05, 8.0)[1], rtol=0, atol=1e-12)


def test_tangent_linear_with_several_perturbations_per_state() -> None:
    """The 4D-Var pattern: ``x [..., 1, n]`` with ``dx [..., J, n]`` (compiled path) equals numpy broadcasting."""
    x = _on_attractor((2, 3, 1, 40))
    dx = np.random.default_rng(4).standard_normal((2, 3, 6, 40))
    x_next, dx_next = MODEL.step_tl(x, dx)
    ref_x, ref_dx = rk4_step_tl(x, dx, 0.05, 8.0)
    assert x_next.shape == x.shape and dx_next.shape == dx.shape
    np.testing.assert_allclose(x_next, ref_x, atol=1e-13)
    np.testing.assert_allclose(dx_next, ref_dx, atol=1e-12)
    # A pattern without a compiled path still broadcasts through numpy.
    _, dx_b = MODEL.step_tl(x[0, 0, 0], dx)
    np.testing.assert_allclose(dx_b, rk4_step_tl(x[0, 0, 0], dx, 0.05, 8.0)[1], atol=1e-12)


@pytest.mark.parametrize("kind", SHAPES)
def test_adjoint_dot_product(kind: str) -> None:
    """<M dx, lam> == <dx, M^T lam> to rounding, for the compiled and the numpy adjoint."""
    x = _on_attractor(SHAPES[kind])
    rng = np.random.default_rng(5)
    dx = rng.standard_normal(x.shape)
    lam = rng.standard_normal(x.shape)
    _, mdx = MODEL.step_tl(x, dx)
    for mt_lam in (MODEL.step_ad(x, lam), rk4_step_ad(x, lam, 0.05, 8.0)):
        lhs = np.sum(mdx * lam, axis=-1)
        rhs = np.sum(dx * mt_lam, axis=-1)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    np.testing.assert_allclose(MODEL.step_ad(x, lam), rk4_step_ad(x, lam, 0.05, 8.0), atol=1e-12)


def test_adjoint_broadcasts_like_numpy() -> None:
    x = _on_attractor((40,))
    lam = np.random.default_rng(6).standard_normal((4, 40))
    np.testing.assert_allclose(MODEL.step_ad(x, lam), rk4_step_ad(x, lam, 0.05, 8.0), atol=1e-12)


def test_bad_input_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="at least 4 variables"):
        Lorenz96(n=3)
    with pytest.raises(ValueError, match="time step must be positive"):
        Lorenz96(dt=0.0)
    with pytest.raises(ValueError, match="last axis"):
        MODEL.step(np.zeros((20, 39)))
    with pytest.raises(ValueError, match="n_steps"):
        MODEL.forecast(np.zeros(40), -1)
