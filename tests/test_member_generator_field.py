"""The member generator's prepared field (generation without autograd) against the autograd path it stands in for:
the same members to float32 rounding for every layer option, the channels-first layers against their token-layout
forms, the dense kernels against the sparse operator, and the member-by-member noise draws bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybrid_eda.flows import StochasticMidpoint, UniformSchedule, brownian_increments
from hybrid_eda.layers.blocks import GridMessagePassing, layer_norm, layer_norm_channels_first
from hybrid_eda.layers.graphs import ring_graph, sphere_graph
from hybrid_eda.layers.member_mixing import MemberMixing
from hybrid_eda.models import member_generator_field
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings, member_increments

GRID = 12


def _core(n_variables: int = 2, graph=None, node_features=None, **settings) -> MemberGeneratorCore:
    """A core with every zero-initialised weight randomised, so each term of the drift and diffusion counts."""
    torch.manual_seed(0)
    core = MemberGeneratorCore(
        n_variables=n_variables,
        graph=graph or ring_graph(GRID, 2),
        node_features=node_features,
        variable_mean=torch.linspace(-1.0, 1.0, n_variables),
        variable_scale=torch.linspace(0.5, 2.0, n_variables),
        settings=MemberGeneratorSettings(**settings),
    )
    with torch.no_grad():
        for name, parameter in core.named_parameters():
            if name.startswith(("output", "particle_attention", "ensemble_resolvent")):
                parameter.normal_(0.0, 0.3)
    return core.eval()


def _inputs(b: int, k: int, n_guides: int, grid: int, n_var: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    backgrounds = torch.randn((b, k, grid, n_var), generator=g) + 2.0
    guide_backgrounds = torch.randn((b, n_guides, grid, n_var), generator=g) + 2.0
    guides = 0.6 * guide_backgrounds + 0.3 * torch.randn(guide_backgrounds.shape, generator=g) + 1.0
    observations = guides.mean(dim=1) + 0.2 * torch.randn((b, grid, n_var), generator=g)
    observations[:, ::3] = float("nan")
    return backgrounds, guides, guide_backgrounds, observations


def _both(core, *args, **kwargs):
    """(autograd path, no-autograd path) of one seeded generate call, and how often the prepared field was called."""
    reference = core.generate(*args, torch.Generator().manual_seed(5), **kwargs)
    calls = []
    original = member_generator_field.PreparedField.__call__

    def counted(self, x, t):
        calls.append(float(t))
        return original(self, x, t)

    member_generator_field.PreparedField.__call__ = counted
    try:
        with torch.no_grad():
            fast = core.generate(*args, torch.Generator().manual_seed(5), **kwargs)
    finally:
        member_generator_field.PreparedField.__call__ = original
    return reference, fast, len(calls)


SETTINGS = {
    "default": {},
    "cycle 4D-Var (latent 8, 1 round, 1 step, observations)": {
        "latent": 8,
        "rounds": 1,
        "steps": 1,
        "observation_features": True,
    },
    "attention, resolvent, observations": {
        "particle_attention": True,
        "ensemble_resolvent": True,
        "observation_features": True,
        "steps": 3,
    },
    "noise kept while generating, wider blocks": {
        "ensemble_noise": True,
        "ensemble_noise_centred": True,
        "hidden_ratio": 2,
        "heads": 3,
        "rounds": 3,
        "steps": 2,
    },
}


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize(("k", "n_members"), [(5, 5), (4, 8)])
def test_prepared_field_gives_the_autograd_paths_members(name, k, n_members):
    core = _core(**SETTINGS[name])
    backgrounds, guides, guide_bg, obs = _inputs(3, k, 4, GRID, 2)
    reference, fast, calls = _both(
        core, backgrounds, guides, n_members, guide_backgrounds=guide_bg, observations=obs, return_trajectory=True
    )
    assert member_generator_field.supports(core, n_members, k)
    assert calls == 2 * core.settings.steps  # stochastic Heun: two evaluations per step, all by the prepared field
    assert reference.members.requires_grad and not fast.members.requires_grad
    assert fast.members.is_contiguous()
    size = float(reference.members.detach().abs().max())  # float32 rounding: 1e-6 of the largest member
    torch.testing.assert_close(fast.members, reference.members.detach(), rtol=0, atol=1e-6 * size)
    torch.testing.assert_close(fast.trajectory, reference.trajectory.detach(), rtol=0, atol=1e-6 * size)
    assert float((reference.members.detach() - backgrounds.repeat(1, n_members // k, 1, 1)).abs().mean()) > 0.1


def test_prepared_field_unbatched_with_node_features_another_scheme_and_given_increments():
    lat, lon = torch.linspace(-80.0, 80.0, 30).repeat_interleave(2), torch.linspace(0.0, 350.0, 60)
    nodes = torch.stack([torch.sin(torch.deg2rad(lat)), torch.cos(torch.deg2rad(lon))], 1)
    core = _core(3, graph=sphere_graph(lat.numpy(), lon.numpy(), k=5), node_features=nodes, steps=2)
    backgrounds, guides, guide_bg, _ = _inputs(1, 4, 3, 60, 3)
    times = UniformSchedule().times(2)
    increments = brownian_increments(times, (4, 60, 3), torch.Generator().manual_seed(3)).movedim(0, -3)
    kwargs = {"guide_backgrounds": guide_bg[0], "increments": increments, "scheme": StochasticMidpoint()}
    reference, fast, calls = _both(core, backgrounds[0], guides[0], 4, **kwargs)
    assert fast.members.shape == (4, 60, 3) and calls == 4
    size = float(reference.members.detach().abs().max())
    torch.testing.assert_close(fast.members, reference.members.detach(), rtol=0, atol=1e-6 * size)


def test_the_autograd_path_is_kept_for_a_partial_replica_and_a_large_grid():
    core = _core()
    assert not member_generator_field.supports(core, 7, 4)  # a partial replica: the coefficients path, as before
    backgrounds, guides, guide_bg, _ = _inputs(2, 4, 3, GRID, 2)
    reference, fallback, calls = _both(core, backgrounds, guides, 7, guide_backgrounds=guide_bg)
    assert calls == 0
    size = float(reference.members.detach().abs().max())
    torch.testing.assert_close(fallback.members, reference.members.detach(), rtol=0, atol=1e-6 * size)
    large = MemberGeneratorCore(n_variables=1, graph=ring_graph(member_generator_field.MAX_DENSE_GRID + 1, 1))
    assert not member_generator_field.supports(large, 4, 4)
    with pytest.raises(ValueError, match="whole replicas"):
        member_generator_field.PreparedField(
            core, core.condition(backgrounds, guides, guide_bg), torch.zeros(2, 7, GRID, 2), torch.arange(7) // 4
        )


def test_member_increments_are_the_stacked_brownian_increments_bit_for_bit():
    times = UniformSchedule().times(3)
    for n_members, shape in ((1, (2, 5, 1)), (10, (1, 40, 1)), (7, (16, 40, 1)), (3, (2, 3))):
        drawn = member_increments(times, n_members, shape, torch.Generator().manual_seed(4))
        generator = torch.Generator().manual_seed(4)
        stacked = torch.stack([brownian_increments(times, shape, generator) for _ in range(n_members)])
        assert torch.equal(drawn, stacked)
    with pytest.raises(Exception, match="strictly increasing"):
        member_increments(torch.tensor([0.0, 0.5, 0.5, 1.0]), 3, (2,), torch.Generator())


def test_channels_first_layers_equal_their_token_layout_forms():
    torch.manual_seed(1)
    graph = ring_graph(GRID, 2)
    block = GridMessagePassing(6, 3, heads=2, hidden=8, hidden_ratio=2)
    mixing = MemberMixing(6, hidden_ratio=2)
    for module in (block, mixing):
        for parameter in module.parameters():
            nn.init.normal_(parameter, std=0.5)
    h = torch.randn(6, 3, 4, GRID)  # [latent, groups, members, grid]
    tokens = h.permute(3, 1, 2, 0).reshape(GRID, 12, 1, 6)  # [grid, groups * members, 1, latent]
    group = torch.arange(12) // 4
    with torch.no_grad():
        kernels = block.dense_kernels(graph, h.dtype, h.device)
        sparse = block._smoothing_operator(graph, h.dtype, h.device).to_dense()
        torch.testing.assert_close(kernels, sparse.view(2, GRID, GRID).transpose(1, 2))
        torch.testing.assert_close(block.dense_kernels(graph, h.dtype, h.device), kernels, rtol=0, atol=0)
        smoothed = block.forward_channels_first(h.reshape(6, 12, GRID), kernels)
        reference = block(tokens, graph)
        torch.testing.assert_close(smoothed.reshape(6, 12, GRID).permute(2, 1, 0), reference[:, :, 0])
        mixed = mixing.forward_channels_first(h)
        reference = mixing(tokens, group, 3)
        torch.testing.assert_close(mixed.reshape(6, 12, GRID).permute(2, 1, 0), reference[:, :, 0])
        norm = nn.LayerNorm(6)
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
        normed = layer_norm_channels_first(norm, h)
        torch.testing.assert_close(normed.movedim(0, -1), layer_norm(norm, h.movedim(0, -1)))
        next(block.kernel.parameters()).add_(0.1)  # a weight update invalidates the cached kernels
        assert not torch.equal(block.dense_kernels(graph, h.dtype, h.device), kernels)
