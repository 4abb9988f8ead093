"""The synthetic EDA: known statistics, spatial correlation, exact analysis, reproducibility, plausible values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hybrid_eda.synthetic import ErrorConfig, ObservationConfig, SyntheticEDAConfig, generate
from hybrid_eda.synthetic.analysis import perturbed_obs_update, unit_vectors
from hybrid_eda.synthetic.eda import SyntheticEDA
from hybrid_eda.synthetic.fields import SphericalTransform, correlation_function, gaussian_spectrum, random_alm
from hybrid_eda.synthetic.grids import make_grid

SMALL = SyntheticEDAConfig(grid="O32", levels=3, members=4, observations=ObservationConfig(count=300))


@pytest.fixture(scope="module")
def sample():
    return generate(SMALL)


@pytest.fixture(scope="module")
def large_ensemble():
    """One level of t on O32 with 100 members (the statistics tests)."""
    config = dataclasses.replace(SMALL, levels=1, members=100, variables=("t",))
    eda = SyntheticEDA(config)
    block = next(eda.fields(eda.state(0)))
    return eda, block


def test_shapes_and_names(sample):
    n, g = SMALL.members, 5248
    f = 5 * SMALL.levels + 1  # lnsp on level 1 only
    assert sample.variables[:4] == ("vo_1", "vo_2", "vo_3", "d_1")
    assert "lnsp_1" in sample.variables and "lnsp_2" not in sample.variables
    assert sample.truth.shape == sample.sigma_b.shape == (g, f)
    assert sample.backgrounds.shape == sample.analyses.shape == (n, g, f)
    assert sample.observations.shape == sample.obs_std.shape == (300, f)
    assert np.all(sample.sigma_b > 0) and np.all(np.isfinite(sample.analyses))


def test_plausible_magnitudes(sample):
    column = dict(zip(sample.variables, sample.truth.T, strict=True))
    assert 150 < column["t_3"].min() and column["t_3"].max() < 330  # K
    assert 10.9 < column["lnsp_1"].min() and column["lnsp_1"].max() < 11.7  # ln(Pa): ~550 to ~1200 hPa
    assert np.all(column["q_3"] > 0) and column["q_3"].max() < 0.04  # kg/kg
    assert np.all(column["o3_2"] > 0) and column["o3_2"].max() < 5e-5
    assert 1e-5 < column["vo_3"].std() < 2e-4  # s**-1
    assert 0.1 < np.median(sample.sigma_b[:, sample.variables.index("t_3")]) < 3  # K
    # the humid, positive variables stay positive in (almost) every member
    q = sample.backgrounds[..., sample.variables.index("q_3")]
    assert np.mean(q < 0) < 1e-3


def test_sample_variance_converges_to_sigma_b(large_ensemble):
    """Area mean of s^2 / sigma_b^2 is 1 within 4 standard deviations.

    For Gaussian members with unit-variance errors u = (x_b - x_t) / sigma_b, Cov(s_x^2, s_y^2) =
    2 rho_xy^2 / (N - 1), so the area mean m of s^2 has Var(m) = 2 / (N - 1) * iint rho^2 / (4 pi)^2
    = 2 / (N - 1) * sum_l (2l + 1) C_l^2 / (4 pi)^2 (addition theorem, C_l the correlation spectrum).
    """
    eda, block = large_ensemble
    n = eda.config.members
    ratio = np.var(block.backgrounds, axis=0, ddof=1) / block.sigma_b**2  # [G]
    spectrum = eda.error_spectra["t"]
    ell = np.arange(spectrum.size)
    sd = np.sqrt(2 / (n - 1) * np.sum((2 * ell + 1) * spectrum**2) / (4 * np.pi) ** 2)
    assert 0.001 < sd < 0.05  # the tolerance is meaningful: a 10% error in sigma_b is 20% in variance
    assert abs(eda.grid.area_mean(ratio) - 1) < 4 * sd
    # pointwise: |s^2 / sigma^2 - 1| beyond 5 single-point standard deviations almost nowhere
    assert np.mean(np.abs(ratio - 1) > 5 * np.sqrt(2 / (n - 1))) < 0.01


def test_background_errors_are_spatially_correlated(large_ensemble):
    """Neighbours on a ring correlate as the Legendre series predicts; members give the standard error."""
    eda, block = large_ensemble
    grid = eda.grid
    u = (block.backgrounds - block.truth) / block.sigma_b  # [N, G] unit-variance errors
    ring = np.repeat(np.arange(2 * grid.n), grid.pl)
    neighbour = np.arange(grid.npoints) + 1
    same_ring = np.append(ring[1:] == ring[:-1], False)
    left, right = np.flatnonzero(same_ring), neighbour[same_ring]
    points = unit_vectors(grid.latitudes, grid.longitudes)
    cos_gamma = np.sum(points[left] * points[right], axis=1)
    expected = correlation_function(eda.error_spectra["t"], cos_gamma).mean()
    per_member = np.mean(u[:, left] * u[:, right], axis=1)  # [N] i.i.d. across members
    assert 0.5 < expected < 0.95
    assert abs(per_member.mean() - expected) < 5 * per_member.std(ddof=1) / np.sqrt(len(per_member))
    # points a quarter of the globe apart are uncorrelated
    far = np.mean(u[:, : grid.npoints // 2] * u[:, grid.npoints // 2 :], axis=1)
    assert abs(far.mean()) < 5 * far.std(ddof=1) / np.sqrt(len(far)) + 0.02


def test_analysis_is_closer_to_truth_where_observed(sample):
    obs = sample.obs_index
    for j, name in enumerate(sample.variables):
        truth = sample.truth[:, j]
        background = np.mean((sample.backgrounds[:, obs, j] - truth[obs]) ** 2)
        analysis = np.mean((sample.analyses[:, obs, j] - truth[obs]) ** 2)
        assert analysis < 0.8 * background, name


def test_update_equals_dense_kalman_gain():
    """perturbed_obs_update equals x_b + B H^T (H B H^T + R)^-1 (y + eps_i - H x_b) with dense matrices."""
    rng = np.random.default_rng(5)
    transform = SphericalTransform(make_grid("O8"))
    grid = transform.grid
    spectrum = gaussian_spectrum(transform.lmax, 1200.0)
    points = unit_vectors(grid.latitudes, grid.longitudes)
    correlation = correlation_function(spectrum, points @ points.T)  # [G, G]
    sigma_b = np.exp(0.3 * rng.standard_normal(grid.npoints))
    b_matrix = sigma_b[:, None] * correlation * sigma_b[None, :]
    obs_index = np.sort(rng.choice(grid.npoints, 40, replace=False))
    obs_std = 0.5 + rng.uniform(size=40)
    errors = sigma_b * transform.synthesis(random_alm(rng, spectrum, transform, (3,)))  # [N, G]
    obs_error = obs_std * rng.standard_normal(40)
    perturbations = obs_std * rng.standard_normal((3, 40))
    got = perturbed_obs_update(
        transform, spectrum, correlation[np.ix_(obs_index, obs_index)], obs_index, sigma_b, obs_std, errors,
        obs_error, perturbations,
    )  # fmt: skip
    bht = b_matrix[:, obs_index]  # [G, p]
    s_matrix = b_matrix[np.ix_(obs_index, obs_index)] + np.diag(obs_std**2)
    innovations = obs_error + perturbations - errors[:, obs_index]  # [N, p]
    expected = errors + np.linalg.solve(s_matrix, innovations.T).T @ bht.T
    assert np.abs(got - expected).max() < 1e-9 * np.abs(expected).max()


def test_seed_reproducibility_and_member_independence(sample):
    again = generate(SMALL)
    assert np.array_equal(again.backgrounds, sample.backgrounds)
    assert np.array_equal(again.analyses, sample.analyses)
    other = generate(dataclasses.replace(SMALL, seed=1))
    assert not np.allclose(other.truth, sample.truth)
    # member i does not depend on N, nor the truth on the variable subset
    fewer = generate(dataclasses.replace(SMALL, members=2, variables=("t", "q")))
    columns = [sample.variables.index(v) for v in fewer.variables]
    assert np.array_equal(fewer.truth, sample.truth[:, columns])
    assert np.array_equal(fewer.backgrounds, sample.backgrounds[:2][..., columns])
    assert np.array_equal(fewer.analyses, sample.analyses[:2][..., columns])


def test_truth_evolves_smoothly_in_time():
    config = dataclasses.replace(SMALL, levels=1, members=2, variables=("t",), end="2023-01-03T00")
    eda = SyntheticEDA(config)
    states = list(eda.states())
    anomalies = [eda.truth_and_sigma(s, "t", 1)[0] - eda.reference("t", 1) for s in states]
    six_hours = np.corrcoef(anomalies[0], anomalies[1])[0, 1]
    two_days = np.corrcoef(anomalies[0], anomalies[-1])[0, 1]
    assert 0.7 < six_hours < 0.999 and two_days < six_hours
    # random access to a date equals the sequential integration
    assert np.array_equal(eda.state(5).flow["t"], states[5].flow["t"])


def test_sigma_b_structure():
    """sigma_b = profile x large-scale x fronts x latent; switching parts off leaves exactly the rest."""
    plain = ErrorConfig(hemispheric_contrast=0, polar_boost=0, front_factor=1, latent_amplitude=0)
    config = dataclasses.replace(SMALL, levels=2, variables=("t",), errors=plain)
    eda = SyntheticEDA(config)
    state = eda.state(0)
    _, flat = eda.truth_and_sigma(state, "t", 2)
    assert np.allclose(flat, flat[0])  # only the vertical profile is left
    full = SyntheticEDA(dataclasses.replace(config, errors=ErrorConfig()))
    _, sigma = full.truth_and_sigma(state, "t", 2)
    no_latent = SyntheticEDA(dataclasses.replace(config, errors=ErrorConfig(latent_amplitude=0)))
    _, sigma_flow = no_latent.truth_and_sigma(state, "t", 2)
    latent = full.latent_weights[1] @ state.latent
    assert np.allclose(np.log(sigma / sigma_flow), ErrorConfig().latent_amplitude * latent)
    # the flow part: fronts cover a small area and raise sigma_b by up to front_factor there
    ratio = sigma_flow / flat[0] / np.exp(full.error_model.large_scale())
    assert ratio.min() >= 1 - 1e-12 and ratio.max() <= ErrorConfig().front_factor + 1e-12
    assert 0.01 < np.mean(ratio > 1.5) < 0.25


def test_without_observations_the_analysis_is_the_background():
    config = dataclasses.replace(SMALL, levels=1, members=2, variables=("t",), observations=ObservationConfig(count=0))
    sample = generate(config)
    assert sample.observations.shape == (0, 1)
    assert np.array_equal(sample.analyses, sample.backgrounds)
