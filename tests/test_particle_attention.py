"""Ensemble-space (particle) attention: a float64 loop reference, zero at initialisation, equivariance over the
members of an ensemble and invariance over the guides, no attention across ensembles, and in the member generator
the cross-point, cross-member coupling a per-point network cannot form; old settings still load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybrid_eda.errors import UserInputError
from hybrid_eda.layers.graphs import ring_graph
from hybrid_eda.layers.particle_attention import GuideSet, ParticleAttention, guide_values
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings

B, N, GRID, VARS, LATENT, HEADS, D, N_GUIDES = 2, 5, 7, 3, 6, 2, 4, 3


def _layer(seed: int = 0) -> ParticleAttention:
    torch.manual_seed(seed)
    layer = ParticleAttention(LATENT, VARS, heads=HEADS, key_size=D).double()
    with torch.no_grad():
        layer.particle_mixing.normal_()
        layer.guide_mixing.normal_()
    return layer


def _tensors(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(B, N, GRID, LATENT, generator=g, dtype=torch.float64)
    values = torch.randn(B, N, GRID, VARS, 2, generator=g, dtype=torch.float64)
    guides = torch.randn(B, N_GUIDES, GRID, VARS, 2, generator=g, dtype=torch.float64)
    return tokens, values, guides


def _loop_reference(layer: ParticleAttention, tokens, values, group, guide_set: GuideSet) -> torch.Tensor:
    """The module docstring's sums, one pair of members (or member and guide) and one head at a time."""
    q, k, qg = layer.member_projection(tokens).unflatten(-1, (3 * HEADS, D)).split(HEADS, dim=-2)
    out = torch.zeros(B, N, GRID, VARS, dtype=torch.float64)
    for b in range(B):
        for i in range(N):
            members = [j for j in range(N) if group[j] == group[i]]
            for h in range(HEADS):
                for j in members:
                    a = (q[b, i, :, h] * k[b, j, :, h]).sum(-1).mean() / D**0.5
                    v = (values[b, j] * layer.particle_mixing[h].t()).sum(-1)  # [grid, var]
                    out[b, i] += a * v / len(members)
                for m in range(N_GUIDES):
                    a = (qg[b, i, :, h] * guide_set.keys[b, m, :, h]).sum(-1).mean() / D**0.5
                    v = (guide_set.values[b, m] * layer.guide_mixing[h].t()).sum(-1)
                    out[b, i] += a * v / N_GUIDES
    return out


@torch.no_grad()
def test_attention_matches_a_loop_reference_and_starts_at_zero():
    layer = _layer()
    tokens, values, guides = _tensors()
    group = torch.tensor([0, 0, 1, 0, 1])
    guide_set = layer.encode_guides(guides)
    assert guide_set.keys.shape == (B, N_GUIDES, GRID, HEADS, D)
    out = layer(tokens, values, group, 2, guide_set)
    torch.testing.assert_close(out, _loop_reference(layer, tokens, values, group, guide_set), rtol=1e-10, atol=1e-12)
    assert float(out.abs().mean()) > 0.01
    fresh = ParticleAttention(LATENT, VARS, heads=HEADS, key_size=D).double()
    assert float(fresh(tokens, values, group, 2, fresh.encode_guides(guides)).abs().max()) == 0.0


@torch.no_grad()
def test_attention_is_equivariant_within_an_ensemble_invariant_over_guides_and_blind_across_ensembles():
    layer = _layer()
    tokens, values, guides = _tensors()
    group = torch.tensor([0, 0, 1, 0, 1])
    guide_set = layer.encode_guides(guides)
    out = layer(tokens, values, group, 2, guide_set)
    perm = torch.tensor([3, 4, 0, 1, 2])  # any permutation of the members, groups travel with them
    permuted = layer(tokens[:, perm], values[:, perm], group[perm], 2, guide_set)
    torch.testing.assert_close(permuted, out[:, perm], rtol=1e-10, atol=1e-12)
    guide_perm = torch.tensor([2, 0, 1])
    shuffled = layer(tokens, values, group, 2, layer.encode_guides(guides[:, guide_perm]))
    torch.testing.assert_close(shuffled, out, rtol=1e-10, atol=1e-12)
    # a member of ensemble 1 changed: ensemble 0 does not see it, ensemble 1 does
    tokens2, values2 = tokens.clone(), values.clone()
    tokens2[:, 2] += 1.0
    values2[:, 2] -= 2.0
    other = layer(tokens2, values2, group, 2, guide_set)
    in_zero = group == 0
    torch.testing.assert_close(other[:, in_zero], out[:, in_zero], rtol=1e-10, atol=1e-12)
    assert float((other[:, ~in_zero] - out[:, ~in_zero]).abs().mean()) > 0.01


def test_guide_values_are_the_guides_analysis_and_background_anomalies():
    g = torch.Generator().manual_seed(0)
    guides, guide_bg = torch.randn(2, 4, GRID, VARS, generator=g), torch.randn(2, 4, GRID, VARS, generator=g)
    centre, spread = torch.randn(2, 1, GRID, VARS, generator=g), torch.rand(2, 1, GRID, VARS, generator=g) + 0.5
    values = guide_values(guides, guide_bg, centre, spread)
    torch.testing.assert_close(values[..., 0], (guides - guides.mean(1, keepdim=True)) / spread)
    torch.testing.assert_close(values[..., 1], (guide_bg - centre) / spread)
    assert float(guide_values(guides, None, centre, spread)[..., 1].abs().max()) == 0.0


# ------------------------------------------------------------------------------------------ in the generator
RING = 32


def _core(attention: bool) -> MemberGeneratorCore:
    torch.manual_seed(0)
    settings = MemberGeneratorSettings(particle_attention=attention, rounds=2)
    core = MemberGeneratorCore(n_variables=1, graph=ring_graph(RING, 2), settings=settings)
    with torch.no_grad():
        nn.init.normal_(core.output.weight, std=0.3)
        if attention:
            core.particle_attention.particle_mixing.normal_(std=0.5)
            core.particle_attention.guide_mixing.normal_(std=0.5)
    return core


def _ring_inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    backgrounds = torch.randn(6, RING, 1, generator=g) + 2.0
    guide_bg = torch.randn(4, RING, 1, generator=g) + 2.0
    guides = 0.6 * guide_bg + 0.3 * torch.randn(guide_bg.shape, generator=g) + 1.0
    return backgrounds, guides, guide_bg


@pytest.mark.parametrize("attention", [False, True])
def test_only_the_attention_couples_a_member_to_far_points_of_the_others(attention):
    """Message passing reaches 2 rounds x 2 neighbours x 2 Heun stages = 8 points in one step; the ring has 32.

    A change of another member's background (or of a guide) 16 points away reaches member 0 at point 0 only
    through the grid-pooled attention weights: the cross-point, cross-member algebra of an ensemble transform.
    """
    core = _core(attention)
    backgrounds, guides, guide_bg = _ring_inputs()

    @torch.no_grad()
    def member0_at_0(bg, ga):
        zeros = torch.zeros(6, 1, RING, 1)
        return core.generate(bg, ga, 6, None, guide_backgrounds=guide_bg, steps=1, increments=zeros).members[0, 0, 0]

    base = member0_at_0(backgrounds, guides)
    far_member, far_guide = backgrounds.clone(), guides.clone()
    far_member[1, 16] += 1.0
    far_guide[2, 16] += 1.0
    changes = [float(member0_at_0(far_member, guides) - base), float(member0_at_0(backgrounds, far_guide) - base)]
    changes = [abs(change) for change in changes]
    if attention:
        assert min(changes) > 1e-4
    else:
        assert max(changes) == 0.0


def test_settings_of_older_checkpoints_load_without_attention():
    """A pickled core from before the setting has no such field: the class default (off) applies."""
    core = _core(attention=False)
    backgrounds, guides, guide_bg = _ring_inputs()
    before = core.generate(backgrounds, guides, 6, torch.Generator().manual_seed(0), guide_backgrounds=guide_bg)
    for name in ("particle_attention", "attention_heads", "attention_key_size"):
        object.__delattr__(core.settings, name)  # what unpickling an older MemberGeneratorSettings gives
    assert "particle_attention" not in vars(core.settings) and core.settings.particle_attention is False
    after = core.generate(backgrounds, guides, 6, torch.Generator().manual_seed(0), guide_backgrounds=guide_bg)
    torch.testing.assert_close(after.members, before.members, rtol=0, atol=0)
    with pytest.raises(UserInputError, match="attention_heads must be >= 1"):
        MemberGeneratorSettings(particle_attention=True, attention_heads=0)


def test_the_model_config_switches_the_attention_on_and_old_configs_keep_it_off():
    """``model.model.particle_attention`` (off in configs/model/member_generator.yaml, on in member_generator_l96)
    reaches the core."""
    import math

    import numpy as np
    from anemoi.models.data_indices.collection import IndexCollection
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from torch_geometric.data import HeteroData

    from hybrid_eda.models import MemberGenerator
    from hybrid_eda.resources import configs_dir

    n = 40
    graph = HeteroData()
    graph["eda"].x = torch.stack([torch.zeros(n), 2 * math.pi * torch.arange(n) / n], dim=-1)
    dst = torch.arange(n).repeat_interleave(3)
    shift = torch.tensor([-1.0, 0.0, 1.0]).repeat(n)
    edges = graph[("eda", "to", "eda")]
    edges.edge_index = torch.stack([(dst + shift.long()) % n, dst])
    edges.edge_length, edges.edge_dirs = shift.abs()[:, None], torch.stack([shift, torch.zeros_like(shift)], -1)
    stats = {
        "mean": np.full(3, 2.3),
        "stdev": np.full(3, 3.6),
        "minimum": np.full(3, -10.0),
        "maximum": np.full(3, 15.0),
    }

    def build(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(configs_dir()), version_base=None):
            config = compose("member_generator_l96", overrides=list(overrides))
        indices = {"eda": IndexCollection(config.data.datasets.eda, {"obs": 0, "x_an": 1, "x_bg": 2})}
        kwargs = {"data_indices": indices, "statistics": {"eda": stats}, "graph_data": graph}
        return MemberGenerator(model_config=config, n_step_input=1, n_step_output=1, **kwargs)

    shipped = build()
    assert shipped.core.settings.particle_attention  # member_generator_l96 ships it
    plain = build("model.model.particle_attention=false")
    attention = build("model.model.particle_attention=true", "model.model.attention_key_size=4")
    assert not plain.core.settings.particle_attention and not hasattr(plain.core, "particle_attention")
    assert attention.core.settings.particle_attention and attention.core.settings.attention_key_size == 4
    assert attention.core.particle_attention.member_projection.out_features == 3 * 2 * 4
    assert shipped.n_parameters - plain.n_parameters == 2_216
    assert "+2,216 parameters" in (configs_dir() / "model" / "member_generator.yaml").read_text()
