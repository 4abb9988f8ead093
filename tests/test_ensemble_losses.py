"""anemoi 0.17's ensemble scores that train the member generator, checked here, and our validation metrics.

``anemoi.training.losses.CRPS(alpha)`` (kernel CRPS; alpha = 1 fair, 0 standard, between: almost fair, Lang et al.
2024) and ``EnergyScoreLoss(fair, norm_over)`` against float64 double loops over members and against closed forms:
the expected score of a Gaussian ensemble (the fair estimators are unbiased, the standard ones are biased by
``(1 - alpha) E|X - X'| / (2 M)``), a degenerate ensemble (``|x - y|``), and the energy score of one variable being
the CRPS. Then spread/skill and rank histograms of torch ensembles (:mod:`hybrid_eda.flows.ensemble_scores`)
against the Lorenz-96 numpy scores.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from anemoi.training.losses import CRPS, EnergyScoreLoss
from anemoi.training.utils.enums import TensorDim

from hybrid_eda.errors import UserInputError
from hybrid_eda.evaluation.probabilistic import crps_normal
from hybrid_eda.flows import rank_histogram, spread_skill, truth_rank
from hybrid_eda.l96 import metrics as l96_metrics

ALPHAS = (0.0, 0.5, 0.95, 1.0)


def _ensemble(shape=(2, 1, 4, 5, 3), seed=0):
    """pred [batch, time, ens, grid, var] and target [batch, time, 1, grid, var], float64."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(shape, generator=g, dtype=torch.float64)
    target = torch.randn((*shape[:2], 1, *shape[3:]), generator=g, dtype=torch.float64)
    return pred, target


def _crps_loop(members: list[float], y: float, alpha: float) -> float:
    """``mean_i |x_i - y| - (alpha / (2 M (M - 1)) + (1 - alpha) / (2 M^2)) sum_{i, j} |x_i - x_j|``."""
    m = len(members)
    mae = sum(abs(x - y) for x in members) / m
    pairs = sum(abs(a - b) for a in members for b in members)
    return mae - (alpha / (2 * m * (m - 1)) + (1 - alpha) / (2 * m * m)) * pairs


def _reduce_reference(per_point: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """anemoi's reduction of a pointwise score ``[batch, time, grid, var]``: sum over time and grid, mean over batch."""
    if weights is not None:
        per_point = per_point * weights[None, None, :, None]
    return per_point.sum(axis=(1, 2)).mean(axis=0)  # [var]


@pytest.mark.parametrize(("alpha", "backend"), itertools.product(ALPHAS, ("naive", "stable")))
def test_crps_matches_a_double_loop(alpha, backend):
    pred, target = _ensemble()
    b, t, _, g, v = pred.shape
    reference = np.zeros((b, t, g, v))
    for i, j, k, n in itertools.product(range(b), range(t), range(g), range(v)):
        reference[i, j, k, n] = _crps_loop(pred[i, j, :, k, n].tolist(), float(target[i, j, 0, k, n]), alpha)
    loss = CRPS(alpha=alpha, backend=backend)
    per_variable = loss(pred, target, squash=False)
    np.testing.assert_allclose(per_variable.numpy(), _reduce_reference(reference), rtol=1e-12, atol=1e-12)
    assert float(loss(pred, target)) == pytest.approx(float(_reduce_reference(reference).mean()), rel=1e-12)
    assert loss.name == f"crps{alpha:.2f}"


def test_crps_with_node_weights_and_its_gradient():
    pred, target = _ensemble()
    weights = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.25], dtype=torch.float64)
    loss = CRPS(alpha=0.95)
    loss.add_scaler(TensorDim.GRID, weights, name="node_weights")
    b, t, _, g, v = pred.shape
    reference = np.zeros((b, t, g, v))
    for i, j, k, n in itertools.product(range(b), range(t), range(g), range(v)):
        reference[i, j, k, n] = _crps_loop(pred[i, j, :, k, n].tolist(), float(target[i, j, 0, k, n]), 0.95)
    np.testing.assert_allclose(
        loss(pred, target, squash=False).numpy(), _reduce_reference(reference, weights.numpy()), rtol=1e-12
    )
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred.clone().requires_grad_(True),))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_expected_crps_of_a_gaussian_ensemble(alpha):
    """E[CRPS_alpha] of M N(0, 1) members = CRPS of N(0, 1) + (1 - alpha) / (M sqrt(pi)): E|X - X'| = 2/sqrt(pi)."""
    m, points = 4, 200_000
    g = torch.Generator().manual_seed(1)
    pred = torch.randn((1, 1, m, points, 1), generator=g, dtype=torch.float64)
    target = torch.randn((1, 1, 1, points, 1), generator=g, dtype=torch.float64)
    mean_score = float(CRPS(alpha=alpha)(pred, target)) / points
    expected = float(np.mean(crps_normal(target.numpy().ravel(), 0.0, 1.0))) + (1 - alpha) / (m * math.sqrt(math.pi))
    # standard error of the mean score: ~0.6 / sqrt(200000) = 0.0013; the unfair bias at alpha = 0 is 0.141
    assert mean_score == pytest.approx(expected, abs=0.006)


def test_degenerate_ensembles_and_one_member():
    pred, target = _ensemble(shape=(1, 1, 1, 6, 2))
    twins = pred.repeat(1, 1, 2, 1, 1)  # two identical members: a point forecast
    absolute = (pred - target).abs().sum(dim=(1, 3)).mean(dim=0).squeeze(0)  # [var]
    for alpha in ALPHAS:
        torch.testing.assert_close(CRPS(alpha=alpha)(twins, target, squash=False), absolute)
    norm = (pred - target).square().sum(dim=3).sqrt().squeeze()  # [var]: spatial norm per variable
    torch.testing.assert_close(EnergyScoreLoss(fair=True)(twins, target, squash=False), norm)
    with pytest.raises(AssertionError, match="Ensemble size must be greater than 1"):
        CRPS()(pred, target)
    with pytest.raises(ValueError, match="at least two ensemble members"):
        EnergyScoreLoss()(pred, target)


def _energy_loop(pred: torch.Tensor, target: torch.Tensor, fair: bool, norm_over: str, weights=None) -> np.ndarray:
    """Energy score by explicit sums over member pairs; returns anemoi's per-variable reduction ``[var]``."""
    b, t, m, g, v = pred.shape
    w = np.ones(g) if weights is None else np.asarray(weights)
    x, y = pred.numpy(), target.numpy()[:, :, 0]

    def norm(d):  # d [grid] or [var] or [grid, var]
        if norm_over == "variables":
            return math.sqrt(float(np.sum(d**2)))
        scale = w if d.ndim == 1 else w[:, None]
        return math.sqrt(float(np.sum(scale * d**2)))

    def score(members, truth):
        obs = sum(norm(members[i] - truth) for i in range(m)) / m
        pairs = sum(norm(members[i] - members[j]) for i in range(m) for j in range(m) if i != j)
        return obs - pairs / (2 * m * (m - 1) if fair else 2 * m * m)

    out = np.zeros((b, v))
    for i, j in itertools.product(range(b), range(t)):
        if norm_over == "spatial":
            out[i] += [score(x[i, j, :, :, n], y[i, j, :, n]) for n in range(v)]
        elif norm_over == "variables":
            out[i] += sum(w[k] * score(x[i, j, :, k, :], y[i, j, k, :]) for k in range(g))
        else:
            out[i] += score(x[i, j], y[i, j])
    return out.mean(axis=0)


@pytest.mark.parametrize(
    ("fair", "norm_over"), itertools.product((True, False), ("spatial", "variables", "spatial_and_variables"))
)
def test_energy_score_matches_a_double_loop(fair, norm_over):
    pred, target = _ensemble(shape=(2, 2, 4, 5, 3))
    weights = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.25], dtype=torch.float64)
    loss = EnergyScoreLoss(fair=fair, norm_over=norm_over)
    loss.add_scaler(TensorDim.GRID, weights, name="node_weights")
    np.testing.assert_allclose(
        loss(pred, target, squash=False).numpy(), _energy_loop(pred, target, fair, norm_over, weights), rtol=1e-12
    )


@pytest.mark.parametrize("fair", [True, False])
def test_expected_energy_score_of_an_isotropic_gaussian_ensemble(fair):
    """At y = mean: E||X|| - E||X - X'|| / 2 = c_d (1 - 1/sqrt 2), c_d = sqrt(2) Gamma((d + 1) / 2) / Gamma(d / 2);
    the standard (unfair) estimator adds E||X - X'|| / (2 M) = c_d / (sqrt(2) M)."""
    m, d, cases = 4, 8, 50_000
    g = torch.Generator().manual_seed(2)
    pred = torch.randn((cases, 1, m, d, 1), generator=g, dtype=torch.float64)
    c_d = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    expected = c_d * (1 - 1 / math.sqrt(2)) + (0.0 if fair else c_d / (math.sqrt(2) * m))
    score = float(EnergyScoreLoss(fair=fair)(pred, torch.zeros((cases, 1, 1, d, 1), dtype=torch.float64)))
    assert score == pytest.approx(expected, abs=0.01)  # standard error ~0.004; the unfair bias is 0.49


@pytest.mark.parametrize(("fair", "alpha"), [(True, 1.0), (False, 0.0)])
def test_energy_score_of_one_variable_is_the_crps(fair, alpha):
    pred, target = _ensemble(shape=(2, 1, 5, 7, 1))
    energy = EnergyScoreLoss(fair=fair, norm_over="variables")(pred, target)
    torch.testing.assert_close(energy, CRPS(alpha=alpha)(pred, target))


# --------------------------------------------------------------------------------------- validation metrics
def test_spread_skill_matches_the_lorenz96_scores():
    g = torch.Generator().manual_seed(3)
    members = torch.randn((6, 5, 8, 3), generator=g, dtype=torch.float64)  # [dates, M, grid, var]
    truth = torch.randn((6, 8, 3), generator=g, dtype=torch.float64)
    out = spread_skill(members, truth)
    ens, tr = members.flatten(-2).numpy(), truth.flatten(-2).numpy()
    np.testing.assert_allclose(out.spread.numpy(), l96_metrics.spread(ens), rtol=1e-12)
    np.testing.assert_allclose(out.rmse.numpy(), l96_metrics.rmse_of_mean(ens, tr), rtol=1e-12)
    assert out.ratio == pytest.approx(float(out.spread.mean() / out.rmse.mean()))
    weights = torch.tensor([2.0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float64)  # only point 0 counts
    only = spread_skill(members[:, :, :1], truth[:, :1])
    torch.testing.assert_close(spread_skill(members, truth, weights).rmse, only.rmse)


def test_a_reliable_ensemble_has_the_expected_spread_skill_ratio():
    """Truth and members exchangeable: spread / RMSE = sqrt(M / (M + 1)) on average (0.913 for M = 5)."""
    g = torch.Generator().manual_seed(4)
    draws = torch.randn((400, 6, 50, 1), generator=g)
    out = spread_skill(draws[:, 1:], draws[:, 0])
    assert out.reliable_ratio == pytest.approx(math.sqrt(5 / 6))
    assert out.ratio == pytest.approx(out.reliable_ratio, abs=0.02)
    ranks = truth_rank(draws[:, 1:], draws[:, 0])
    histogram = rank_histogram(ranks, 5)
    assert histogram.sum() == 400 * 50 and histogram.shape == (6,)
    assert float(histogram.max() / histogram.min()) < 1.15  # flat: 3333 per bin, standard error ~55


def test_ranks_match_the_lorenz96_ranks_and_ties_are_broken_uniformly():
    g = torch.Generator().manual_seed(5)
    members = torch.randn((7, 4, 6, 2), generator=g, dtype=torch.float64)
    truth = torch.randn((7, 6, 2), generator=g, dtype=torch.float64)
    ranks = truth_rank(members, truth)
    reference = l96_metrics.truth_rank(members.flatten(-2).numpy(), truth.flatten(-2).numpy(), np.random.default_rng())
    np.testing.assert_array_equal(ranks.flatten(-2).numpy(), reference)
    np.testing.assert_array_equal(rank_histogram(ranks, 4).numpy(), l96_metrics.rank_histogram(reference, 4))
    tied = torch.zeros((20000, 4, 1, 1))  # every member equals the truth: rank uniform on 0 .. 4
    first = truth_rank(tied, torch.zeros((20000, 1, 1)), torch.Generator().manual_seed(0))
    again = truth_rank(tied, torch.zeros((20000, 1, 1)), torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    counts = rank_histogram(first, 4)
    assert counts.sum() == 20000 and float(counts.min()) > 3700 and float(counts.max()) < 4300


def test_metric_errors():
    with pytest.raises(UserInputError, match=r"members \[..., ens, grid, var\] and truth \[..., grid, var\]"):
        spread_skill(torch.zeros(3, 4, 2), torch.zeros(5, 2))
    with pytest.raises(UserInputError, match="at least 2 members"):
        spread_skill(torch.zeros(1, 4, 2), torch.zeros(4, 2))
