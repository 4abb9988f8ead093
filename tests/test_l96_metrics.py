"""Scores: fair CRPS against a double loop and the Gaussian closed form, ranks, and the cycle accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybrid_eda.l96.metrics import ScoreAccumulator, fair_crps, rank_histogram, rmse_of_mean, spread, truth_rank


def _fair_crps_double_loop(members: np.ndarray, y: float) -> float:
    """Ferro (2014): mean_i |x_i - y| - sum_{i,j} |x_i - x_j| / (2 N (N-1)), written out."""
    n = len(members)
    skill = sum(abs(x - y) for x in members) / n
    pairs = sum(abs(a - b) for a in members for b in members)
    return skill - pairs / (2 * n * (n - 1))


def _gaussian_crps(mu: float, sigma: float, y: float) -> float:
    """CRPS of N(mu, sigma^2) at y (Gneiting & Raftery 2007)."""
    z = (y - mu) / sigma
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def test_fair_crps_matches_double_loop() -> None:
    rng = np.random.default_rng(0)
    ens = rng.standard_normal((3, 7, 5))  # [B, N, n]
    truth = rng.standard_normal((3, 5))
    expected = [np.mean([_fair_crps_double_loop(ens[b, :, k], truth[b, k]) for k in range(5)]) for b in range(3)]
    np.testing.assert_allclose(fair_crps(ens, truth), expected, rtol=1e-12)


def test_fair_crps_of_a_large_gaussian_ensemble_is_the_gaussian_crps() -> None:
    rng = np.random.default_rng(1)
    mu, sigma = 0.3, 1.7
    truth = np.array([-2.0, 0.0, 0.5, 4.0])
    ens = mu + sigma * rng.standard_normal((200_000, 4))  # [N, n]
    per_variable = [fair_crps(ens[:, [k]], truth[[k]]) for k in range(4)]
    expected = [_gaussian_crps(mu, sigma, y) for y in truth]
    sampling_error = np.abs(ens - truth).std(axis=0) / np.sqrt(ens.shape[0])  # ~0.002, 0.5% of the score
    np.testing.assert_array_less(np.abs(np.ravel(per_variable) - expected), 5 * sampling_error)


def test_fair_crps_is_unbiased_in_ensemble_size() -> None:
    """The fair CRPS of a 3-member ensemble averages to the CRPS of the distribution (the plain CRPS would not)."""
    rng = np.random.default_rng(2)
    ens = rng.standard_normal((40_000, 3, 1))
    truth = np.zeros((40_000, 1))
    assert fair_crps(ens, truth).mean() == pytest.approx(_gaussian_crps(0.0, 1.0, 0.0), abs=0.01)


def test_rmse_spread_and_ranks_on_a_small_example() -> None:
    ens = np.array([[1.0, 10.0], [3.0, 14.0], [2.0, 12.0]])  # [N=3, n=2]
    truth = np.array([2.5, 11.0])
    assert rmse_of_mean(ens, truth) == pytest.approx(math.sqrt((0.5**2 + 1.0**2) / 2))
    assert spread(ens) == pytest.approx(math.sqrt((1.0 + 4.0) / 2))  # unbiased variances 1 and 4
    np.testing.assert_array_equal(truth_rank(ens, truth, np.random.default_rng(0)), [2, 1])
    np.testing.assert_array_equal(rank_histogram(np.array([2, 1, 1, 0]), 3), [1, 2, 1, 0])
    assert spread(ens[:1]) == 0.0
    assert fair_crps(ens[:1], truth) == pytest.approx((1.5 + 1.0) / 2)  # one member: absolute error


def test_tied_ranks_are_spread_uniformly() -> None:
    ens = np.zeros((4, 1))  # every member ties with the truth
    ranks = [int(truth_rank(ens, np.zeros(1), rng)[0]) for rng in [np.random.default_rng(s) for s in range(500)]]
    counts = np.bincount(ranks, minlength=5)
    assert counts.sum() == 500 and counts.min() > 60  # about 100 in each of the 5 bins


def test_accumulator_matches_numpy_scores_and_skips_spinup() -> None:
    rng = np.random.default_rng(3)
    cycles, spin = 12, 4
    bgs = rng.standard_normal((cycles, 6, 9))
    ans = 0.5 * rng.standard_normal((cycles, 6, 9))
    truths = 0.2 * rng.standard_normal((cycles, 9))
    acc = ScoreAccumulator(spinup=spin, keep_series=True)
    for t in range(cycles):
        acc.update(bgs[t], ans[t], truths[t])
    s = acc.summary()
    scored = slice(spin, None)
    assert s["cycles_scored"] == cycles - spin and s["spinup_cycles"] == spin
    assert s["analysis_rmse"] == pytest.approx(rmse_of_mean(ans[scored], truths[scored]).mean())
    assert s["background_rmse"] == pytest.approx(rmse_of_mean(bgs[scored], truths[scored]).mean())
    assert s["analysis_spread"] == pytest.approx(spread(ans[scored]).mean())
    assert s["background_spread"] == pytest.approx(spread(bgs[scored]).mean())
    assert s["crps"] == pytest.approx(fair_crps(ans[scored], truths[scored]).mean())
    assert s["background_crps"] == pytest.approx(fair_crps(bgs[scored], truths[scored]).mean())
    assert s["spread_rmse_ratio"] == pytest.approx(s["analysis_spread"] / s["analysis_rmse"])
    ranks = truth_rank(ans[scored], truths[scored], rng)
    assert s["rank_histogram"] == rank_histogram(ranks, 6).tolist()
    assert len(s["rank_histogram"]) == 7 and sum(s["rank_histogram"]) == (cycles - spin) * 9
    series = acc.series()
    np.testing.assert_allclose(series["analysis_rmse"], rmse_of_mean(ans[scored], truths[scored]))


def test_accumulator_scores_a_batch_per_experiment_and_handles_ties() -> None:
    rng = np.random.default_rng(4)
    bg = rng.standard_normal((2, 3, 5, 4))  # [B1, B2, N, n]
    an = rng.standard_normal((2, 3, 5, 4))
    truth = rng.standard_normal((2, 3, 4))
    an[1, 2, 3, 0] = truth[1, 2, 0]  # one member equals the truth: ranked by the tie rule, still counted
    acc = ScoreAccumulator()
    acc.update(bg, an, truth)
    acc.update(bg, an, truth)
    summaries = acc.summaries()
    assert len(summaries) == 6
    flat_an, flat_truth = an.reshape(6, 5, 4), truth.reshape(6, 4)
    for k, s in enumerate(summaries):
        assert s["analysis_rmse"] == pytest.approx(rmse_of_mean(flat_an[k], flat_truth[k]))
        assert sum(s["rank_histogram"]) == 2 * 4
    with pytest.raises(ValueError, match="use summaries"):
        acc.summary()


@pytest.mark.parametrize("n_members", [2, 20, 300])
def test_accumulator_kernel_agrees_with_sorted_numpy_scores(n_members: int) -> None:
    """The kernel's pair loop (N <= 256) and its sorting branch (N = 300) both equal the numpy references."""
    rng = np.random.default_rng(5)
    bg = rng.standard_normal((3, n_members, 6))
    an = 0.4 * rng.standard_normal((3, n_members, 6))
    truth = rng.standard_normal((3, 6))
    acc = ScoreAccumulator(keep_series=True)
    acc.update(bg, an, truth)
    series = acc.series()
    np.testing.assert_allclose(series["crps"][0], fair_crps(an, truth), rtol=1e-12)
    np.testing.assert_allclose(series["background_crps"][0], fair_crps(bg, truth), rtol=1e-12)
    np.testing.assert_allclose(series["analysis_spread"][0], spread(an), rtol=1e-12)
    np.testing.assert_allclose(series["background_rmse"][0], rmse_of_mean(bg, truth), rtol=1e-12)
    for k, s in enumerate(acc.summaries()):
        assert s["rank_histogram"] == rank_histogram(truth_rank(an[k], truth[k], rng), n_members).tolist()


def test_accumulator_errors() -> None:
    acc = ScoreAccumulator(spinup=2)
    acc.update(np.zeros((3, 4)), np.zeros((3, 4)), np.ones(4))
    with pytest.raises(ValueError, match="no cycle scored yet"):
        acc.summary()
    acc.update(np.zeros((3, 4)), np.zeros((3, 4)), np.ones(4))
    acc.update(np.zeros((3, 4)), np.zeros((3, 4)), np.ones(4))
    with pytest.raises(ValueError, match="differ from the shapes"):
        acc.update(np.zeros((5, 4)), np.zeros((5, 4)), np.ones(4))
    with pytest.raises(ValueError, match="keep_series=True"):
        acc.series()
    with pytest.raises(ValueError, match="spinup must be >= 0"):
        ScoreAccumulator(spinup=-1)
