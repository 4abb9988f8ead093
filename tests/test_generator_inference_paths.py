"""The no-autograd fast paths of the graph blocks and member mixing equal the training path and the pre-change code.

Inference (no autograd) takes a cached smoothing operator (one sparse CSR matrix for all heads), one
``addmm`` chain instead of per-head products, a layer norm by matrix-vector moments, and group means by reshape for
consecutive equal-sized groups with the pooled projection taken of the means. Every one must give the numbers of
the training path and of the code before the change (kept here as references) to float round-off.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.nn import functional

from hybrid_eda.layers import blocks, member_mixing
from hybrid_eda.layers.blocks import GridMessagePassing, layer_norm
from hybrid_eda.layers.graphs import ring_graph, sphere_graph
from hybrid_eda.layers.member_mixing import (
    MemberMixing,
    add_group_values,
    contiguous_group_size,
    group_mean,
    group_means,
)
from hybrid_eda.models import member_generator_core
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings
from hybrid_eda.synthetic.grids import make_grid


def _reference_group_mean(x: torch.Tensor, group: torch.Tensor, n_groups: int, dim: int) -> torch.Tensor:
    """The pre-change ``group_mean`` (scatter, divide, gather)."""
    shape = list(x.shape)
    shape[dim] = n_groups
    sums = torch.zeros(shape, dtype=x.dtype).index_add(dim, group, x)
    counts = torch.bincount(group, minlength=n_groups).to(x.dtype).clamp_min(1)
    counts = counts.reshape([-1 if d == (dim % x.ndim) else 1 for d in range(x.ndim)])
    return (sums / counts).index_select(dim, group)


def _reference_mixing(self: MemberMixing, h: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """The pre-change ``MemberMixing.forward``: project every member, then pool the projections."""
    own, pooled = self.project(h).split(self.width, dim=-1)
    pre = own + _reference_group_mean(pooled, group, n_groups, dim=1)
    return h + self.norm(self.out(functional.gelu(pre)))


def _reference_message_passing(self: GridMessagePassing, h: torch.Tensor, graph: blocks.GridGraph) -> torch.Tensor:
    """The pre-change ``GridMessagePassing.forward`` (kernels, softmax and sparse sum at every call)."""
    n_grid, latent = h.shape[0], h.shape[-1]
    weights = blocks.edge_softmax(self.kernel(graph.edge_attr), graph.dst, graph.n_nodes)
    offsets = torch.arange(self.heads)[:, None] * graph.n_nodes
    smoothed = blocks.edge_weighted_sum(
        h.reshape(n_grid, -1),
        weights.t().reshape(-1),
        graph.src.repeat(self.heads),
        (offsets + graph.dst).reshape(-1),
        self.heads * graph.n_nodes,
    ).view(self.heads, -1, latent)
    agg = torch.bmm(smoothed, self.values).sum(dim=0).view(*h.shape[:-1], -1)
    update = self.update
    return h + update.norm(update.out(functional.gelu(self.self_map(h) + agg + update.bias)))


def _sphere(points: int) -> blocks.GridGraph:
    grid = make_grid("O32")
    return sphere_graph(grid.latitudes[:points], grid.longitudes[:points], k=9)


def _block(graph: blocks.GridGraph, heads: int = 2, hidden_ratio: int = 1, seed: int = 0) -> GridMessagePassing:
    torch.manual_seed(seed)
    block = GridMessagePassing(8, graph.edge_attr.shape[-1], heads=heads, hidden=6, hidden_ratio=hidden_ratio)
    nn.init.normal_(block.update.bias, std=0.5)
    return block


@pytest.mark.parametrize("graph", [ring_graph(40, 2), _sphere(700)], ids=["ring", "sphere"])
@pytest.mark.parametrize(("heads", "hidden_ratio"), [(2, 1), (3, 2)])
def test_message_passing_inference_equals_training_path_and_reference(graph, heads, hidden_ratio):
    block = _block(graph, heads, hidden_ratio)
    h = torch.randn(graph.n_nodes, 5, 3, 8, generator=torch.Generator().manual_seed(1))
    trained = block(h, graph)  # grad enabled: the training path
    with torch.no_grad():
        fast = block(h, graph)
        again = block(h, graph)  # from the cache
        reference = _reference_message_passing(block, h, graph)
    assert block._operator_cache[1].layout == torch.sparse_csr
    assert fast.shape == h.shape
    torch.testing.assert_close(fast, trained.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, fast, rtol=0, atol=0)


def test_message_passing_cache_follows_the_weights_and_the_graph():
    graph = ring_graph(16, 2)
    block = _block(graph)
    h = torch.randn(16, 4, 1, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = block(h, graph)
        block.kernel.mlp[0].weight.add_(0.7)  # an optimiser step: in place
        after = block(h, graph)
        reference = _reference_message_passing(block, h, graph)
        other = ring_graph(16, 1)
        on_other = block(h, other)
        reference_other = _reference_message_passing(block, h, other)
    assert float((after - before).abs().max()) > 1e-3  # the cached operator was rebuilt
    torch.testing.assert_close(after, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(on_other, reference_other, rtol=0, atol=1e-5)


def test_message_passing_without_neighbours_and_gradients_unchanged():
    graph = ring_graph(12, 2)
    block = _block(graph)
    block.use_neighbours = False
    h = torch.randn(12, 2, 1, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = block(h, graph)
    with torch.no_grad():
        fast = block(h, graph)
    torch.testing.assert_close(fast, out.detach(), rtol=0, atol=1e-5)
    block.use_neighbours = True
    out = block(h, graph)
    out.square().sum().backward()
    assert block.kernel.mlp[0].weight.grad is not None and h.grad is not None


def test_the_inference_cache_is_not_pickled():
    graph = ring_graph(10, 2)
    block = _block(graph)
    with torch.no_grad():
        expected = block(torch.ones(10, 1, 1, 8), graph)
    assert hasattr(block, "_operator_cache")
    for clone in (copy.deepcopy(block), pickle.loads(pickle.dumps(block))):
        assert not hasattr(clone, "_operator_cache")
        with torch.no_grad():
            torch.testing.assert_close(clone(torch.ones(10, 1, 1, 8), graph), expected, rtol=0, atol=0)


def test_layer_norm_without_autograd_equals_torch():
    norm = nn.LayerNorm(32)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = 3.0 + 2.0 * torch.randn(7, 5, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        fast = layer_norm(norm, x)
    torch.testing.assert_close(fast, norm(x).detach(), rtol=0, atol=1e-5)
    assert layer_norm(norm, x).requires_grad  # with autograd: torch's own layer norm


def test_contiguous_groups_are_recognised():
    assert contiguous_group_size(torch.tensor([0, 0, 1, 1, 2, 2]), 3) == 2
    assert contiguous_group_size(torch.zeros(5, dtype=torch.long), 1) == 5
    assert contiguous_group_size(torch.tensor([0, 1, 0, 1]), 2) is None
    assert contiguous_group_size(torch.tensor([0, 0, 0, 1]), 2) is None
    assert contiguous_group_size(torch.tensor([0, 0, 1, 1]), 3) is None


@pytest.mark.parametrize(
    "group",
    [torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([1, 0, 2, 0, 1, 0]), torch.tensor([0, 0, 2, 2, 2, 0])],
    ids=["contiguous", "shuffled", "empty-group"],
)
def test_group_means_equal_the_scatter_reference(group):
    x = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(5))
    n_groups = 3 if int(group.max()) == 2 else 2
    torch.testing.assert_close(group_mean(x, group, n_groups, dim=1), _reference_group_mean(x, group, n_groups, 1))
    means = group_means(x, group, n_groups, dim=-2)
    for g in range(n_groups):
        members = group == g
        expected = x[:, members].mean(dim=1) if members.any() else torch.zeros(4, 3)
        torch.testing.assert_close(means[:, g], expected)
    torch.testing.assert_close(add_group_values(x, means, group, dim=1), x + means.index_select(1, group))


@pytest.mark.parametrize(
    "group", [torch.arange(12) // 4, torch.tensor([2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1, 2])], ids=["contiguous", "mixed"]
)
def test_member_mixing_equals_the_reference_with_and_without_autograd(group):
    torch.manual_seed(6)
    mixing = MemberMixing(8, hidden_ratio=2)
    h = torch.randn(5, 12, 2, 8, requires_grad=True)
    out = mixing(h, group, 3)
    reference = _reference_mixing(mixing, h, group, 3)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    (grad_new,) = torch.autograd.grad(out.square().sum(), mixing.project.weight)
    (grad_ref,) = torch.autograd.grad(reference.square().sum(), mixing.project.weight)
    torch.testing.assert_close(grad_new, grad_ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(mixing(h, group, 3), reference.detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_members", [10, 20, 7], ids=["one-replica", "two-replicas", "partial-replica"])
def test_generated_members_equal_the_pre_change_code(monkeypatch, n_members):
    """A whole ``generate`` call (the hybrid cycle's: batch, guides with backgrounds, no autograd) equals the same
    call with the pre-change message passing, member mixing and group means to 1e-6."""
    torch.manual_seed(7)
    settings = MemberGeneratorSettings(steps=3, latent=16)
    core = MemberGeneratorCore(n_variables=1, graph=ring_graph(40, 2), settings=settings).eval()
    nn.init.normal_(core.output.weight, std=0.3)
    nn.init.normal_(core.output.bias, std=0.1)
    g = torch.Generator().manual_seed(8)
    backgrounds = torch.randn(4, 10, 40, 1, generator=g) + 2.0
    guide_backgrounds = torch.randn(4, 10, 40, 1, generator=g) + 2.0
    guides = 0.6 * guide_backgrounds + 0.3 * torch.randn(4, 10, 40, 1, generator=g) + 1.0

    def run() -> torch.Tensor:
        with torch.no_grad():
            return core.generate(
                backgrounds,
                guides,
                n_members,
                torch.Generator().manual_seed(9),
                guide_backgrounds=guide_backgrounds,
            ).members

    fast = run()
    monkeypatch.setattr(GridMessagePassing, "forward", _reference_message_passing)
    monkeypatch.setattr(MemberMixing, "forward", _reference_mixing)
    monkeypatch.setattr(member_generator_core, "group_mean", _reference_group_mean)
    monkeypatch.setattr(member_mixing, "group_mean", _reference_group_mean)
    reference = run()
    assert float(fast.std()) > 0.1  # members that differ (a trained-like, noisy flow)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)
