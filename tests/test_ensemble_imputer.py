"""Observations with NaNs through anemoi's processors: :class:`EnsembleConstantImputer` fills them on a batch with an
ensemble axis (anemoi's ``ConstantImputer`` fails there), and the member generator's ``observation_fill`` turns the
filled value back into NaN, so the core sees exactly the observed points."""

from __future__ import annotations

import pytest
import torch
from omegaconf import DictConfig

from member_generator_checkpoints import N_GRID, N_MEMBERS, NAMES, member_generator_model

FILL = -9999.0


def _indices():
    from anemoi.models.data_indices.collection import IndexCollection

    return IndexCollection(DictConfig({"forcing": ["x_bg", "obs"], "diagnostic": []}), NAMES)


def _batch_with_gaps():
    g = torch.Generator().manual_seed(0)
    x = 2.0 + torch.randn(2, 1, N_MEMBERS, N_GRID, 3, generator=g)
    x[..., NAMES["obs"]] = x[:, :, :1, :, NAMES["obs"]]  # the same observations for every member
    x[:, :, :, 1::3, NAMES["obs"]] = float("nan")  # unobserved points
    return x


def test_anemois_constant_imputer_fails_on_the_ensemble_axis_and_ours_fills_it():
    from anemoi.models.preprocessing.imputer import ConstantImputer

    from hybrid_eda.models.ensemble_imputer import EnsembleConstantImputer

    config = DictConfig({"default": "none", FILL: ["obs"]})
    x = _batch_with_gaps()
    with pytest.raises(IndexError, match="does not match the shape of the indexed tensor"):
        ConstantImputer(config=config, data_indices=_indices())(x.clone())
    filled = EnsembleConstantImputer(config=config, data_indices=_indices())(x.clone())
    gaps = torch.isnan(x)
    assert not torch.isnan(filled).any()
    assert torch.equal(filled[gaps], torch.full((int(gaps.sum()),), FILL))
    assert torch.equal(filled[~gaps], x[~gaps])


def test_observation_fill_restores_the_gaps_for_the_core():
    x = _batch_with_gaps()
    observed = ~torch.isnan(x[:, 0, 0, :, [NAMES["obs"]]])  # [b, grid, 1]
    filled = torch.nan_to_num(x, nan=FILL)
    model = member_generator_model(observation_fill=FILL)
    parts = model.split(filled)
    assert torch.equal(torch.isfinite(parts["observations"]), observed)
    assert torch.equal(parts["observations"][observed], x[:, 0, 0, :, [NAMES["obs"]]][observed])
    # the same observations as the batch with NaNs gives a model without the fill (NaN where unobserved)
    unfilled = member_generator_model().split(x)["observations"]
    assert torch.equal(torch.nan_to_num(parts["observations"], nan=0.5), torch.nan_to_num(unfilled, nan=0.5))
    # without observation_fill the value would be read as an observation
    assert torch.isfinite(member_generator_model().split(filled)["observations"]).all()
