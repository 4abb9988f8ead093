"""Distribution losses in anemoi's conventions: hand-weighted float64 references, scalers, get_loss_function."""

from __future__ import annotations

import pytest
import torch
from anemoi.models.data_indices.collection import IndexCollection
from anemoi.training.losses.loss import get_loss_function
from anemoi.training.utils.enums import TensorDim
from omegaconf import DictConfig

from hybrid_eda.distributions import PARAMETER_AXIS, Gaussian, LogNormal
from hybrid_eda.losses import GaussianCRPS, GaussianNLLLoss, LogNormalCRPS, LogNormalNLLLoss

F64 = torch.float64
BATCH, TIME, GRID, VAR = 2, 1, 7, 3

LOSSES = [
    pytest.param(GaussianNLLLoss, id="gaussian_nll"),
    pytest.param(LogNormalNLLLoss, id="lognormal_nll"),
    pytest.param(GaussianCRPS, id="gaussian_crps"),
    pytest.param(LogNormalCRPS, id="lognormal_crps"),
]


def _pred_target(loss_cls, seed: int = 0, dtype=F64, shape=(BATCH, TIME, 1, GRID, VAR)):
    """``pred[b, t, 2, grid, var]`` from raw outputs, and a target in the distribution's support."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(*shape[:2], 2, *shape[3:], generator=g, dtype=dtype)
    dist = loss_cls.distribution.from_raw(raw)
    target = dist.sample(1, generator=g)[0] * (1 + 0.2 * torch.rand(shape, generator=g, dtype=dtype))
    return dist.to_tensor(), target


def _pointwise_reference(loss_cls, pred, target):
    """Pointwise score from torch.distributions (NLL) or the distribution's closed form (CRPS)."""
    a, b = pred[:, :, 0:1], pred[:, :, 1:2]
    if loss_cls is GaussianNLLLoss:
        return -torch.distributions.Normal(a, b).log_prob(target)
    if loss_cls is LogNormalNLLLoss:
        return -torch.distributions.LogNormal(a, b).log_prob(target)
    return loss_cls.distribution(a, b).crps(target)


def _hand_reduced(pointwise, node_weights, variable_weights=None):
    """Loop reference of anemoi's reduction: mean over variables of weighted scores, sum over grid, mean batch."""
    total = 0.0
    for b in range(pointwise.shape[0]):
        for t in range(pointwise.shape[1]):
            for n in range(pointwise.shape[3]):
                for v in range(pointwise.shape[4]):
                    w = node_weights[n] * (1.0 if variable_weights is None else variable_weights[v])
                    total += float(w * pointwise[b, t, 0, n, v]) / pointwise.shape[4]
    return total / pointwise.shape[0]


def _scalers():
    node_weights = torch.linspace(0.5, 2.0, GRID, dtype=F64)
    variable_weights = torch.tensor([1.0, 0.1, 3.0], dtype=F64)
    return {
        "node_weights": (TensorDim.GRID, node_weights),
        "variable": (TensorDim.VARIABLE, variable_weights),
    }


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_loss_matches_hand_weighted_reference(loss_cls):
    pred, target = _pred_target(loss_cls)
    scalers = _scalers()
    loss = loss_cls()
    loss.add_scaler(*scalers["node_weights"], name="node_weights")
    reference = _pointwise_reference(loss_cls, pred, target)
    node_weights, variable_weights = scalers["node_weights"][1], scalers["variable"][1]
    assert float(loss(pred, target)) == pytest.approx(_hand_reduced(reference, node_weights), rel=1e-12)
    loss.add_scaler(*scalers["variable"], name="variable")
    expected = _hand_reduced(reference, node_weights, variable_weights)
    assert float(loss(pred, target)) == pytest.approx(expected, rel=1e-12)
    per_variable = loss(pred, target, squash=False)
    assert per_variable.shape == (VAR,)
    assert float(per_variable.mean()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_node_weights_change_the_loss_as_expected(loss_cls):
    """Doubling the weight of one grid point adds that point's (weighted) score once more."""
    pred, target = _pred_target(loss_cls, seed=1)
    ones = torch.ones(GRID, dtype=F64)
    heavier = ones.clone()
    heavier[3] = 2.0
    uniform, weighted = loss_cls(), loss_cls()
    uniform.add_scaler(TensorDim.GRID, ones, name="node_weights")
    weighted.add_scaler(TensorDim.GRID, heavier, name="node_weights")
    point = _pointwise_reference(loss_cls, pred, target)[:, :, :, 3].mean(-1).sum(1).mean()
    torch.testing.assert_close(weighted(pred, target) - uniform(pred, target), point)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_get_loss_function_builds_from_target_with_scalers(loss_cls):
    pred, target = _pred_target(loss_cls, seed=2)
    scalers = _scalers()
    config = DictConfig({"_target_": f"hybrid_eda.losses.{loss_cls.__name__}", "scalers": ["node_weights", "variable"]})
    loss = get_loss_function(config, scalers=scalers)
    assert isinstance(loss, loss_cls)
    reference = _hand_reduced(
        _pointwise_reference(loss_cls, pred, target), scalers["node_weights"][1], scalers["variable"][1]
    )
    assert float(loss(pred, target)) == pytest.approx(reference, rel=1e-12)


def test_get_loss_function_with_data_indices_selects_variables():
    """With data_indices anemoi wraps the loss in LossVariableMapper, which indexes the variable axis only."""
    names = {"s_t_500": 0, "s_u_500": 1, "s_q_500": 2}
    data_indices = IndexCollection(DictConfig({"forcing": [], "diagnostic": []}), names)
    config = DictConfig(
        {
            "_target_": "hybrid_eda.losses.LogNormalNLLLoss",
            "scalers": ["node_weights"],
            "predicted_variables": ["s_t_500", "s_q_500"],
        }
    )
    scalers = _scalers()
    loss = get_loss_function(config, scalers=scalers, data_indices=data_indices)
    pred, target = _pred_target(LogNormalNLLLoss, seed=3)
    value = loss(pred, target, pred_layout="model_output", target_layout="data_output")
    reference = _hand_reduced(
        _pointwise_reference(LogNormalNLLLoss, pred, target)[..., [0, 2]], scalers["node_weights"][1]
    )
    assert float(value) == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_validation_metric_subset_and_grid_shards(loss_cls):
    """``scaler_indices=(..., idx)`` (anemoi's metric ranges) and grid shards sum to the full loss."""
    pred, target = _pred_target(loss_cls, seed=4)
    loss = loss_cls()
    loss.add_scaler(*_scalers()["node_weights"], name="node_weights")
    idx = torch.tensor([2, 0])
    subset = loss(pred, target, scaler_indices=(..., idx))
    loss_sub = loss_cls()
    loss_sub.add_scaler(*_scalers()["node_weights"], name="node_weights")
    torch.testing.assert_close(subset, loss_sub(pred[..., idx], target[..., idx]))
    full = loss(pred, target)
    halves = [slice(0, 3), slice(3, GRID)]
    shards = sum(loss(pred[:, :, :, s], target[:, :, :, s], grid_shard_slice=s) for s in halves)
    torch.testing.assert_close(shards, full)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_losses_pass_gradcheck(loss_cls):
    pred, target = _pred_target(loss_cls, seed=5, shape=(1, 1, 1, 3, 2))
    loss = loss_cls()
    loss.add_scaler(TensorDim.GRID, torch.tensor([0.5, 1.0, 2.0], dtype=F64), name="node_weights")
    # pred's positive parameter comes from from_raw: gradcheck through the raw outputs keeps it positive
    raw = torch.randn(1, 1, 2, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: loss(loss_cls.distribution.from_raw(r).to_tensor(), target), (raw,))
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred.clone().requires_grad_(True),))


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_tiny_spread_is_finite_in_float32(loss_cls):
    """Spreads of 1e-8 (Gaussian scale) and targets from 1e-6 to 1e6 across variables: no NaN/inf in loss or grad."""
    shape = (1, 1, 1, GRID, VAR)
    magnitude = torch.tensor([1e-6, 1.0, 1e6]).reshape(1, 1, 1, 1, VAR)
    target = magnitude * (1 + 0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(7))).abs()
    if loss_cls.distribution is Gaussian:
        params = [magnitude.expand(shape).clone(), torch.full(shape, 1e-8)]
        params[0][..., 0] += 3e-8  # a 3-sigma miss at the 1e-6 variable
    else:
        params = [torch.log(magnitude).expand(shape).clone(), torch.full(shape, 1e-4)]
    pred = torch.cat(params, dim=PARAMETER_AXIS).requires_grad_(True)
    loss = loss_cls()
    loss.add_scaler(TensorDim.GRID, torch.ones(GRID), name="node_weights")
    value = loss(pred, target)
    (grad,) = torch.autograd.grad(value, pred)
    assert bool(torch.isfinite(value)) and bool(torch.isfinite(grad).all()), (value, grad)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_ignore_nans_scores_only_valid_targets(loss_cls):
    pred, target = _pred_target(loss_cls, seed=8)
    node_weights = torch.ones(GRID, dtype=F64)
    holed = target.clone()
    holed[:, :, :, 2] = torch.nan
    loss = loss_cls(ignore_nans=True)
    loss.add_scaler(TensorDim.GRID, node_weights, name="node_weights")
    dropped = node_weights.clone()
    dropped[2] = 0.0
    reference = _hand_reduced(_pointwise_reference(loss_cls, pred, target), dropped)
    value = loss(pred.requires_grad_(True), holed)
    assert float(value.detach()) == pytest.approx(reference, rel=1e-12)
    (grad,) = torch.autograd.grad(value, pred)
    assert bool(torch.isfinite(grad).all()) and bool((grad[:, :, :, 2] == 0).all())


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_wrong_shapes_are_clear_errors(loss_cls):
    pred, target = _pred_target(loss_cls)
    loss = loss_cls()
    with pytest.raises(ValueError, match=r"parameters .* on the ensemble axis"):
        loss(torch.cat([pred, pred[:, :, :1]], dim=PARAMETER_AXIS), target)
    with pytest.raises(ValueError, match="ensemble axis of size 1"):
        loss(pred, torch.cat([target, target], dim=PARAMETER_AXIS))
    with pytest.raises(ValueError, match="5-D"):
        loss(pred[0], target[0])
    with pytest.raises(ValueError, match="differ in batch, time, grid or variable"):
        loss(pred, target[..., :2])


def test_lognormal_nll_names_zero_spread_targets():
    pred, target = _pred_target(LogNormalNLLLoss)
    target[0, 0, 0, 4, 1] = 0.0
    with pytest.raises(ValueError, match=r"1 of 42 target values are <= 0.*zero spread"):
        LogNormalNLLLoss()(pred, target)
    # The CRPS of a log-normal is finite at 0: a zero-spread point scores instead of failing
    assert bool(torch.isfinite(LogNormalCRPS()(pred, target)))


def test_loss_names_and_lognormal_parameters():
    assert GaussianNLLLoss().name == "gaussian_nll" and LogNormalCRPS().name == "lognormal_crps"
    assert LogNormalNLLLoss.distribution is LogNormal
