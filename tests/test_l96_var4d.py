"""The 4D-Var EDA: closed-form Kalman limit, adjoint gradient, Gauss-Newton convergence, skill, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_eda.l96.base import FilterDivergenceError
from hybrid_eda.l96.filters.climatology import Climatology
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.var4d import Var4DEDA

MODEL = Lorenz96(n=40, forcing=8.0, dt=0.05)


def _attractor_states(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """States on the attractor: ``shape + (n,)``."""
    return MODEL.forecast(MODEL.forcing + rng.standard_normal(shape + (MODEL.n,)), 300)


def _window_observations(obs: ObservationOperator, truth: np.ndarray, window: int, steps: int, rng) -> np.ndarray:
    """Observations ``[..., L, p]`` of ``truth [..., n]`` at ``l * steps`` model steps, ``l = 0 .. L-1``."""
    ys = [obs.sample(MODEL.forecast(truth, lead * steps), rng) for lead in range(window)]
    return np.stack(ys, axis=-2)


def _random_spd(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


@pytest.fixture(scope="module")
def climatology() -> np.ndarray:
    """Climatological covariance ``[n, n]`` of Lorenz-96 from a seeded free run."""
    return Climatology.from_free_run(MODEL, np.random.default_rng(2024)).cov


# ---------------------------------------------------------------------------------------------------------------
# (a) one observation time and a linear H: exactly the perturbed-observation Kalman update


@pytest.mark.parametrize("b_mode", ["ensemble", "static", "hybrid"])
def test_window_one_equals_perturbed_obs_kalman_update(b_mode):
    rng = np.random.default_rng(0)
    obs = ObservationOperator(n=MODEL.n, every=2, obs_std=0.7)
    n_batch, n_members, inflation, weight = 2, 6, 1.1, 0.3
    static_b = _random_spd(rng, MODEL.n)
    background = 8.0 + 2.0 * rng.standard_normal((n_batch, n_members, MODEL.n))  # [B, N, n]
    y = rng.standard_normal((n_batch, 1, obs.p))  # [B, L=1, p]
    da = Var4DEDA(
        MODEL,
        obs,
        window=1,
        inflation=inflation,
        b_mode=b_mode,
        static_b=static_b,
        hybrid_weight=weight,
        outer_loops=1,
    )
    perturbed = da.perturbed_observations(y, n_members, rng)  # [B, N, 1, p]
    analysis = da.minimise(background, perturbed).analysis

    # Independent reference: explicit B, K = B H^T (H B H^T + R)^-1, xa_i = xb_i + K (y + eps_i - H xb_i).
    mean = background.mean(axis=1, keepdims=True)
    xb = mean + inflation * (background - mean)
    anomalies = xb - mean
    b_ens = np.einsum("bin,bim->bnm", anomalies, anomalies) / (n_members - 1)
    b = {
        "ensemble": b_ens,
        "static": np.broadcast_to(static_b, b_ens.shape),
        "hybrid": (1 - weight) * static_b + weight * b_ens,
    }[b_mode]
    h = np.eye(MODEL.n)[obs.index]  # [p, n]
    gain = b @ h.T @ np.linalg.inv(h @ b @ h.T + obs.variance * np.eye(obs.p))  # [B, n, p]
    expected = xb + np.einsum("bnp,bip->bin", gain, perturbed[:, :, 0] - xb[..., obs.index])
    np.testing.assert_allclose(analysis, expected, rtol=0, atol=1e-10)

    # Centred perturbations: the analysis mean is the update of the background mean with the real observations.
    expected_mean = xb.mean(1) + np.einsum("bnp,bp->bn", gain, y[:, 0] - xb.mean(1)[..., obs.index])
    np.testing.assert_allclose(analysis.mean(1), expected_mean, rtol=0, atol=1e-10)


def test_perturbations_are_centred_with_variance_r():
    obs = ObservationOperator(n=MODEL.n, every=1, obs_std=0.5)
    da = Var4DEDA(MODEL, obs, window=3)
    y = np.zeros((3, obs.p))
    perturbed = da.perturbed_observations(y, 4000, np.random.default_rng(1))  # [N, L, p]
    assert perturbed.shape == (4000, 3, obs.p)
    np.testing.assert_allclose(perturbed.mean(axis=0), 0.0, atol=1e-12)
    assert abs(perturbed.var(axis=0, ddof=1).mean() / obs.variance - 1.0) < 0.01
    unperturbed = Var4DEDA(MODEL, obs, window=3, perturb=False).perturbed_observations(y + 1.0, 5, None)
    np.testing.assert_array_equal(unperturbed, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# (b) adjoint gradient = finite differences; (c) Gauss-Newton converges


@pytest.mark.parametrize("b_mode", ["ensemble", "hybrid"])
def test_adjoint_gradient_matches_finite_differences(b_mode):
    rng = np.random.default_rng(1)
    obs = ObservationOperator(n=MODEL.n, every=3, obs_std=1.0)
    n_members, window, steps = 5, 3, 2
    truth = _attractor_states(rng, (2,))  # [B, n]
    background = truth[:, None] + rng.standard_normal((2, n_members, MODEL.n))  # [B, N, n]
    da = Var4DEDA(
        MODEL, obs, window=window, steps_per_obs=steps, inflation=1.05, b_mode=b_mode, static_b=0.5 * np.eye(MODEL.n)
    )
    perturbed = da.perturbed_observations(_window_observations(obs, truth, window, steps, rng), n_members, rng)
    xb, ut = da.control_basis(background)
    v = 0.3 * rng.standard_normal(xb.shape[:-1] + ut.shape[-2:-1])  # [B, N, m]
    cost, grad = da.cost_and_gradient(v, xb, ut, perturbed)
    for _ in range(3):
        direction = rng.standard_normal(v.shape)
        h = 1e-5
        fd = (
            da.cost_and_gradient(v + h * direction, xb, ut, perturbed)[0]
            - da.cost_and_gradient(v - h * direction, xb, ut, perturbed)[0]
        ) / (2 * h)  # [B, N]
        np.testing.assert_allclose(np.sum(grad * direction, axis=-1), fd, rtol=1e-7)

    # The Gauss-Newton loop builds its gradient from the tangent-linear model: same cost and gradient at v = 0.
    result = da.minimise(background, perturbed)
    cost0, grad0 = da.cost_and_gradient(np.zeros_like(v), xb, ut, perturbed)
    np.testing.assert_allclose(result.cost[..., 0], cost0, rtol=1e-12)
    np.testing.assert_allclose(result.grad_norm[..., 0], np.linalg.norm(grad0, axis=-1), rtol=1e-10)


def test_gauss_newton_converges_on_short_window():
    rng = np.random.default_rng(3)
    obs = ObservationOperator(n=MODEL.n, every=2, obs_std=1.0)
    truth = _attractor_states(rng, (2,))
    background = truth[:, None] + 0.5 * rng.standard_normal((2, 8, MODEL.n))
    da = Var4DEDA(MODEL, obs, window=4, b_mode="static", static_b=0.25 * np.eye(MODEL.n), outer_loops=6)
    result = da.minimise(background, da.perturbed_observations(_window_observations(obs, truth, 4, 1, rng), 8, rng))
    assert result.cost.shape == result.grad_norm.shape == (2, 8, 7)
    assert np.all(np.diff(result.cost, axis=-1) <= 1e-9 * result.cost[..., :1])
    assert np.all(result.cost[..., 1] < 0.95 * result.cost[..., 0])
    assert np.all(result.grad_norm[..., -1] < 1e-4 * result.grad_norm[..., 0])  # linear rate ~0.15 per loop
    # analysis = background + U v with the returned control vector.
    xb, ut = da.control_basis(background)
    np.testing.assert_allclose(result.analysis, xb + result.control @ ut, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# (d) a long window uses the dynamics to correct unobserved variables


def test_long_window_beats_background_and_short_window():
    obs = ObservationOperator(n=MODEL.n, every=4, obs_std=1.0)  # 10 of 40 variables observed
    errors = {"background": [], 1: [], 6: []}
    for seed in range(4):
        rng = np.random.default_rng(seed)
        truth = _attractor_states(rng, ())
        background = truth + rng.standard_normal(MODEL.n) + rng.standard_normal((10, MODEL.n))  # [N, n]
        y = _window_observations(obs, truth, 6, 2, rng)  # [6, p]
        errors["background"].append(np.sqrt(np.mean((background.mean(0) - truth) ** 2)))
        for window in (1, 6):
            da = Var4DEDA(
                MODEL,
                obs,
                window=window,
                steps_per_obs=2,
                b_mode="hybrid",
                static_b=np.eye(MODEL.n),
                hybrid_weight=0.2,
                outer_loops=3,
            )
            analysis = da.analyse(background, y[:window], np.random.default_rng(100 + seed))
            errors[window].append(np.sqrt(np.mean((analysis.mean(0) - truth) ** 2)))
    mean_error = {key: float(np.mean(value)) for key, value in errors.items()}
    assert mean_error[6] < 0.85 * mean_error["background"], mean_error
    assert mean_error[6] < 0.95 * mean_error[1], mean_error


# ---------------------------------------------------------------------------------------------------------------
# (e) input checks


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0}, "window must be a positive integer"),
        ({"steps_per_obs": 0}, "steps_per_obs must be a positive integer"),
        ({"outer_loops": 1.5}, "outer_loops must be a positive integer"),
        ({"inflation": 0.9}, "inflation must be >= 1"),
        ({"b_mode": "climatology"}, "b_mode must be one of"),
        ({"b_mode": "static"}, "needs static_b"),
        ({"b_mode": "hybrid", "static_b": np.eye(5)}, r"\[n, n\] = \[40, 40\]"),
        ({"b_mode": "static", "static_b": np.triu(np.ones((40, 40)))}, "not symmetric"),
        ({"b_mode": "static", "static_b": -np.eye(40)}, "not positive definite"),
        ({"b_mode": "static", "static_b": np.full((40, 40), np.nan)}, "NaN or infinite"),
        ({"b_mode": "hybrid", "static_b": np.eye(40), "hybrid_weight": 1.5}, r"must lie in \[0, 1\]"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Var4DEDA(MODEL, ObservationOperator(n=40), **kwargs)


def test_mismatched_observation_operator_is_rejected():
    with pytest.raises(ValueError, match="same state size"):
        Var4DEDA(MODEL, ObservationOperator(n=20))


def test_bad_inputs_are_rejected():
    obs = ObservationOperator(n=40, every=2)
    da = Var4DEDA(MODEL, obs, window=2)
    rng = np.random.default_rng(0)
    good_y = np.zeros((3, 2, obs.p))
    with pytest.raises(ValueError, match="needs N >= 2 members"):
        da.analyse(np.zeros((3, 1, 40)), good_y, rng)
    with pytest.raises(ValueError, match="n=40"):
        da.analyse(np.zeros((3, 4, 20)), good_y, rng)
    with pytest.raises(ValueError, match="window=2 observation times"):
        da.analyse(np.zeros((3, 4, 40)), np.zeros((3, 1, obs.p)), rng)
    with pytest.raises(ValueError, match=r"p=20 observations"):
        da.analyse(np.zeros((3, 4, 40)), np.zeros((3, 2, 40)), rng)
    with pytest.raises(ValueError, match="same leading axes"):
        da.analyse(np.zeros((3, 4, 40)), np.zeros((2, 2, obs.p)), rng)
    with pytest.raises(ValueError, match=r"\[..., N, L, p\]"):
        da.minimise(np.zeros((3, 4, 40)), np.zeros((3, 2, obs.p)))
    with pytest.raises(FilterDivergenceError, match="diverged"):
        da.analyse(np.full((3, 4, 40), np.nan), good_y, rng)


def test_single_member_static_b_is_deterministic_4dvar():
    rng = np.random.default_rng(5)
    obs = ObservationOperator(n=40, every=2)
    truth = _attractor_states(rng, ())
    y = _window_observations(obs, truth, 3, 1, rng)
    background = (truth + rng.standard_normal(40))[None]  # [N=1, n]
    da = Var4DEDA(MODEL, obs, window=3, b_mode="static", static_b=np.eye(40), outer_loops=3)
    first = da.analyse(background, y, np.random.default_rng(0))
    second = da.analyse(background, y, np.random.default_rng(1))
    np.testing.assert_array_equal(first, second)  # no observation perturbation for a single member
    assert np.sqrt(np.mean((first[0] - truth) ** 2)) < np.sqrt(np.mean((background[0] - truth) ** 2))


# ---------------------------------------------------------------------------------------------------------------
# (f) cycling in the Sakov & Oke (2008) setting: 40 variables, F=8, dt=0.05, all observed every step, R=I


def _cycle(da: Var4DEDA, n_members: int, cycles: int, seed: int) -> np.ndarray:
    """Cycle ``da`` in a twin experiment; returns the analysis-mean RMSE of every cycle ``[cycles]``."""
    rng = np.random.default_rng(seed)
    truth = _attractor_states(rng, ())
    ensemble = truth + rng.standard_normal((n_members, MODEL.n))  # [N, n]
    lead = da.window * da.steps_per_obs
    rmse = np.empty(cycles)
    for cycle in range(cycles):
        y = _window_observations(da.obs, truth, da.window, da.steps_per_obs, rng)  # [L, p]
        analysis = da.analyse(ensemble, y, rng)
        rmse[cycle] = np.sqrt(np.mean((analysis.mean(0) - truth) ** 2))
        ensemble = MODEL.forecast(analysis, lead)
        truth = MODEL.forecast(truth, lead)
    return rmse


@pytest.mark.slow
@pytest.mark.parametrize(
    ("b_mode", "inflation", "threshold"),
    [("ensemble", 1.5, 0.45), ("hybrid", 1.0, 0.42)],  # measured 0.28 and 0.37 (seed 7)
)
def test_sakov2008_cycling_beats_observations(climatology, b_mode, inflation, threshold):
    obs = ObservationOperator(n=40, every=1, obs_std=1.0)
    static_b = 0.05 * climatology if b_mode == "hybrid" else None  # DAPPER's Var3D uses 0.02-0.1 x climatology
    da = Var4DEDA(MODEL, obs, window=2, inflation=inflation, b_mode=b_mode, static_b=static_b, hybrid_weight=0.5)
    rmse = _cycle(da, n_members=20, cycles=300, seed=7)
    assert np.all(np.isfinite(rmse))
    assert rmse[100:].mean() < threshold, rmse[100:].mean()
