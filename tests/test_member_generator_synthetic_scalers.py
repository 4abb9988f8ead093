"""member_generator_synthetic weighs each field in units of its EDA spread: its general-variable and t-level
scalers reach the training loss (anemoi's scaler machinery, from the config) with the stated weights."""

from __future__ import annotations

import pytest
import torch

from member_generator_checkpoints import compose_config

#: The synthetic generator store's fields (O32 run at 5 levels): analyses ``*_an_*`` (prognostic), backgrounds.
PARAMS = {"d": 5, "lnsp": 1, "o3": 5, "q": 5, "t": 5, "vo": 5}
NAMES = sorted(
    [f"{p}_an_{level}" for p, n in PARAMS.items() for level in range(1, n + 1)]
    + [f"{p}_{level}" for p, n in PARAMS.items() for level in range(1, n + 1)]
)
GRID = 7
#: The config's weights: per variable, and for t (0.375 L)^2 + 0.58 at level L.
VARIABLE = {"d": 0.5, "vo": 0.9, "o3": 1.0, "q": 1.1, "t": 1.0, "lnsp": 33.0}


def _weight(name: str) -> float:
    param, level = name.split("_an_")
    return VARIABLE[param] * ((0.375 * int(level)) ** 2 + 0.58 if param == "t" else 1.0)


@pytest.fixture(scope="module")
def training_loss():
    """The config's training loss built as anemoi builds it, with its variable scalers and unit node weights."""
    from anemoi.models.data_indices.collection import IndexCollection
    from anemoi.training.losses import get_loss_function
    from anemoi.training.utils.variables_metadata import ExtractVariableGroupAndLevel
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = compose_config("member_generator_synthetic")
    data_config = OmegaConf.create({"forcing": [n for n in NAMES if "_an_" not in n], "diagnostic": []})
    indices = IndexCollection(data_config, {name: i for i, name in enumerate(NAMES)})
    extractor = ExtractVariableGroupAndLevel(
        variable_groups=config.training.variable_groups.datasets.eda, metadata_variables=None
    )
    scalers = {"node_weights": ((3,), torch.full((GRID,), 1.0 / GRID))}
    for name in ("general_variable", "t_levels"):
        builder = instantiate(config.training.scalers.datasets.eda[name], data_indices=indices,
                              metadata_extractor=extractor)  # fmt: skip
        scalers[name] = builder.get_scaling()
    loss = get_loss_function(config.training.training_loss.datasets.eda, scalers, indices)
    return loss, indices.model.output.name_to_index, config.model.model.replicas


def test_the_training_loss_carries_the_stated_weights(training_loss):
    loss, name_to_index, _ = training_loss
    assert {"general_variable", "t_levels", "node_weights"} <= set(loss.loss.scaler)
    order = sorted(name_to_index, key=name_to_index.get)
    assert len(order) == 26
    variable = loss.loss.scaler.subset(["general_variable", "t_levels"]).get_scaler(5).reshape(-1)
    torch.testing.assert_close(variable, torch.tensor([_weight(name) for name in order]))


@pytest.mark.parametrize("name", ["lnsp_an_1", "t_an_5", "d_an_2"])
def test_an_error_in_one_field_costs_its_weight(training_loss, name):
    """The same error in one field alone: the loss is that field's weight times the loss of an o3 field's error."""
    loss, name_to_index, replicas = training_loss
    members, targets = 10, 3

    def loss_of(field: str) -> float:
        target = torch.zeros(1, 1, members, GRID, len(name_to_index))
        pred = torch.zeros(1, 1, targets * replicas, GRID, len(name_to_index))
        pred[..., name_to_index[field]] = torch.linspace(0.5, 1.5, targets * replicas)[:, None]
        return float(loss(pred, target, pred_layout="model_output", target_layout="model_output"))

    assert loss_of("o3_an_3") > 0
    assert loss_of(name) == pytest.approx(_weight(name) * loss_of("o3_an_3"), rel=1e-6)
