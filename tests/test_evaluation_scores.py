"""Scores of s_N estimates: normalisation, gap arithmetic, closed-form CRPS/NLL, coverage and PIT."""

import numpy as np
import pytest
from scipy import integrate, stats

from hybrid_eda.evaluation.probabilistic import ParametricPrediction, crps_lognormal, crps_normal
from hybrid_eda.evaluation.scores import (
    coverage,
    field_rms,
    gap_closed,
    improvement_over_filter,
    nmse,
    pit_histogram,
    probabilistic_scores,
)


def test_gap_closed_and_improvement_arithmetic():
    assert gap_closed(0.110, 0.110, 0.0092) == 0.0
    assert gap_closed(0.110, 0.0092, 0.0092) == pytest.approx(1.0)
    assert gap_closed(0.110, 0.075, 0.0092) == pytest.approx((0.110 - 0.075) / (0.110 - 0.0092))
    np.testing.assert_allclose(gap_closed(1.0, np.array([1.0, 0.5]), 0.0), [0.0, 0.5])
    assert improvement_over_filter(0.0375, 0.075) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="exceed"):
        gap_closed(0.01, 0.02, 0.05)


def test_nmse_is_per_field_and_normalised_by_mean_square_target():
    s_n = np.ones((2, 3, 2))
    s_n[..., 1] = 10.0
    estimate = s_n * 1.1
    np.testing.assert_allclose(nmse(estimate, s_n), [0.01, 0.01])
    weights = np.array([1.0, 0.0, 0.0])
    estimate[:, 1:, :] = 0.0  # ignored with zero weight
    np.testing.assert_allclose(nmse(estimate, s_n, weights), [0.01, 0.01])
    np.testing.assert_allclose(field_rms(s_n), [1.0, 10.0])
    with pytest.raises(ValueError, match="date, grid, field"):
        nmse(np.ones((2, 3)), np.ones((2, 3)))


@pytest.mark.parametrize("family", ["normal", "lognormal"])
def test_closed_forms_against_numerical_integrals_and_scipy(family):
    loc, scale = (1.0, 0.3) if family == "normal" else (0.2, 0.4)
    dist = ParametricPrediction(family, np.array([loc]), np.array([scale]))
    frozen = stats.norm(loc, scale) if family == "normal" else stats.lognorm(s=scale, scale=np.exp(loc))
    for y in (0.5, 1.0, 1.7):
        lo = -np.inf if family == "normal" else 0.0
        below, _ = integrate.quad(lambda x: frozen.cdf(x) ** 2, lo, y)
        above, _ = integrate.quad(lambda x: (1.0 - frozen.cdf(x)) ** 2, y, np.inf)
        assert dist.crps(np.array([y]))[0] == pytest.approx(below + above, rel=1e-6)
        assert dist.log_prob(np.array([y]))[0] == pytest.approx(frozen.logpdf(y), rel=1e-10)
        assert dist.cdf(np.array([y]))[0] == pytest.approx(frozen.cdf(y), rel=1e-10)
    assert dist.quantile(0.95)[0] == pytest.approx(frozen.ppf(0.95), rel=1e-10)
    assert dist.mean()[0] == pytest.approx(frozen.mean(), rel=1e-10)
    assert crps_normal(np.array([1.0]), 1.0, 1.0)[0] == pytest.approx((np.sqrt(2) - 1) / np.sqrt(np.pi))
    assert np.isfinite(crps_lognormal(np.array([1e-8]), 0.0, 1.0)).all()


def test_calibrated_lognormal_covers_90_percent_and_has_a_flat_pit():
    rng = np.random.default_rng(0)
    shape = (4, 5000, 3)
    loc, scale = rng.normal(-2.0, 0.5, shape), rng.uniform(0.1, 0.4, shape)
    y = np.exp(loc + scale * rng.standard_normal(shape))
    dist = ParametricPrediction("lognormal", loc, scale)
    sharp = rng.random(shape) < 0.2
    scores = probabilistic_scores(dist, y, sharp=sharp)
    np.testing.assert_allclose(scores["coverage"], 0.9, atol=0.01)
    np.testing.assert_allclose(scores["coverage_sharp"], 0.9, atol=0.02)
    np.testing.assert_allclose(scores["pit"], 1.0, atol=0.05)
    assert scores["crps"].shape == scores["nll"].shape == (3,)
    # a too-narrow distribution under-covers and has a U-shaped PIT
    narrow = probabilistic_scores(ParametricPrediction("lognormal", loc, scale / 2), y)
    assert (narrow["coverage"] < 0.7).all()
    assert narrow["pit"][0] > 1.5 and narrow["pit"][-1] > 1.5
    assert coverage(np.zeros(shape), np.full(shape, np.inf), y).tolist() == [1.0, 1.0, 1.0]
    assert pit_histogram(np.array([0.05, 0.95]), bins=2).tolist() == [1.0, 1.0]


def test_nll_and_crps_are_unit_free():
    rng = np.random.default_rng(1)
    shape = (2, 300, 1)
    loc, scale = rng.normal(0.0, 0.3, shape), np.full(shape, 0.2)
    y = np.exp(loc + 0.2 * rng.standard_normal(shape))
    base = probabilistic_scores(ParametricPrediction("lognormal", loc, scale), y)
    scaled = probabilistic_scores(ParametricPrediction("lognormal", loc + np.log(1e-5), scale), y * 1e-5)
    np.testing.assert_allclose(scaled["nll"], base["nll"], rtol=1e-9)
    np.testing.assert_allclose(scaled["crps"], base["crps"], rtol=1e-9)


def test_parametric_prediction_rejects_bad_input():
    with pytest.raises(ValueError, match="family"):
        ParametricPrediction("gamma", np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="positive"):
        ParametricPrediction("normal", np.zeros(2), np.zeros(2))
