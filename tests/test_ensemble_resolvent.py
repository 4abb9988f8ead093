"""Ensemble-space resolvents: a float64 loop reference, the Kalman mean increment in closed form (Woodbury), zero at
initialisation in the generator, equivariance over the particles and invariance over the guides, partial replicas,
and old settings still load."""

from __future__ import annotations

import math

import pytest
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.layers.ensemble_resolvent import EnsembleResolvent, replica_masks
from hybrid_eda.layers.graphs import ring_graph
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings
from member_generator_checkpoints import ring_inputs

B, K, GRID, VARS, N_GUIDES, TERMS = 2, 4, 9, 2, 3, 3


def _layer(seed: int = 0) -> EnsembleResolvent:
    torch.manual_seed(seed)
    layer = EnsembleResolvent(VARS, terms=TERMS, gains=(0.5, 20.0)).double()
    with torch.no_grad():
        layer.transform_mixing.normal_()
        layer.mean_mixing.normal_()
        layer.log_gain.add_(0.3 * torch.randn_like(layer.log_gain))
    return layer


def _tensors(seed: int = 1, n: int = 2 * K - 1):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return (
        rand(B, K, GRID, VARS),  # particle features F
        rand(B, N_GUIDES, GRID, VARS),  # guide features
        rand(B, 2, GRID, VARS),  # right-hand sides
        rand(B, n, GRID, VARS, 2),  # particle values
        rand(B, N_GUIDES, GRID, VARS, 2),  # guide values
    )


def _table(rows) -> torch.Tensor:
    return torch.tensor([[float(x) for x in row] for row in rows], dtype=torch.float64)


def _loop_reference(layer, features, guide_features, rhs, values, guide_values, n):
    """The module docstring's sums, one replica, term, source and target at a time, with an explicit inverse."""
    out = torch.zeros(B, n, GRID, VARS, dtype=torch.float64)
    gain = layer.log_gain.exp()
    for b in range(B):
        for r in range(-(-n // K)):
            members = [j for j in range(r * K, min(n, (r + 1) * K))]
            sources = [("p", j % K, values[b, j]) for j in members]
            sources += [("g", m, guide_values[b, m]) for m in range(N_GUIDES)]
            feats = [features[b, s] if kind == "p" else guide_features[b, s] for kind, s, _ in sources]
            for t in range(TERMS):
                gram = _table([[(gain[t] * fi * fj).sum(-1).mean() for fj in feats] for fi in feats])
                resolvent = torch.linalg.inv(torch.eye(len(feats), dtype=torch.float64) + gram)
                e = _table([[(gain[t] * f * rhs[b, q]).sum(-1).mean() for f in feats] for q in range(2)])
                u = e @ resolvent  # [q, sources]
                for a, (kind, _, value) in enumerate(sources):
                    src = 0 if kind == "p" else 1
                    moved = (value * layer.transform_mixing[t, src].t()).sum(-1)  # [grid, var]
                    mean = sum(u[q, a] * (value * layer.mean_mixing[t, q, src].t()).sum(-1) for q in range(2))
                    for i, j in enumerate(members):
                        out[b, j] += resolvent[a, i] * moved + mean
    return out


@torch.no_grad()
def test_resolvent_matches_a_loop_reference_with_a_partial_replica():
    layer = _layer()
    features, guide_features, rhs, values, guide_values = _tensors()
    n = values.shape[1]  # 2 K - 1: the second replica lacks the last background
    masks = replica_masks(K, n, dtype=torch.float64, device=torch.device("cpu"))
    assert masks.tolist() == [[1.0] * K, [1.0] * (K - 1) + [0.0]]
    prepared = layer.prepare(features, guide_features, rhs, masks)
    out = layer(values, guide_values, prepared, n)
    reference = _loop_reference(layer, features, guide_features, rhs, values, guide_values, n)
    torch.testing.assert_close(out, reference, rtol=1e-9, atol=1e-11)
    assert float(out.abs().mean()) > 0.01


@torch.no_grad()
def test_the_mean_term_is_the_kalman_mean_increment():
    """With one variable, the Gram gain w and unit weights on the background channel, the mean term is
    ``X (I + (w / grid) X^T X)^-1 (w / grid) X^T d = B (B + (grid / w) I)^-1 d`` with ``B = X X^T`` (Woodbury): the
    ETKF's (and the EnKF's) mean increment, from all N background anomalies, particles and guides together."""
    g = torch.Generator().manual_seed(3)
    grid, n_particles, n_guides, w = 11, 5, 4, 7.0
    layer = EnsembleResolvent(1, terms=1, gains=(w, w)).double()
    with torch.no_grad():
        layer.log_gain.fill_(math.log(w))  # exactly w in float64
        layer.mean_mixing[0, 0, :, 1, 0] = 1.0  # innovation rhs, both sources, background-anomaly channel
    x = torch.randn(1, n_particles + n_guides, grid, 1, generator=g, dtype=torch.float64)
    d = torch.randn(1, 1, grid, 1, generator=g, dtype=torch.float64)
    rhs = torch.cat([d, torch.zeros_like(d)], dim=1)
    masks = replica_masks(n_particles, n_particles, dtype=torch.float64, device=torch.device("cpu"))
    prepared = layer.prepare(x[:, :n_particles], x[:, n_particles:], rhs, masks)
    values = torch.stack([torch.zeros_like(x), x], dim=-1)  # channel 1: the background anomaly (sb = 1)
    out = layer(values[:, :n_particles], values[:, n_particles:], prepared, n_particles)
    anomalies = x[0, :, :, 0].t()  # [grid, N]
    b = anomalies @ anomalies.t()
    increment = b @ torch.linalg.solve(b + (grid / w) * torch.eye(grid, dtype=torch.float64), d[0, 0])
    for i in range(n_particles):  # the same mean increment for every member
        torch.testing.assert_close(out[0, i], increment, rtol=1e-10, atol=1e-12)


@torch.no_grad()
def test_resolvent_is_equivariant_over_particles_and_invariant_over_guides():
    layer = _layer()
    features, guide_features, rhs, values, guide_values = _tensors(n=K)
    masks = replica_masks(K, K, dtype=torch.float64, device=torch.device("cpu"))
    out = layer(values, guide_values, layer.prepare(features, guide_features, rhs, masks), K)
    perm, guide_perm = torch.tensor([2, 0, 3, 1]), torch.tensor([1, 2, 0])
    prepared = layer.prepare(features[:, perm], guide_features[:, guide_perm], rhs, masks)
    permuted = layer(values[:, perm], guide_values[:, guide_perm], prepared, K)
    torch.testing.assert_close(permuted, out[:, perm], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------ in the generator
RING = 24


def _core(resolvent: bool, seed: int = 0) -> MemberGeneratorCore:
    torch.manual_seed(seed)
    settings = MemberGeneratorSettings(particle_attention=True, ensemble_resolvent=resolvent, observation_features=True)
    return MemberGeneratorCore(n_variables=1, graph=ring_graph(RING, 2), settings=settings)


@torch.no_grad()
def test_an_untrained_resolvent_changes_nothing_and_a_trained_one_couples_the_ensemble():
    backgrounds, guides, guide_bg, observations = ring_inputs(RING)

    def members(core, bg=backgrounds, obs=observations):
        generator = torch.Generator().manual_seed(0)
        return core.generate(bg, guides, 9, generator, guide_backgrounds=guide_bg, observations=obs).members

    plain, fresh = _core(False), _core(True)
    torch.testing.assert_close(members(fresh), members(plain), rtol=0, atol=0)
    fresh.ensemble_resolvent.mean_mixing.normal_()
    fresh.ensemble_resolvent.transform_mixing.normal_()
    base = members(fresh)
    assert float((base - members(plain)).abs().mean()) > 1e-3
    # the mean term reads the observations; a far background moves every member of the ensemble
    moved_obs = observations.clone()
    moved_obs[12] += 1.0
    assert float((members(fresh, obs=moved_obs) - base)[:6, 0].abs().min()) > 1e-6
    far = backgrounds.clone()
    far[1, 12] += 1.0
    assert float((members(fresh, bg=far) - base)[:6, 0].abs().min()) > 1e-6


def test_settings_of_older_checkpoints_load_without_the_resolvent():
    core = _core(False)
    backgrounds, guides, guide_bg, observations = ring_inputs(RING)
    kwargs = {"guide_backgrounds": guide_bg, "observations": observations}
    before = core.generate(backgrounds, guides, 6, torch.Generator().manual_seed(0), **kwargs)
    for name in ("ensemble_resolvent", "resolvent_terms"):
        object.__delattr__(core.settings, name)  # what unpickling an older MemberGeneratorSettings gives
    assert "ensemble_resolvent" not in vars(core.settings) and core.settings.ensemble_resolvent is False
    after = core.generate(backgrounds, guides, 6, torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(after.members, before.members, rtol=0, atol=0)
    assert not hasattr(core, "ensemble_resolvent")
    with pytest.raises(UserInputError, match="resolvent_terms must be >= 1"):
        MemberGeneratorSettings(ensemble_resolvent=True, resolvent_terms=0)
