"""The sampling floor E[s_N | M members, truth, sigma] against Monte Carlo of iid Gaussian members."""

import numpy as np
import pytest

from hybrid_eda.evaluation.floor import (
    conditional_std_mean,
    conditional_variance_mean,
    floor_mse,
    oracle_std_mean,
)


def _completions(seen: np.ndarray, truth: float, sigma: float, n: int, draws: int, rng) -> np.ndarray:
    """``draws`` values of s_N: the ``M`` members ``seen`` kept, the other ``N - M`` drawn afresh."""
    rest = truth + sigma * rng.standard_normal((draws, n - seen.size))
    members = np.concatenate([np.broadcast_to(seen, (draws, seen.size)), rest], axis=1)
    return members.std(axis=1, ddof=1)


@pytest.mark.parametrize(("n", "m"), [(50, 5), (8, 2), (20, 10)])
def test_floor_matches_monte_carlo_given_the_seen_members(n, m):
    # Derivation checked by simulation: draw N members with known truth and sigma, condition on the first M
    # (keep them fixed), redraw the N - M others many times; the mean of s_N is the floor's closed form.
    rng = np.random.default_rng(3)
    truth, sigma, draws = 1.5, 0.7, 200_000
    for _ in range(3):
        seen = truth + sigma * rng.standard_normal(m)
        s_n = _completions(seen, truth, sigma, n, draws, rng)
        s_m, d = seen.std(ddof=1), seen.mean() - truth
        expected = conditional_std_mean(s_m, d, sigma, n, m)
        assert expected == pytest.approx(s_n.mean(), abs=4 * s_n.std() / np.sqrt(draws))
        assert conditional_variance_mean(s_m, d, sigma, n, m) == pytest.approx(np.mean(s_n**2), rel=2e-3)
        assert floor_mse(s_m, d, sigma, n, m) == pytest.approx(s_n.var(), rel=2e-2)


def test_floor_quadrature_converges():
    rng = np.random.default_rng(0)
    s_m = np.abs(rng.standard_normal(2000)) * rng.choice([0.1, 1.0, 3.0], 2000)
    d = rng.standard_normal(2000) * rng.choice([0.01, 1.0, 5.0], 2000)
    sigma = rng.uniform(0.5, 2.0, 2000)
    fine = conditional_std_mean(s_m, d, sigma, 50, 5, nodes=(80, 50))
    np.testing.assert_allclose(conditional_std_mean(s_m, d, sigma, 50, 5), fine, rtol=1e-8)


def test_oracle_is_the_floor_averaged_over_the_unknown_truth():
    # Gaussian members: the seen mean error d ~ N(0, sigma^2 / M) is independent of s_M, so averaging the floor
    # over d (Gauss-Hermite) must give the oracle that knows sigma but not the truth.
    n, m, sigma = 50, 5, 1.3
    s_m = np.array([0.2, 1.0, 2.5])
    z, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    averaged = sum(
        wk * conditional_std_mean(s_m, zk * sigma / np.sqrt(m), sigma, n, m) for zk, wk in zip(z, w, strict=True)
    )
    np.testing.assert_allclose(oracle_std_mean(s_m, sigma, n, m), averaged, rtol=1e-8)


def test_iid_normalised_mse_reproduces_the_reference_numbers():
    # reference-numbers.md, M=5 of N=50 iid Gaussian members, MSE per sigma^2 (= per E[s_N^2]):
    # raw 0.110, best constant 0.107, oracle knowing sigma 0.0093; the floor given the truth is below it.
    rng = np.random.default_rng(1)
    n, m, points = 50, 5, 200_000
    x = rng.standard_normal((points, n))
    s_n, s_m, d = x.std(axis=1, ddof=1), x[:, :m].std(axis=1, ddof=1), x[:, :m].mean(axis=1)
    scale = np.mean(s_n**2)
    assert np.mean((s_m - s_n) ** 2) / scale == pytest.approx(0.110, abs=0.002)
    assert np.mean((0.945 * s_m - s_n) ** 2) / scale == pytest.approx(0.107, abs=0.002)
    oracle = np.mean((oracle_std_mean(s_m, 1.0, n, m) - s_n) ** 2) / scale
    floor = np.mean((conditional_std_mean(s_m, d, 1.0, n, m) - s_n) ** 2) / scale
    assert oracle == pytest.approx(0.0093, abs=0.0002)
    assert floor == pytest.approx(0.0092, abs=0.0002)
    assert floor < oracle
    assert floor_mse(s_m, d, 1.0, n, m).mean() == pytest.approx(floor, rel=0.02)


def test_floor_edge_cases_and_errors():
    assert conditional_std_mean(0.7, 0.1, 1.0, 5, 5) == pytest.approx(0.7)
    assert oracle_std_mean(0.7, 1.0, 5, 5) == pytest.approx(0.7)
    assert np.shape(conditional_std_mean(np.ones((3, 4)), 0.0, np.ones(4), 6, 5)) == (3, 4)
    with pytest.raises(ValueError, match="M >= 2"):
        conditional_std_mean(1.0, 0.0, 1.0, 50, 1)
    with pytest.raises(ValueError, match="at least M"):
        oracle_std_mean(1.0, 1.0, 4, 5)
