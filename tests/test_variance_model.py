"""The variance emulator's layers and model: neighbour sums against a loop reference and gradcheck, the members'
debiased log-spread against Monte Carlo, permutation invariance and any M, positive outputs, the neighbour
response (output at a point moves with the members at its neighbours, and not without message passing),
parameter counts of the shipped configs, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from hybrid_eda.distributions import LogNormal
from hybrid_eda.layers import GridGraph, edge_softmax, edge_weighted_sum, member_spread
from hybrid_eda.layers.grid_features import GridGradient, LatitudeRings, diffuse
from hybrid_eda.layers.heads import GaussianHead, LogNormalHead
from hybrid_eda.models import VarianceEmulatorCore, VarianceEmulatorSettings
from hybrid_eda.models.variance_emulator import column_levels

N_GRID, K_NEIGHBOURS = 48, 5


def _sphere_graph(n: int = N_GRID, k: int = K_NEIGHBOURS, seed: int = 0) -> tuple[torch.Tensor, GridGraph]:
    """Random points on the sphere, each joined to its k nearest (itself included), edge attributes = length."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    lat, lon = np.arcsin(xyz[:, 2]), np.arctan2(xyz[:, 1], xyz[:, 0])
    distance = np.arccos(np.clip(xyz @ xyz.T, -1, 1))
    nearest = np.argsort(distance, axis=1)[:, :k]  # [dst, k] sources
    dst = np.repeat(np.arange(n), k)
    src = nearest.reshape(-1)
    length = distance[dst, src]
    attr = np.stack([length / length.std(), np.sin(lon[src] - lon[dst]), lat[src] - lat[dst]], axis=1)
    graph = GridGraph(torch.from_numpy(src), torch.from_numpy(dst), torch.from_numpy(attr).float(), n)
    return torch.from_numpy(np.stack([lat, lon], axis=1)).float(), graph


def _core(
    n_channels: int = 4,
    use_neighbours: bool = True,
    rounds: int = 2,
    seed: int = 0,
    diffusion_steps: tuple[int, ...] = (1, 2),
    front_features: bool = True,
    log_mean_feature: bool = False,
    **kwargs,
):
    """A small core; without diffusion steps and front features its reach is ``rounds`` hops."""
    torch.manual_seed(seed)
    coordinates, graph = _sphere_graph()
    core = VarianceEmulatorCore(
        channel_level=torch.tensor([0, 1] * (n_channels // 2)),
        channel_variable=torch.arange(n_channels) // 2,
        input_mean=torch.zeros(n_channels),
        input_std=torch.ones(n_channels),
        node_coordinates=coordinates,
        graph=graph,
        settings=VarianceEmulatorSettings(
            latent=8,
            rounds=rounds,
            heads=2,
            kernel_hidden=8,
            use_neighbours=use_neighbours,
            diffusion_steps=diffusion_steps,
            front_features=front_features,
            front_zonal_anomaly=False,  # random points: every latitude ring has one point
            log_mean_feature=log_mean_feature,
        ),
        **kwargs,
    )
    return core, graph


def _trained_like(core: VarianceEmulatorCore) -> VarianceEmulatorCore:
    """The untrained head is zero (the model starts at the debiased s_M); give it random weights."""
    with torch.no_grad():
        core.output.mlp[-1].weight.normal_(0.0, 0.5)
    return core


# -- layers ------------------------------------------------------------------------------------------------------


def test_edge_weighted_sum_matches_a_loop_and_gradcheck():
    rng = torch.Generator().manual_seed(1)
    n_src, n_dst, n_edges, width = 7, 5, 30, 3  # random edges: duplicates included
    src = torch.randint(0, n_src, (n_edges,), generator=rng)
    dst = torch.randint(0, n_dst, (n_edges,), generator=rng)
    x = torch.randn(n_src, width, dtype=torch.float64, generator=rng, requires_grad=True)
    w = torch.randn(n_edges, dtype=torch.float64, generator=rng, requires_grad=True)
    reference = torch.zeros(n_dst, width, dtype=torch.float64)
    for e in range(n_edges):
        reference[dst[e]] += w[e].detach() * x[src[e]].detach()
    torch.testing.assert_close(edge_weighted_sum(x, w, src, dst, n_dst), reference)
    assert torch.autograd.gradcheck(lambda x, w: edge_weighted_sum(x, w, src, dst, n_dst), (x, w))


def test_edge_softmax_normalises_the_incoming_edges():
    dst = torch.tensor([0, 0, 1, 1, 1, 2])
    weights = edge_softmax(torch.randn(6, 3) * 30, dst, 3)
    sums = torch.zeros(3, 3).index_add(0, dst, weights)
    torch.testing.assert_close(sums, torch.ones(3, 3))


@pytest.mark.parametrize("n_members", [2, 3, 5, 10])
def test_debiased_log_spread_is_unbiased_for_gaussian_members(n_members):
    sigma = torch.tensor([1e-6, 1.0, 300.0])  # any units
    members = torch.randn(200_000, n_members, 1, 3, generator=torch.Generator().manual_seed(n_members)) * sigma
    stats = member_spread(members.double(), dim=1)
    tolerance = 5 * stats.noise / math.sqrt(members.shape[0])  # 5 Monte Carlo standard errors
    torch.testing.assert_close(stats.log_spread.mean(dim=0)[0], torch.log(sigma).double(), atol=tolerance, rtol=0)
    assert stats.log_spread.std(dim=0).mean().item() == pytest.approx(stats.noise, rel=0.02)


def test_fewer_than_two_members_is_explained():
    with pytest.raises(ValueError, match="at least 2 members"):
        member_spread(torch.ones(1, 1, 4, 3), dim=1)


def test_heads_are_positive_and_stable_for_tiny_and_huge_spreads():
    log_centre = torch.tensor([-60.0, 0.0, 40.0]).view(1, 1, 3)
    raw = torch.tensor([-200.0, 0.0, 200.0]).view(1, 1, 3)
    for head in (LogNormalHead(), GaussianHead()):
        out = head(log_centre[:, None], raw[:, None], torch.zeros(3))
        assert out.shape == (1, 2, 1, 3) and torch.isfinite(out).all() and (out[:, 1] > 0).all()


# -- the core ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_mean", [False, True])
def test_untrained_model_predicts_the_debiased_member_spread(log_mean):
    positive = torch.tensor([True, False, True, False])
    core, _ = _core(log_mean_feature=log_mean, positive=positive)
    members = torch.randn(2, 5, N_GRID, 4) * torch.tensor([1e-5, 1.0, 2.0, 40.0])
    dist = LogNormal.from_tensor(core(members), validate=True)
    torch.testing.assert_close(dist.mu[:, 0], member_spread(members, dim=1).log_spread)


def test_permutation_invariant_over_members_and_any_m():
    core, _ = _trained_like(_core()[0]), None
    members = torch.randn(1, 6, N_GRID, 4, generator=torch.Generator().manual_seed(3))
    out = core(members)
    torch.testing.assert_close(core(members[:, torch.randperm(6)]), out, rtol=1e-5, atol=1e-5)
    for m in (2, 3, 9):
        assert torch.isfinite(core(torch.randn(1, m, N_GRID, 4))).all()


def _response(core: VarianceEmulatorCore, point: int) -> torch.Tensor:
    """|d mu[point, :] / d members[:, grid, :]| summed per grid point (the autograd Jacobian row)."""
    members = torch.randn(1, 5, N_GRID, 4, generator=torch.Generator().manual_seed(4), requires_grad=True)
    mu = core(members)[0, 0, point]  # [channel]
    (grad,) = torch.autograd.grad(mu.sum(), members)
    return grad.abs().sum(dim=(0, 1, 3))  # [grid]


def test_output_at_a_point_responds_to_its_neighbours():
    core, graph = _core(rounds=1, diffusion_steps=(), front_features=False)
    core = _trained_like(core)
    point = 0
    neighbours = graph.src[graph.dst == point].tolist()
    response = _response(core, point)
    assert response[point] > 0
    others = [j for j in neighbours if j != point]
    assert len(others) == K_NEIGHBOURS - 1
    assert all(response[j] > 1e-4 * response[point] for j in others), response[others]
    far = sorted(set(range(N_GRID)) - set(neighbours))  # one round: nothing beyond the first neighbours
    assert torch.all(response[far] == 0)


@pytest.mark.parametrize("front_reference", [None, torch.tensor([1, 1, -1, 1])])
def test_no_message_passing_sees_only_the_point_itself(front_reference):
    core, _ = _core(use_neighbours=False, front_reference=front_reference)
    response = _response(_trained_like(core), point=0)
    assert response[0] > 0
    assert torch.all(response[1:] == 0)


def test_more_rounds_reach_further():
    _, graph = _core()
    reach = {}
    for rounds in (1, 2):
        core, _ = _core(rounds=rounds, diffusion_steps=(), front_features=False)
        reach[rounds] = int((_response(_trained_like(core), point=0) > 0).sum())
    assert reach[1] == K_NEIGHBOURS < reach[2]


def _hops(graph: GridGraph, point: int) -> torch.Tensor:
    """Edges needed to reach ``point`` from every grid point (breadth-first on the incoming edges)."""
    hops = torch.full((graph.n_nodes,), -1)
    hops[point], frontier, depth = 0, {point}, 0
    while frontier:
        depth += 1
        reached = {int(s) for s, d in zip(graph.src, graph.dst, strict=True) if int(d) in frontier}
        frontier = {j for j in reached if hops[j] < 0}
        hops[list(frontier)] = depth
    return hops


def test_grid_features_reach_as_far_as_their_diffusion_steps():
    """One round + the log-spread diffused (1, 2) steps: the output at a point moves with the members up to 3 hops
    away and not beyond; the front indicator (a gradient normalised by its rms over the grid) reaches everywhere."""
    point = 5  # its component of the small random graph is 5 hops deep
    _, graph = _core()
    hops = _hops(graph, point)
    near, far = (hops >= 0) & (hops <= 3), (hops < 0) | (hops > 3)
    core, _ = _core(rounds=1, front_features=False)
    response = _response(_trained_like(core), point)
    assert torch.all(response[near] > 0) and torch.all(response[far] == 0)
    core, _ = _core(rounds=1)
    assert torch.all(_response(_trained_like(core), point)[far] > 0)


def test_diffusion_keeps_constants_and_spreads_a_spike_one_hop_per_step():
    _, graph = _core()
    constant = torch.full((N_GRID, 2), 3.0)
    for smoothed in diffuse(constant, graph.src, graph.dst, N_GRID, (1, 5)):
        torch.testing.assert_close(smoothed, constant)
    point = 5
    spike = torch.zeros(N_GRID, 1)
    spike[point] = 1.0
    hops = _hops(graph, point)  # edges from each point to `point` = steps from `point` along the reversed edges
    one, two = diffuse(spike, graph.dst, graph.src, N_GRID, (1, 2))
    assert torch.equal(one[:, 0] > 0, (hops >= 0) & (hops <= 1))
    assert torch.equal(two[:, 0] > 0, (hops >= 0) & (hops <= 2))
    with pytest.raises(ValueError, match="increasing positive"):
        diffuse(spike, graph.src, graph.dst, N_GRID, (2, 1))


def test_diffusion_without_gradients_is_the_autograd_path_chunk_by_chunk():
    """Inference diffuses 32 channels at a time through one CSR matrix; training keeps the autograd path."""
    from hybrid_eda.layers import grid_features

    _, graph = _core()
    x = torch.randn(N_GRID, 2 * grid_features.DIFFUSION_CHUNK + 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = diffuse(x, graph.src, graph.dst, N_GRID, (1, 4, 9))
    slow = diffuse(x.clone().requires_grad_(True), graph.src, graph.dst, N_GRID, (1, 4, 9))
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-6)


def test_grid_gradient_of_a_linear_field_and_a_unit_free_front_indicator():
    """f = a . xyz on a fine random sphere graph: the gradient is a's tangent part (east, north) to a few % (the
    chords' radial part is second order), and the front indicator is the same for f and 1000 f - 3."""
    coordinates, graph = _sphere_graph(n=3000, k=9, seed=2)
    lat, lon = coordinates[:, 0].double(), coordinates[:, 1].double()
    a = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    xyz = torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], -1)
    east = torch.stack([-torch.sin(lon), torch.cos(lon), torch.zeros_like(lon)], -1)
    north = torch.stack([-torch.sin(lat) * torch.cos(lon), -torch.sin(lat) * torch.sin(lon), torch.cos(lat)], -1)
    gradient = GridGradient(coordinates, graph.src, graph.dst)
    f = (xyz @ a).float()[:, None]
    estimate = gradient(f)[:, :, 0].t().double()  # [grid, 2]
    expected = torch.stack([east @ a, north @ a], -1)
    error = (estimate - expected).norm(dim=-1) / a.norm()
    assert error.median() < 0.03
    front = gradient.front_indicator(f)
    torch.testing.assert_close(gradient.front_indicator(1e3 * f - 3.0), front, rtol=1e-3, atol=1e-3)
    assert front.square().mean().item() == pytest.approx(1.0, rel=1e-4)


def test_zonal_anomaly_removes_fields_of_latitude_only():
    latitudes = torch.tensor([0.5, 0.5, 0.5, -0.2, -0.2, 1.0])
    rings = LatitudeRings(latitudes)
    f = torch.stack([torch.cos(3 * latitudes), latitudes**2], -1)  # [grid, 2], functions of latitude only
    torch.testing.assert_close(rings.anomaly(f), torch.zeros_like(f))
    g = torch.tensor([1.0, 2.0, 6.0, -1.0, 1.0, 5.0])[:, None]
    torch.testing.assert_close(rings.anomaly(g)[:, 0], torch.tensor([-2.0, -1.0, 3.0, -1.0, 1.0, 0.0]))


def test_single_level_variable_joins_the_lowest_model_level():
    variables = ["d", "d", "d", "lnsp", "t", "t", "t"]
    assert column_levels(variables, [1, 2, 3, 1, 1, 2, 3]) == [1, 2, 3, 3, 1, 2, 3]
    assert column_levels(["lnsp", "msl"], [1, 0]) == [1, 0]  # only single-level variables: left alone


def test_wrong_input_shape_is_explained():
    core, _ = _core()
    with pytest.raises(ValueError, match="another grid or another variable list"):
        core(torch.randn(1, 5, N_GRID + 1, 4))


# -- the anemoi adapter, built from the shipped configs ------------------------------------------------------------

VARIABLES = ("d", "lnsp", "o3", "q", "t", "vo")


def _names(levels: int) -> list[str]:
    return [f"{v}_{k}" for v in VARIABLES for k in range(1, (1 if v == "lnsp" else levels) + 1)]


def _shipped_model_config(name: str, levels: int, overrides: list[str] | None = None):
    """The composed shipped config ``name`` (model and data sections), with the target variables listed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hybrid_eda.resources import configs_dir
    from hybrid_eda.training import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(configs_dir()), version_base=None):
        cfg = compose(name, overrides=overrides or [])
    targets = [n.replace("_", "_std_", 1) if n.count("_") == 1 else n for n in _names(levels)]
    OmegaConf.update(cfg, "data.datasets.spread.diagnostic", targets, force_add=True)
    return OmegaConf.create({"model": OmegaConf.to_container(cfg.model, resolve=True), "data": cfg.data}), targets


def _emulator(
    model_config, levels: int, targets: list[str], *, shift_target_grid: bool = False, declare_targets: bool = True
):
    from torch_geometric.data import HeteroData

    from hybrid_eda.models.standalone import build_variance_emulator

    model_config.data.datasets.spread.diagnostic = targets if declare_targets else []
    coordinates, graph = _sphere_graph()
    graph_data = HeteroData()
    graph_data["members"].x = coordinates
    graph_data["spread"].x = coordinates + (0.1 if shift_target_grid else 0.0)
    edges = graph_data[("members", "to", "members")]
    edges.edge_index = torch.stack([graph.src, graph.dst])
    edges.edge_length = graph.edge_attr[:, :1]
    edges.edge_dirs = graph.edge_attr[:, 1:]
    return build_variance_emulator(model_config, _names(levels), targets, graph_data)


def _shipped_configs() -> list[str]:
    from hybrid_eda.resources import configs_dir, shipped

    return [name for name in shipped(configs_dir()) if name.startswith("variance_emulator")]


def test_both_configs_are_shipped():
    assert {"variance_emulator_synthetic", "variance_emulator_n80"} <= set(_shipped_configs())


@pytest.mark.parametrize("levels", [137, 5])
@pytest.mark.parametrize("config", _shipped_configs())
def test_shipped_config_parameter_count(config, levels):
    """Each shipped config builds a model of fewer than 200,000 learnable parameters, 6 variables x 137 levels."""
    model_config, targets = _shipped_model_config(config, levels)
    model = _emulator(model_config, levels, targets)
    assert 10_000 < model.n_parameters < 200_000
    members = torch.randn(2, 1, 5, N_GRID, len(_names(levels)))
    out = model({"members": members, "spread": members[..., :0]})["spread"]
    assert out.shape == (2, 1, 2, N_GRID, len(targets))


def test_shipped_config_no_mp_switch():
    model_config, targets = _shipped_model_config("variance_emulator_synthetic", 2, ["model.emulator_no_mp=True"])
    model = _emulator(model_config, 2, targets)
    assert not any(block.use_neighbours for block in model.core.message_passing)


def test_front_reference_is_the_temperature_of_the_channels_column():
    model_config, targets = _shipped_model_config(
        "variance_emulator_synthetic", 3, ["model.model.front_reference=t", "model.model.front_features=True"]
    )
    model = _emulator(model_config, 3, targets)
    names = model.input_names
    reference = [names[i] for i in model.core.front_reference.tolist()]
    expected = {"d_2": "t_2", "t_3": "t_3", "lnsp_1": "t_3", "q_1": "t_1"}  # lnsp: the lowest model level
    assert {n: r for n, r in zip(names, reference, strict=True) if n in expected} == expected
    core = model.core
    assert core.token_embedding.in_features == core.settings.n_token_features + 2
    model_config, targets = _shipped_model_config(
        "variance_emulator_synthetic", 3, ["model.model.front_reference=w", "model.model.front_features=True"]
    )
    with pytest.raises(ValueError, match="front_reference 'w' is not among the variables"):
        _emulator(model_config, 3, targets)


def test_target_on_another_grid_is_explained():
    model_config, targets = _shipped_model_config("variance_emulator_synthetic", 2)
    with pytest.raises(ValueError, match="on another grid"):
        _emulator(model_config, 2, targets, shift_target_grid=True)


def test_target_without_matching_input_is_explained():
    model_config, targets = _shipped_model_config("variance_emulator_synthetic", 2)
    with pytest.raises(ValueError, match="no input variable of the same name"):
        _emulator(model_config, 2, [*targets[:-1], "w_std_1"])


def test_mean_subtracting_target_normaliser_is_refused():
    model_config, targets = _shipped_model_config(
        "variance_emulator_synthetic", 2, ["data.datasets.spread.processors.normalizer.config.default=mean-std"]
    )
    with pytest.raises(ValueError, match="multiplicative"):
        _emulator(model_config, 2, targets)


def test_emulator_sees_no_target_input():
    model_config, targets = _shipped_model_config("variance_emulator_synthetic", 2)
    with pytest.raises(ValueError, match="would see its target"):
        _emulator(model_config, 2, targets, declare_targets=False)


def test_log_noise_of_five_members():
    assert member_spread(torch.randn(1, 5, 1, 1), dim=1).noise == pytest.approx(0.5 * math.sqrt(math.pi**2 / 6 - 1))
