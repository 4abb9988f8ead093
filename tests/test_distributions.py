"""Predictive distributions against independent references: torch.distributions, quadrature, Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from hybrid_eda.distributions import PARAMETER_AXIS, Gaussian, LogNormal

F64 = torch.float64


def _gaussian(seed: int = 0, shape=(2, 3, 1, 5, 4)) -> Gaussian:
    g = torch.Generator().manual_seed(seed)
    return Gaussian(torch.randn(shape, generator=g, dtype=F64), 0.1 + torch.rand(shape, generator=g, dtype=F64))


def _lognormal(seed: int = 0, shape=(2, 3, 1, 5, 4)) -> LogNormal:
    g = torch.Generator().manual_seed(seed)
    return LogNormal(torch.randn(shape, generator=g, dtype=F64), 0.05 + torch.rand(shape, generator=g, dtype=F64))


def _torch_reference(dist):
    if isinstance(dist, Gaussian):
        return torch.distributions.Normal(dist.loc, dist.scale)
    return torch.distributions.LogNormal(dist.mu, dist.sigma)


DISTRIBUTIONS = [pytest.param(_gaussian, id="gaussian"), pytest.param(_lognormal, id="lognormal")]


@pytest.mark.parametrize("make", DISTRIBUTIONS)
def test_log_prob_mean_variance_cdf_match_torch_distributions(make):
    dist = make()
    ref = _torch_reference(dist)
    torch.manual_seed(0)
    x = ref.sample()
    torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dist.cdf(x), ref.cdf(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dist.mean(), ref.mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(dist.variance(), ref.variance, rtol=1e-12, atol=0)
    torch.testing.assert_close(dist.quantile(0.9), ref.icdf(torch.tensor(0.9, dtype=F64)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", DISTRIBUTIONS)
def test_quantile_and_pit_are_inverse(make):
    dist = make(seed=1)
    q = torch.linspace(0.01, 0.99, 7, dtype=F64).reshape(7, 1, 1, 1, 1, 1)
    levels = dist.pit(dist.quantile(q))
    torch.testing.assert_close(levels, q.expand_as(levels))
    x = dist.sample(3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(dist.quantile(dist.pit(x)), x, rtol=1e-9, atol=1e-12)


def test_quantile_rejects_levels_outside_unit_interval():
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        _gaussian().quantile(1.0)


def _crps_by_quadrature_gaussian(loc: float, scale: float, y: float) -> float:
    cdf = stats.norm(loc, scale).cdf
    lo, hi = loc - 12 * scale, loc + 12 * scale
    below = integrate.quad(lambda x: cdf(x) ** 2, min(lo, y), y, limit=200)[0]
    above = integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, max(hi, y), limit=200)[0]
    return below + above


def _crps_by_quadrature_lognormal(mu: float, sigma: float, y: float) -> float:
    """``int (F(x) - 1{x >= y})^2 dx`` over x = exp(u) (dx = e^u du), plus the stretch [y, 0] if y < 0."""
    cdf_u = stats.norm(mu, sigma).cdf
    lo, hi = mu - 12 * sigma, mu + 12 * sigma
    if y <= 0:
        below_lo = math.exp(lo)  # int_0^exp(lo) (1 - F)^2 dx, with F ~ 0 there
        return -y + below_lo + integrate.quad(lambda u: (1 - cdf_u(u)) ** 2 * math.exp(u), lo, hi, limit=200)[0]
    log_y = math.log(y)
    below = integrate.quad(lambda u: cdf_u(u) ** 2 * math.exp(u), min(lo, log_y), log_y, limit=200)[0]
    above = integrate.quad(lambda u: (1 - cdf_u(u)) ** 2 * math.exp(u), log_y, max(hi, log_y), limit=200)[0]
    return below + above


@pytest.mark.parametrize(
    ("loc", "scale", "y"), [(0.0, 1.0, 0.0), (0.3, 1.7, 1.1), (-2.0, 0.01, -1.9), (5.0, 3.0, -9.0)]
)
def test_gaussian_crps_matches_quadrature(loc, scale, y):
    crps = Gaussian(torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64)).crps(torch.tensor(y, dtype=F64))
    assert float(crps) == pytest.approx(_crps_by_quadrature_gaussian(loc, scale, y), rel=1e-8, abs=1e-12)


@pytest.mark.parametrize(
    ("mu", "sigma", "y"),
    [(0.0, 0.5, 1.3), (1.0, 0.1, 2.9), (-2.0, 1.2, 0.01), (0.0, 2.0, 50.0), (-13.8, 0.1, 1e-6), (0.3, 0.3, 0.0)]
    + [(0.3, 0.3, -1.0), (2.0, 0.002, math.exp(2.0))],
)
def test_lognormal_crps_matches_quadrature_and_baran_lerch(mu, sigma, y):
    dist = LogNormal(torch.tensor(mu, dtype=F64), torch.tensor(sigma, dtype=F64))
    crps = float(dist.crps(torch.tensor(y, dtype=F64)))
    assert crps == pytest.approx(_crps_by_quadrature_lognormal(mu, sigma, y), rel=1e-7, abs=1e-14)
    if y > 0:  # the published form, before our rearrangement against cancellation
        phi, w = stats.norm.cdf, (math.log(y) - mu) / sigma
        baran_lerch = y * (2 * phi(w) - 1) - 2 * math.exp(mu + sigma**2 / 2) * (
            phi(w - sigma) + phi(sigma / math.sqrt(2)) - 1
        )
        assert crps == pytest.approx(baran_lerch, rel=1e-6)


@pytest.mark.parametrize("make", DISTRIBUTIONS)
def test_crps_matches_monte_carlo_energy_form(make):
    """``CRPS = E|X - y| - E|X - X'| / 2`` with 400,000 independent pairs drawn by torch.distributions."""
    dist = make(seed=3, shape=(1, 1, 1, 3, 2))
    ref = _torch_reference(dist)
    y = ref.sample() * 1.3
    torch.manual_seed(4)
    x, x_prime = ref.sample((400_000,)), ref.sample((400_000,))
    samples = torch.abs(x - y) - 0.5 * torch.abs(x - x_prime)
    mc, stderr = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    assert bool((torch.abs(dist.crps(y) - mc) < 5 * stderr).all()), (dist.crps(y), mc, stderr)


@pytest.mark.parametrize("make", DISTRIBUTIONS)
def test_crps_and_log_prob_pass_gradcheck(make):
    dist = make(seed=5, shape=(1, 1, 1, 3, 2))
    params = [p.clone().requires_grad_(True) for p in dist.parameters()]
    y = (_torch_reference(dist).sample() * 1.1).requires_grad_(True)
    cls = type(dist)
    assert torch.autograd.gradcheck(lambda a, b, t: cls(a, b).crps(t), (*params, y))
    assert torch.autograd.gradcheck(lambda a, b, t: cls(a, b).log_prob(t), (*params, y))


@pytest.mark.parametrize("cls", [Gaussian, LogNormal])
def test_from_raw_is_positive_and_finite_for_any_raw_output_in_float32(cls):
    raw = torch.tensor([-1e4, -200.0, -30.0, 0.0, 30.0, 1e4], dtype=torch.float32).reshape(1, 1, 1, 6, 1)
    raw = torch.cat([torch.zeros_like(raw), raw], dim=PARAMETER_AXIS).requires_grad_(True)
    dist = cls.from_raw(raw)
    positive = dist.parameters()[1]
    assert bool((positive > 0).all()) and bool(torch.isfinite(positive).all())
    target = torch.full_like(positive, 0.5)
    loss = -dist.log_prob(target).sum() + dist.crps(target).sum()
    (grad,) = torch.autograd.grad(loss, raw)
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())


def test_tensor_round_trip_and_shapes():
    raw = torch.randn(2, 3, 2, 5, 4, dtype=F64)
    dist = LogNormal.from_raw(raw)
    assert dist.mu.shape == (2, 3, 1, 5, 4)
    torch.testing.assert_close(LogNormal.from_tensor(dist.to_tensor()).sigma, dist.sigma, rtol=0, atol=0)
    assert dist.to_tensor().shape == raw.shape
    assert dist.sample(6).shape == (6, 2, 3, 1, 5, 4)
    with pytest.raises(ValueError, match=r"\(mu, sigma\) stacked on axis -3"):
        LogNormal.from_tensor(torch.zeros(2, 3, 3, 5, 4))
    with pytest.raises(ValueError, match="from_raw"):
        Gaussian.from_tensor(torch.zeros(1, 1, 2, 5, 4), validate=True)  # scale 0


def test_tiny_and_huge_spreads_are_accurate_in_float32():
    """Spreads of 1e-6 and 1e6 (a dynamic range of 1e12 between variables), relative sigma 1e-3 to 1.

    The reference gets the same float32-rounded inputs, so this measures the algorithm, not the rounding of
    ``mu``. What float32 cannot avoid: ``log x - mu`` carries an absolute error ~ eps |log x|, i.e. a relative
    error ~ eps |log x| / sigma in ``w``; the tolerance allows a few times that.
    """
    eps = torch.finfo(torch.float32).eps
    mu = torch.tensor([math.log(1e-6), math.log(1e6)], dtype=F64).reshape(2, 1, 1)
    sigma = torch.tensor([1e-3, 0.1, 1.0], dtype=F64).reshape(1, 3, 1)
    ratio = torch.tensor([0.3, 0.999, 1.0, 1.05, 3.0], dtype=F64)
    y = (torch.exp(mu) * ratio).float()
    low = LogNormal(mu.float(), sigma.float())
    ref = LogNormal(low.mu.double(), low.sigma.double())
    conditioning = 1e-5 + 4 * eps * mu.abs() / sigma
    for name in ("crps", "log_prob"):
        expected, got = getattr(ref, name)(y.double()), getattr(low, name)(y).double()
        assert bool(torch.isfinite(got).all())
        relative = (got - expected).abs() / expected.abs().clamp_min(1.0 if name == "log_prob" else 0.0)
        assert bool((relative <= conditioning).all()), (name, relative)
    gauss = Gaussian(torch.tensor(1e-6), torch.tensor(1e-8))  # a spread 1e-8 around 1e-6
    gauss_ref = Gaussian(gauss.loc.double(), gauss.scale.double())
    x = torch.tensor([1e-6, 1.01e-6, 0.9e-6])
    np.testing.assert_allclose(gauss.crps(x).double(), gauss_ref.crps(x.double()), rtol=1e-3)
    np.testing.assert_allclose(gauss.log_prob(x).double(), gauss_ref.log_prob(x.double()), rtol=1e-5)


def test_lognormal_outside_support():
    dist = LogNormal(torch.tensor(0.0, dtype=F64), torch.tensor(0.5, dtype=F64))
    x = torch.tensor([0.0, -1.0], dtype=F64)
    assert bool(torch.isneginf(dist.log_prob(x)).all())
    assert bool((dist.cdf(x) == 0).all())
    assert bool(torch.isfinite(dist.crps(x)).all())
