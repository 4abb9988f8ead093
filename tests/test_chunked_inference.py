"""Chunked inference of the variance emulator computes the core's own forward pass (the same function)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybrid_eda.layers.blocks import GridGraph
from hybrid_eda.models.chunked_inference import chunked_forward, column_mixing_, message_passing_
from hybrid_eda.models.variance_core import VarianceEmulatorCore, VarianceEmulatorSettings

N_GRID, K = 120, 9


def _sphere_graph(seed: int = 0) -> tuple[torch.Tensor, GridGraph]:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(N_GRID, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    lat, lon = np.arcsin(xyz[:, 2]), np.arctan2(xyz[:, 1], xyz[:, 0])
    distance = np.arccos(np.clip(xyz @ xyz.T, -1, 1))
    src = np.argsort(distance, axis=1)[:, :K].reshape(-1)
    dst = np.repeat(np.arange(N_GRID), K)
    length = distance[dst, src]
    attr = np.stack([length / length.std(), np.sin(lon[src] - lon[dst]), lat[src] - lat[dst]], axis=1)
    graph = GridGraph(torch.from_numpy(src), torch.from_numpy(dst), torch.from_numpy(attr).float(), N_GRID)
    return torch.from_numpy(np.stack([lat, lon], axis=1)).float(), graph


def _core(levels: int = 3, seed: int = 0, **settings) -> VarianceEmulatorCore:
    """Five variables on ``levels`` levels plus a single-level one, random weights (the last layer too)."""
    torch.manual_seed(seed)
    coordinates, graph = _sphere_graph(seed)
    level = torch.tensor([lev for _ in range(5) for lev in range(levels)] + [0])
    variable = torch.tensor([v for v in range(5) for _ in range(levels)] + [5])
    n = len(level)
    defaults = {"latent": 8, "rounds": 2, "heads": 3, "kernel_hidden": 8}
    core = VarianceEmulatorCore(
        channel_level=level,
        channel_variable=variable,
        input_mean=torch.randn(n),
        input_std=torch.rand(n) + 0.5,
        node_coordinates=coordinates,
        graph=graph,
        spread_reference=torch.rand(n) + 0.5,
        positive=torch.arange(n) % 2 == 0,
        front_reference=torch.arange(n).flip(0),
        settings=VarianceEmulatorSettings(**{**defaults, **settings}),
    )
    with torch.no_grad():
        for parameter in core.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return core.eval()


def _members(core: VarianceEmulatorCore, batch: int = 1, m: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, m, core.n_grid, core.n_channels, generator=generator).exp()


@pytest.mark.parametrize(("channel_chunk", "grid_chunk"), [(1, 7), (4, 50), (1000, 1000)])
def test_chunked_forward_equals_the_core(channel_chunk, grid_chunk):
    core = _core()
    members = _members(core, batch=2)
    log_target_mul = torch.randn(core.n_channels)
    with torch.inference_mode():
        expected = core(members, log_target_mul)
        got = chunked_forward(core, members, log_target_mul, channel_chunk=channel_chunk, grid_chunk=grid_chunk)
    assert got.shape == expected.shape == (2, 2, N_GRID, core.n_channels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(expected[:, 0], torch.zeros_like(expected[:, 0]))


@pytest.mark.parametrize(
    "settings",
    [
        {"use_neighbours": False},
        {"hidden_ratio": 2, "rounds": 1},
        {"heads": 1},
        {"log_mean_feature": True},
        {"diffusion_steps": (), "front_features": False},
    ],
)
def test_chunked_forward_equals_the_core_for_other_settings(settings):
    core = _core(**settings)
    members = _members(core, m=3)
    with torch.inference_mode():
        torch.testing.assert_close(chunked_forward(core, members, grid_chunk=33), core(members), rtol=1e-5, atol=1e-5)


def test_blocks_in_place_equal_the_blocks():
    core = _core()
    h = torch.randn(N_GRID, 1, core.n_channels, core.settings.latent)
    with torch.inference_mode():
        torch.testing.assert_close(
            message_passing_(core.message_passing[0], h.clone(), core.graph, 3, 17),
            core.message_passing[0](h, core.graph),
        )
        torch.testing.assert_close(column_mixing_(core.column_mixing[0], h.clone(), 17), core.column_mixing[0](h))


def test_chunked_forward_needs_inference_mode_and_the_right_shape():
    core = _core()
    with pytest.raises(ValueError, match="inference_mode"):
        chunked_forward(core, _members(core))
    with torch.inference_mode(), pytest.raises(ValueError, match=r"members must be \[batch, M, grid=120"):
        chunked_forward(core, _members(core)[..., :-1])
    with torch.inference_mode(), pytest.raises(ValueError, match="chunk sizes"):
        chunked_forward(core, _members(core), channel_chunk=0)


def test_another_block_kind_is_refused():
    core = _core()
    core.column_mixing[0] = torch.nn.Identity()
    with torch.inference_mode(), pytest.raises(TypeError, match="architecture changed"):
        chunked_forward(core, _members(core))
