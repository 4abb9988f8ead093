"""Baselines of the variance evaluation on tiny data: smoothing, filter tuning, regression, summary contract."""

import json

import numpy as np
import pytest

from hybrid_eda.evaluation import (
    BoostedRegression,
    IsotropicFilter,
    KernelSmoother,
    SpectralSmoother,
    default_estimators,
    evaluate_baselines,
    from_members,
    from_synthetic,
)
from hybrid_eda.evaluation.data import config_from_manifest
from hybrid_eda.synthetic import ObservationConfig, SyntheticEDAConfig, generate, make_grid
from hybrid_eda.synthetic.fields import SphericalTransform, gaussian_spectrum, random_alm

GRID = make_grid("O24")


def test_kernel_and_spectral_smoothers_agree_and_keep_constants():
    rng = np.random.default_rng(0)
    kernel, spectral = KernelSmoother(GRID.latitudes, GRID.longitudes, GRID.area_weights), SpectralSmoother(GRID)
    constant = np.full((GRID.npoints, 2), 3.0)
    np.testing.assert_allclose(kernel.smooth(constant, 800.0), 3.0, rtol=1e-12)
    np.testing.assert_allclose(spectral.smooth(constant, 800.0), 3.0, rtol=1e-6)
    field = np.exp(rng.standard_normal((2, GRID.npoints, 3)))  # [D, G, F]
    np.testing.assert_array_equal(kernel.smooth(field, 0.0), field)
    a, b = kernel.smooth(field, 1000.0), spectral.smooth(field, 1000.0)
    assert a.shape == field.shape and (a > 0).all()
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.05 * a.std()
    assert a.std() < 0.2 * field.std()  # white noise is smoothed away
    with pytest.raises(ValueError, match="grid points"):
        kernel.smooth(np.ones((10, 2)), 100.0)


def _members_with_sigma(length_km: float | None, dates: int, n: int, rng) -> np.ndarray:
    """``sigma [D, G, 1]`` with log-correlation length ``length_km`` (None: constant), and members around 0."""
    if length_km is None:
        log_sigma = np.zeros((dates, GRID.npoints))
    else:
        transform = SphericalTransform(GRID)
        spectrum = gaussian_spectrum(transform.lmax, length_km)
        log_sigma = 0.6 * transform.synthesis(random_alm(rng, spectrum, transform, (dates,)))
    sigma = np.exp(log_sigma)[..., None]  # [D, G, 1]
    return sigma[:, None] * rng.standard_normal((dates, n, GRID.npoints, 1)), sigma


def _tuned_length(length_km, rng) -> float:
    members, sigma = _members_with_sigma(length_km, 4, 20, rng)
    stats = from_members(members, 5, GRID.latitudes, GRID.longitudes, area_weights=GRID.area_weights)
    lengths = (0.0, 200.0, 400.0, 800.0, 1600.0, 3000.0)
    tuned = IsotropicFilter(lengths).fit(stats)
    return float(tuned.length_km_[0])


def test_filter_tuning_follows_the_correlation_length_of_sigma():
    rng = np.random.default_rng(1)
    # measured training curves: sigma correlated over 300 km -> 200 km, 5000 km -> 800 km, constant -> the longest
    rough, smooth, constant = _tuned_length(300.0, rng), _tuned_length(5000.0, rng), _tuned_length(None, rng)
    assert rough <= 400.0
    assert 800.0 <= smooth < 3000.0
    assert constant == 3000.0
    assert rough < smooth < constant


@pytest.fixture(scope="module")
def tiny_eda():
    common = dict(grid="O16", levels=2, members=12, variables=("t", "q"), start="2023-01-01T00", frequency_hours=6)
    common["observations"] = ObservationConfig(count=200)
    train = from_synthetic(SyntheticEDAConfig(end="2023-01-02T06", seed=1, **common), m=4)
    test = from_synthetic(SyntheticEDAConfig(end="2023-01-01T12", seed=2, **common), m=4)
    return train, test


def test_statistics_match_the_in_memory_generator(tiny_eda):
    _, test = tiny_eda
    config = SyntheticEDAConfig(
        grid="O16", levels=2, members=12, variables=("t", "q"), seed=2, observations=ObservationConfig(count=200)
    )
    sample = generate(config, 1)
    direct = from_members(
        sample.backgrounds[None], 4, sample.latitudes, sample.longitudes,
        variables=sample.variables, truth=sample.truth[None], sigma_b=sample.sigma_b[None],
    )  # fmt: skip
    np.testing.assert_allclose(test.s_m[1], direct.s_m[0], rtol=1e-12)
    np.testing.assert_allclose(test.s_n[1], direct.s_n[0], rtol=1e-12)
    np.testing.assert_allclose(test.error_of_mean[1], direct.error_of_mean[0], rtol=1e-9, atol=1e-15)
    assert test.variables == ("t_1", "t_2", "q_1", "q_2")
    assert test.groups == (1, 2, 1, 2)
    assert 0.0 < test.sharp.mean() < 0.5


def test_config_round_trips_through_the_manifest():
    config = SyntheticEDAConfig(grid="O24", levels=2, members=6, seed=4, variables=("t", "lnsp"))
    assert config_from_manifest({"config": config.to_dict()}) == config


def test_baselines_beat_raw_and_summary_has_the_contract_keys(tiny_eda):
    train, test = tiny_eda
    estimators = default_estimators(max_rows=20_000, max_iter=40, holdout=0.34)
    summary = evaluate_baselines(train, test, estimators).summary()
    json.dumps(summary)
    for key in ("nmse", "gap_closed", "improvement_over_filter", "coverage_90", "crps", "nll"):
        assert key in summary
    nmse = summary["nmse"]
    for name in ("raw", "rescaled", "filter", "regression", "regression_pooled", "floor", "emulator", "emulator_no_mp"):
        assert name in nmse
    assert nmse["emulator"] is None and summary["gap_closed"]["emulator"] is None
    assert nmse["floor"] < nmse["oracle_sigma"] < nmse["regression"] < nmse["raw"]
    assert nmse["filter"] < nmse["raw"]
    assert summary["gap_closed"]["floor"] == pytest.approx(1.0)
    assert summary["gap_closed"]["raw"] == 0.0
    assert 0.6 < summary["coverage_90"]["regression"]["overall"] <= 1.0
    assert set(summary["per_variable"]["nmse"]["raw"]) == {"t", "q"}
    assert set(summary["per_level"]["nmse"]["raw"]) == {"1", "2"}


def test_regression_refuses_a_split_it_cannot_make(tiny_eda):
    train, _ = tiny_eda
    with pytest.raises(ValueError, match="cannot be split"):
        BoostedRegression(holdout=0.01).fit(train.take_dates([0]))
