"""Spherical-harmonic machinery: exact synthesis, exact adjoint, covariance operator, spectra, time evolution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import sph_harm_y

from hybrid_eda.synthetic.analysis import unit_vectors
from hybrid_eda.synthetic.fields import (
    SpectralOU,
    SphericalTransform,
    correlation_function,
    correlation_table,
    gaussian_spectrum,
    power_law_spectrum,
    random_alm,
    vertical_mode_weights,
)
from hybrid_eda.synthetic.grids import make_grid


@pytest.fixture(scope="module")
def o8():
    return SphericalTransform(make_grid("O8"))  # 544 points, lmax 15, rings of 20 points near the poles


def test_synthesis_is_exact_evaluation_even_on_short_rings(o8):
    """One coefficient (l=13, m=12) evaluates to 2 Re(a Y_lm) at every point, rings of 20 points included."""
    grid = o8.grid
    alm = np.zeros(o8.nalm, complex)
    alm[(o8.ell == 13) & (o8.em == 12)] = 0.3 + 0.7j
    theta, phi = np.radians(90 - grid.latitudes), np.radians(grid.longitudes)
    expected = 2 * np.real((0.3 + 0.7j) * sph_harm_y(13, 12, theta, phi))
    assert np.abs(o8.synthesis(alm) - expected).max() < 1e-12


def test_adjoint_synthesis_is_the_adjoint(o8):
    rng = np.random.default_rng(0)
    alm = random_alm(rng, np.ones(o8.lmax + 1), o8)
    values = rng.standard_normal(o8.grid.npoints)
    lhs = values @ o8.synthesis(alm)
    # real inner product of the coefficient vectors: m > 0 entries stand for +m and -m
    weight = np.where(o8.em == 0, 1.0, 2.0)
    rhs = np.sum(weight * np.real(alm * np.conj(o8.adjoint_synthesis(values))))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_covariance_operator_equals_legendre_series(o8):
    """C v = synthesis(C_l adjoint_synthesis(v)) equals the dense matrix sum_l (2l+1)/4pi C_l P_l(cos gamma)."""
    spectrum = gaussian_spectrum(o8.lmax, 1500.0)
    points = unit_vectors(o8.grid.latitudes, o8.grid.longitudes)
    dense = correlation_function(spectrum, points @ points.T)  # [G, G]
    assert np.allclose(np.diag(dense), 1.0)  # unit variance
    v = np.random.default_rng(1).standard_normal((3, o8.grid.npoints))
    assert np.abs(o8.apply_spectrum(v, spectrum) - v @ dense).max() < 1e-12 * np.abs(v @ dense).max() * 100


def test_correlation_table_matches_legendre_series():
    spectrum = gaussian_spectrum(159, 315.0)
    gamma = np.concatenate([np.linspace(0, 1e-3, 11), np.random.default_rng(2).uniform(0, np.pi, 10_000)])
    assert np.abs(correlation_table(spectrum)(gamma) - correlation_function(spectrum, np.cos(gamma))).max() < 1e-9


@pytest.mark.parametrize("spectrum", [gaussian_spectrum(63, 450.0), power_law_spectrum(63, 6.0, 3.0)])
def test_spectra_have_unit_point_variance(spectrum):
    ell = np.arange(spectrum.size)
    assert np.sum((2 * ell + 1) * spectrum) / (4 * np.pi) == pytest.approx(1.0)
    assert correlation_function(spectrum, np.array(1.0)) == pytest.approx(1.0)


def test_gaussian_spectrum_correlation_length():
    """exp(-l(l+1) L^2 / 2a^2) gives correlation ~ exp(-d^2 / 2L^2) at distance d = L."""
    spectrum = gaussian_spectrum(255, 500.0)
    gamma = 500.0 / 6371.0
    assert correlation_function(spectrum, np.cos(gamma)) == pytest.approx(np.exp(-0.5), abs=0.02)


def test_random_fields_have_the_spectrum_variance(o8):
    """Sample variance of 4000 draws is 1 at every point within 5 standard errors (sqrt(2/n))."""
    spectrum = gaussian_spectrum(o8.lmax, 1500.0)
    fields = o8.synthesis(random_alm(np.random.default_rng(3), spectrum, o8, (4000,)))  # [n, G]
    variance = np.mean(fields**2, axis=0)
    assert np.abs(variance - 1).max() < 5 * np.sqrt(2 / 4000)


def test_ornstein_uhlenbeck_step_is_stationary_and_correlated(o8):
    """A step keeps the variance at 1 and correlates consecutive states (memory exp(-dt/tau) at large scales)."""
    rng = np.random.default_rng(4)
    process = SpectralOU(o8, power_law_spectrum(o8.lmax, 4.0, 5.0), decorrelation_hours=72.0)
    state = process.initial(rng, (3000,))
    later = process.step(state, rng, 6.0)
    a, b = o8.synthesis(state), o8.synthesis(later)  # [n, G]
    assert np.abs(np.mean(b**2, axis=0) - 1).max() < 5 * np.sqrt(2 / 3000)
    lag_correlation = np.mean(a * b)
    assert 0.6 < lag_correlation < 0.98


def test_vertical_mode_weights_unit_norm_and_smooth():
    weights = vertical_mode_weights(20, 4)  # [L, K]
    assert np.allclose(np.linalg.norm(weights, axis=1), 1.0)
    correlation = weights @ weights.T  # between levels
    assert correlation[0, 1] > correlation[0, 10] and correlation[0, 1] > 0.9
