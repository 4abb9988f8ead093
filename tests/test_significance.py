"""Significance of score changes (AR(1) effective sample size, Sidak level, normalised change and its interval)
against analytic results and Monte Carlo coverage, and the impact figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.signal import lfilter

from hybrid_eda.evaluation.impact_figure import impact_figure
from hybrid_eda.evaluation.significance import (
    effective_sample_size,
    iid_half_width,
    lag1_autocorrelation,
    normalised_change,
    sidak_level,
)


def ar1(phi: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) series ``x_t = phi x_{t-1} + e_t`` (unit innovations) along the last axis."""
    e = rng.standard_normal(shape)
    e[..., 0] /= np.sqrt(1.0 - phi**2)  # start in the stationary distribution
    return lfilter([1.0], [1.0, -phi], e, axis=-1)


@pytest.mark.parametrize("phi", [0.0, 0.3, 0.6, 0.9])
def test_effective_sample_size_of_ar1_series_is_analytic(phi):
    n = 100_000
    x = ar1(phi, (3, n), np.random.default_rng(1))
    expected = n * (1 - phi) / (1 + phi)
    np.testing.assert_allclose(effective_sample_size(x), expected, rtol=0.05 if phi < 0.9 else 0.1)
    np.testing.assert_allclose(lag1_autocorrelation(x), phi, atol=0.01)
    # the cycle axis can be any axis
    np.testing.assert_allclose(effective_sample_size(x.T, axis=0), effective_sample_size(x))


def test_effective_sample_size_is_clipped_to_two_and_n():
    n = 50
    alternating = np.tile([1.0, -1.0], n // 2)  # r1 = -1: not more than n samples
    assert effective_sample_size(alternating) == n
    ramp = np.linspace(0, 1, n)  # r1 ~ 1: at least 2 (one degree of freedom)
    assert 2.0 <= effective_sample_size(ramp) < 3.0
    assert effective_sample_size(np.ones(n)) == n  # no variability: r1 taken as 0


def test_sidak_level_closed_form():
    assert sidak_level(0.05, 1) == pytest.approx(0.05)
    assert sidak_level(0.05, 20) == pytest.approx(0.0025613, abs=1e-7)
    for alpha, k in [(0.05, 20), (0.1, 7), (0.01, 3)]:
        assert (1 - sidak_level(alpha, k)) ** k == pytest.approx(1 - alpha)  # k independent tests hold together
    with pytest.raises(ValueError, match="whole number of tests"):
        sidak_level(0.05, 0)
    with pytest.raises(ValueError, match=r"level in \(0, 1\)"):
        sidak_level(1.5, 3)


def test_ar1_interval_covers_95_percent_where_the_iid_interval_under_covers():
    """2000 replicates of paired AR(1) differences (phi = 0.6, 500 cycles) with true mean 0."""
    rng = np.random.default_rng(7)
    d = ar1(0.6, (2000, 500), rng)
    reference = 10.0 + 0.1 * rng.standard_normal(d.shape)
    result = normalised_change(reference + d, reference)
    assert result.change.shape == (2000,) and result.level == pytest.approx(0.05)
    covered = np.mean(np.abs(result.change) <= result.half_width)
    covered_iid = np.mean(np.abs(result.change) <= iid_half_width(reference + d, reference))
    # measured (seed 7): 0.947 and 0.677 (the iid interval is too narrow by sqrt((1+phi)/(1-phi)) = 2)
    assert 0.935 <= covered <= 0.965, covered
    assert covered_iid < 0.75, covered_iid
    assert np.mean(result.significant) == pytest.approx(1 - covered)  # significant <=> interval excludes 0
    np.testing.assert_allclose(np.median(result.ess), 500 * 0.4 / 1.6, rtol=0.05)


def test_a_real_change_is_significant_and_normalised_by_the_reference():
    rng = np.random.default_rng(3)
    reference = 2.0 + 0.1 * ar1(0.5, (400,), rng)
    scores = reference * 1.05 + 0.02 * rng.standard_normal(400)
    result = normalised_change(scores, reference, n_tests=20)
    assert result.change == pytest.approx((scores.mean() - reference.mean()) / reference.mean())
    assert result.change == pytest.approx(0.05, abs=0.005) and bool(result.significant)
    assert result.level == pytest.approx(sidak_level(0.05, 20))
    # Sidak widens the interval: the t-quantile at 1 - level/2 instead of 0.975
    assert result.half_width > normalised_change(scores, reference).half_width
    same = normalised_change(reference, reference)
    assert same.change == 0 and same.p_value == 1 and not same.significant
    json.dumps(result.to_dict())  # JSON-ready


def test_leading_axes_are_independent_tests():
    rng = np.random.default_rng(4)
    reference = 1.0 + 0.1 * rng.standard_normal((3, 2, 200))  # [variable, lead, cycle]
    scores = reference + 0.05 * ar1(0.4, (3, 2, 200), rng)
    result = normalised_change(scores, reference, n_tests=6)
    assert result.change.shape == result.half_width.shape == result.significant.shape == (3, 2)
    one = normalised_change(scores[2, 1], reference[2, 1], n_tests=6)
    assert result.change[2, 1] == pytest.approx(one.change)
    assert result.half_width[2, 1] == pytest.approx(one.half_width)
    moved = normalised_change(np.moveaxis(scores, -1, 0), np.moveaxis(reference, -1, 0), n_tests=6, axis=0)
    np.testing.assert_allclose(moved.half_width, result.half_width)


def test_seeds_pool_without_correlation_across_seed_boundaries():
    rng = np.random.default_rng(5)
    seeds, n, phi = 8, 60, 0.6
    d = ar1(phi, (seeds, n), rng) + np.linspace(0, 3, seeds)[:, None]  # seed offsets: jumps at the boundaries
    reference = np.full((seeds, n), 5.0)
    pooled = normalised_change(reference + d, reference, seed_axis=0)
    assert pooled.seeds == seeds and pooled.cycles == n and pooled.change.shape == ()
    # loop reference: grand mean, lag-1 products only within a seed
    a = d - d.mean()
    r1 = sum(np.dot(a[s, 1:], a[s, :-1]) for s in range(seeds)) / np.sum(a**2)
    assert pooled.r1 == pytest.approx(r1)
    assert pooled.ess == pytest.approx(seeds * n * (1 - r1) / (1 + r1))
    # the seed order does not matter (no product across a boundary); concatenating the seeds would add them
    shuffled = normalised_change(reference + d[::-1], reference, seed_axis=0)
    assert shuffled.ess == pytest.approx(pooled.ess)
    concatenated = lag1_autocorrelation(d.reshape(-1))
    assert concatenated != pytest.approx(r1)
    # independent seeds add effective samples: ~ S n (1 - phi) / (1 + phi) for long seeds
    long = ar1(phi, (4, 20_000), rng)
    assert effective_sample_size(long, seed_axis=0) == pytest.approx(4 * 20_000 * 0.25, rel=0.05)


def test_pooled_seeds_interval_covers():
    rng = np.random.default_rng(6)
    d = ar1(0.5, (1000, 6, 80), rng)  # [replicate, seed, cycle]
    reference = np.full(d.shape, 3.0)
    result = normalised_change(reference + d, reference, seed_axis=1)
    assert result.change.shape == (1000,)
    assert 0.925 <= np.mean(np.abs(result.change) <= result.half_width) <= 0.975  # measured 0.949 (iid: 0.755)


def test_input_errors_name_the_problem_and_the_fix():
    reference = np.ones((4, 10))
    scores = reference.copy()
    scores[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"lost track.*scores\[keep\], reference\[keep\]"):
        normalised_change(scores, reference, seed_axis=0)
    with pytest.raises(ValueError, match="must be paired"):
        normalised_change(np.ones((4, 9)), reference)
    with pytest.raises(ValueError, match="at least 3 are needed"):
        normalised_change(np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="positive reference"):
        normalised_change(reference, -reference)
    with pytest.raises(ValueError, match="their own axes"):
        normalised_change(reference, reference, seed_axis=-1)
    with pytest.raises(ValueError, match="at least 3 are needed"):
        effective_sample_size(np.ones(2))


def test_impact_figure_has_one_panel_per_row_and_writes_a_png(tmp_path):
    rng = np.random.default_rng(8)
    reference = 1.0 + 0.1 * rng.standard_normal((3, 4, 100))  # [row, lead, cycle]
    changes = {
        "raw M=5": normalised_change(reference * 1.1, reference, n_tests=12),
        "emulator": normalised_change(reference + 0.01 * rng.standard_normal(reference.shape), reference, n_tests=12),
    }
    assert changes["raw M=5"].significant.all()
    path = tmp_path / "figs" / "impact.png"
    rows = ["analysis RMSE", "forecast RMSE, x", "forecast RMSE, y"]
    fig = impact_figure(changes, leads=[0, 1, 2, 4], rows=rows, path=path, ncols=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == rows
    # filled markers where significant (raw: all 4 leads), open where not
    filled = [line for line in panels[0].lines if line.get_marker() == "o" and line.get_markerfacecolor() != "white"]
    assert sum(len(line.get_xdata()) for line in filled) >= 4
    with pytest.raises(ValueError, match=r"\[rows, leads\] = \[2, 4\]"):
        impact_figure(changes, leads=[0, 1, 2, 4], rows=rows[:2])
