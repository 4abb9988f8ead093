"""Ensemble-space noise: the EnKF's perturbed-observation noise ``K e`` in closed form (grid-space gain, all and
partial observations), nothing off the span of the replica's anomalies, zero scale a bit-identical no-op,
equivariance over particles and invariance over guides in the generator, old settings load, and the integrators'
additive increment."""

from __future__ import annotations

import math

import pytest
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.flows import SDECoefficients, StochasticHeun, StochasticMidpoint, integrate
from hybrid_eda.layers.ensemble_noise import EnsembleNoise
from hybrid_eda.layers.ensemble_resolvent import replica_masks
from hybrid_eda.layers.graphs import ring_graph
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings
from member_generator_checkpoints import ring_inputs

CPU = torch.device("cpu")


def _linear_map(layer, particles, guides, observed, n, member):
    """``[grid * var, grid * var]``: the noise of ``member`` as a linear map of its increments (one basis vector per
    'step'), other members' increments zero."""
    b, k, grid, var = particles.shape
    masks = replica_masks(k, n, dtype=torch.float64, device=CPU)
    prepared = layer.prepare(particles, guides, observed, masks)
    basis = torch.eye(grid * var, dtype=torch.float64).reshape(grid * var, 1, 1, grid, var)
    increments = torch.zeros(grid * var, b, n, grid, var, dtype=torch.float64)
    increments[:, :, member] = basis[:, :, 0]
    replica = torch.div(torch.arange(n), k, rounding_mode="floor")
    out = layer(increments, prepared, replica, int(replica.max()) + 1)  # [grid * var, b, n, grid, var]
    return out[:, 0, member].reshape(grid * var, grid * var).t(), out  # column e: the noise of basis vector e


@pytest.mark.parametrize("partial", [False, True])
@torch.no_grad()
def test_noise_is_the_enkf_gain_applied_to_the_increments(partial):
    """One variable and term, gain w, scale s: the noise map is ``s B H^T (H B H^T + (grid / w) I)^-1 H`` with
    ``B = F F^T`` over all N background anomalies (particles and guides): the stochastic EnKF's ``K e`` with
    ``e = H xi``, computed here in grid space."""
    g = torch.Generator().manual_seed(0)
    grid, k, n_guides, w, s = 13, 4, 3, 9.0, 0.7
    layer = EnsembleNoise(1, terms=1, init=s, centred=False).double()
    layer.log_gain.fill_(math.log(w))
    layer.scale.fill_(s)  # exactly s in float64
    f = torch.randn(1, k + n_guides, grid, 1, generator=g, dtype=torch.float64)
    observed = torch.ones(1, grid, 1, dtype=torch.float64)
    if partial:
        observed[0, 1::2] = 0.0
    a, _ = _linear_map(layer, f[:, :k], f[:, k:], observed, k, member=2)
    x = f[0, :, :, 0].t()  # [grid, N]
    h = torch.diag(observed[0, :, 0])[observed[0, :, 0] > 0]  # [n_obs, grid]
    b = x @ x.t()
    gain = b @ h.t() @ torch.linalg.inv(h @ b @ h.t() + (grid / w) * torch.eye(h.shape[0], dtype=torch.float64))
    torch.testing.assert_close(a, s * gain @ h, rtol=1e-10, atol=1e-12)
    if not partial:  # the covariance's eigenvalues in the span: s^2 lambda^2 / (lambda + c)^2
        lam = torch.linalg.eigvalsh(x.t() @ x)
        expected = (s * lam / (lam + grid / w)) ** 2
        got = torch.linalg.eigvalsh(a @ a.t())[-(k + n_guides) :]
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@torch.no_grad()
def test_noise_lies_in_the_span_of_the_replicas_anomalies():
    """Several terms and variables, random gains and scales, a partial second replica: every member's noise map has
    nothing off the span of its own replica's anomaly fields and the guides' (per variable: the scales are), and is
    not zero."""
    g = torch.Generator().manual_seed(1)
    grid, var, k, n_guides, n = 10, 2, 4, 3, 7
    layer = EnsembleNoise(var, terms=3, gains=(0.5, 50.0), centred=False).double()
    layer.scale.copy_(torch.randn(layer.scale.shape, generator=g, dtype=torch.float64))
    f = torch.randn(1, k + n_guides, grid, var, generator=g, dtype=torch.float64)
    observed = (torch.rand(1, grid, var, generator=g) > 0.3).double()
    for member in range(n):
        a, _ = _linear_map(layer, f[:, :k], f[:, k:], observed, n, member)
        sources = list(range(k)) if member < k else list(range(n - k))  # replica 1 lacks background k - 1
        fields = f[0, sources + list(range(k, k + n_guides))]  # [sources, grid, var]
        blocks = [
            torch.zeros_like(fields).index_copy(-1, torch.tensor([v]), fields[..., v : v + 1]) for v in range(var)
        ]
        span = torch.cat(blocks).reshape(var * fields.shape[0], -1).t()  # [grid * var, sources * var]
        q, _ = torch.linalg.qr(span)
        off = a - q @ (q.t() @ a)
        assert float(off.abs().max()) < 1e-12
        assert float(a.abs().max()) > 1e-3
    # a member's noise uses only its own increments
    _, out = _linear_map(layer, f[:, :k], f[:, k:], observed, n, member=1)
    assert float(out[:, 0, [0, 2, 3, 4, 5, 6]].abs().max()) == 0.0


@torch.no_grad()
def test_centred_noise_sums_to_zero_over_each_replica_and_is_the_plain_noise_minus_its_mean():
    g = torch.Generator().manual_seed(4)
    grid, var, k, n_guides, n, steps = 8, 2, 4, 3, 9, 3  # replicas of 4, 4 and 1 members
    plain = EnsembleNoise(var, terms=2, init=0.5, centred=False).double()
    centred = EnsembleNoise(var, terms=2, init=0.5).double()
    f = torch.randn(1, k + n_guides, grid, var, generator=g, dtype=torch.float64)
    masks = replica_masks(k, n, dtype=torch.float64, device=CPU)
    replica = torch.div(torch.arange(n), k, rounding_mode="floor")
    increments = torch.randn(steps, 1, n, grid, var, generator=g, dtype=torch.float64)
    raw = plain(increments, plain.prepare(f[:, :k], f[:, k:], None, masks), replica, 3)
    out = centred(increments, centred.prepare(f[:, :k], f[:, k:], None, masks), replica, 3)
    for members in ([0, 1, 2, 3], [4, 5, 6, 7], [8]):
        torch.testing.assert_close(out[:, :, members], raw[:, :, members] - raw[:, :, members].mean(2, keepdim=True))
        assert float(out[:, :, members].sum(2).abs().max()) < 1e-12
    assert float(out[:, :, 8].abs().max()) == 0.0 and float(out.abs().max()) > 1e-2  # one member: no noise


# ------------------------------------------------------------------------------------------ in the generator
RING = 24


def _core(noise: bool, init: float = 0.02, seed: int = 0, **extra) -> MemberGeneratorCore:
    torch.manual_seed(seed)
    settings = MemberGeneratorSettings(
        **extra,
        particle_attention=True,
        ensemble_resolvent=True,
        ensemble_noise=noise,
        ensemble_noise_init=init,
        ensemble_noise_centred=True,
        observation_features=True,
        steps=3,
    )
    return MemberGeneratorCore(n_variables=1, graph=ring_graph(RING, 2), settings=settings)


def _members(core, backgrounds, guides, guide_bg, observations, n=6, increments=None):
    generator = torch.Generator().manual_seed(0)
    kwargs = {"guide_backgrounds": guide_bg, "observations": observations, "increments": increments}
    return core.generate(backgrounds, guides, n, generator, **kwargs).members


@torch.no_grad()
def test_zero_scale_is_bit_identical_and_a_positive_one_adds_spread_in_the_span():
    inputs = ring_inputs(RING)
    plain = _members(_core(False), *inputs, n=9)
    torch.testing.assert_close(_members(_core(True, init=0.0), *inputs, n=9), plain, rtol=0, atol=0)
    # without the spread-ratio rate the untrained flow is a pure shift, so the difference is the summed noise alone
    shift = _members(_core(False, rescale_anomalies=False), *inputs, n=9)
    noisy = _members(_core(True, init=0.3, rescale_anomalies=False), *inputs, n=9)
    difference = (noisy - shift)[:, :, 0]  # [n, grid]
    assert float(difference.abs().mean()) > 1e-2
    backgrounds, _, guide_bg, _ = inputs
    anomalies = torch.cat([backgrounds, guide_bg])[:, :, 0]
    anomalies = anomalies - anomalies.mean(0)
    q, _ = torch.linalg.qr(anomalies.t())
    assert float((difference.t() - q @ (q.t() @ difference.t())).abs().max()) < 1e-4


@torch.no_grad()
def test_noise_is_equivariant_over_particles_and_invariant_over_guides():
    backgrounds, guides, guide_bg, observations = ring_inputs(RING)
    core = _core(True, init=0.3)
    increments = torch.randn(6, 3, RING, 1, generator=torch.Generator().manual_seed(5)) / math.sqrt(3)
    base = _members(core, backgrounds, guides, guide_bg, observations, increments=increments)
    perm, guide_perm = torch.tensor([3, 0, 5, 1, 4, 2]), torch.tensor([2, 0, 3, 1])
    permuted = _members(core, backgrounds[perm], guides, guide_bg, observations, increments=increments[perm])
    torch.testing.assert_close(permuted, base[perm], rtol=1e-5, atol=1e-5)
    swapped = _members(core, backgrounds, guides[guide_perm], guide_bg[guide_perm], observations, increments=increments)
    torch.testing.assert_close(swapped, base, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_training_only_noise_is_off_in_evaluation_mode_and_on_in_training_mode():
    inputs = ring_inputs(RING)
    plain, noisy = _core(False), _core(True, init=0.3)
    only = _core(True, init=0.3, ensemble_noise_training_only=True)
    torch.testing.assert_close(_members(only.eval(), *inputs), _members(plain.eval(), *inputs), rtol=0, atol=0)
    torch.testing.assert_close(_members(only.train(), *inputs), _members(noisy.train(), *inputs), rtol=0, atol=0)
    assert float((_members(only.train(), *inputs) - _members(plain, *inputs)).abs().mean()) > 1e-2


def test_the_noise_scale_gets_a_gradient():
    backgrounds, guides, guide_bg, observations = ring_inputs(RING)
    core = _core(True)
    members = _members(core, backgrounds, guides, guide_bg, observations)
    (members - guides.mean(0)).pow(2).mean().backward()
    assert float(core.ensemble_noise.scale.grad.abs().max()) > 0.0
    assert float(core.ensemble_noise.log_gain.grad.abs().max()) > 0.0


def test_settings_of_older_checkpoints_load_without_the_noise():
    core = _core(False)
    inputs = ring_inputs(RING)
    before = _members(core, *inputs)
    for name in ("ensemble_noise", "ensemble_noise_init", "ensemble_noise_centred", "ensemble_noise_training_only"):
        object.__delattr__(core.settings, name)  # what unpickling an older MemberGeneratorSettings gives
    assert "ensemble_noise" not in vars(core.settings) and core.settings.ensemble_noise is False
    torch.testing.assert_close(_members(core, *inputs), before, rtol=0, atol=0)
    assert not hasattr(core, "ensemble_noise")


# ------------------------------------------------------------------------------------------ integrators
def _field(x: torch.Tensor, t: torch.Tensor) -> SDECoefficients:
    return SDECoefficients(drift=-x, diffusion=0.3 * torch.cos(x))


@pytest.mark.parametrize("scheme", [StochasticHeun(), StochasticMidpoint()])
def test_integrate_with_an_additive_increment(scheme):
    g = torch.Generator().manual_seed(2)
    times = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    dw = torch.randn(5, 3, 4, generator=g, dtype=torch.float64) * math.sqrt(0.2)
    plain = integrate(_field, x0, times, dw, scheme=scheme).final
    torch.testing.assert_close(
        integrate(_field, x0, times, dw, scheme=scheme, additive=None).final, plain, rtol=0, atol=0
    )
    # with zero drift and diffusion, the additive increments simply sum up
    add = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)

    def still(x, t):
        return SDECoefficients(torch.zeros_like(x), torch.zeros_like(x))

    torch.testing.assert_close(integrate(still, x0, times, dw, scheme=scheme, additive=add).final, x0 + add.sum(0))
    # additive noise is the Stratonovich (= Ito) integral of a constant coefficient: dX = -X dt + a dW' is linear,
    # so the additive path equals a diffusion term a dW' integrated as elementwise noise
    a, dw2 = 0.4, torch.randn(5, 3, 4, generator=g, dtype=torch.float64) * math.sqrt(0.2)

    def linear(x, t):
        return SDECoefficients(-x, torch.zeros_like(x))

    def with_noise(x, t):
        return SDECoefficients(-x, torch.full_like(x, a))

    torch.testing.assert_close(
        integrate(linear, x0, times, dw2, scheme=scheme, additive=a * dw2).final,
        integrate(with_noise, x0, times, dw2, scheme=scheme).final,
        rtol=1e-12,
        atol=1e-12,
    )
    with pytest.raises(UserInputError, match="additive must be"):
        integrate(_field, x0, times, dw, scheme=scheme, additive=add[:4])


def test_the_noise_adds_the_stated_parameters_on_the_ring():
    """configs/model/member_generator.yaml states +8 on the L96 ring: 4 terms x 1 variable x (gain, scale)."""
    plain, noisy = _core(False), _core(True)
    assert sum(p.numel() for p in noisy.parameters()) - sum(p.numel() for p in plain.parameters()) == 8
