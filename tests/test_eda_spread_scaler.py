"""EDASpreadLossScaler: each output field weighted (reference / its EDA spread in normaliser units) ** exponent,
the spread read from an ensemble store (a stand-in for ``anemoi.datasets.open_dataset`` with known member std)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybrid_eda.errors import UserInputError
from hybrid_eda.training.eda_spread_scaler import EDASpreadLossScaler, eda_spread

#: Store fields (dataset order): backgrounds are forcings, analyses ``*_an_*`` the model's outputs.
NAMES = ["d_1", "d_an_1", "lnsp_1", "lnsp_an_1", "t_1", "t_an_1", "t_an_2", "t_2"]
MEMBERS, GRID, DATES = 4, 6, 8
#: Member offsets with unbiased std exactly 1 (mean 0, sum of squares 3).
UNIT = np.array([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(5.0 / 3.0)
#: Ensemble std per field (constant over grid and dates) and the normaliser's std.
SPREAD = {"d_1": 1.0, "d_an_1": 0.8, "lnsp_1": 0.02, "lnsp_an_1": 0.01, "t_1": 2.0, "t_an_1": 1.5, "t_an_2": 0.3,
          "t_2": 0.5}  # fmt: skip
STDEV = {"d_1": 2.0, "d_an_1": 2.0, "lnsp_1": 1.0, "lnsp_an_1": 1.0, "t_1": 5.0, "t_an_1": 5.0, "t_an_2": 3.0,
         "t_2": 3.0}  # fmt: skip


class FakeStore:
    """``len``, ``[i] -> [variable, ensemble, grid]``, ``name_to_index``, ``statistics``; counts the dates read."""

    def __init__(self, members: int = MEMBERS, spread: dict | None = None):
        spread = SPREAD if spread is None else spread
        unit = UNIT if members == MEMBERS else np.zeros(members)
        self.name_to_index = {n: i for i, n in enumerate(NAMES)}
        self.statistics = {"stdev": np.array([STDEV[n] for n in NAMES])}
        self.data = np.stack([10.0 + spread[n] * unit[:, None] * np.ones(GRID) for n in NAMES])  # [V, E, G]
        self.read: list[int] = []

    def __len__(self) -> int:
        return DATES

    def __getitem__(self, i: int) -> np.ndarray:
        self.read.append(i)
        return self.data


def _indices(order=NAMES):
    from anemoi.models.data_indices.collection import IndexCollection
    from omegaconf import OmegaConf

    config = OmegaConf.create({"forcing": [n for n in order if "_an_" not in n], "diagnostic": []})
    return IndexCollection(config, {name: i for i, name in enumerate(order)})


def _scaler(monkeypatch, store, **kwargs):
    from anemoi.training.utils.variables_metadata import ExtractVariableGroupAndLevel

    opened = {}

    def fake_open(dataset, **open_kwargs):
        opened.update(dataset=dataset, **open_kwargs)
        return store

    monkeypatch.setattr("anemoi.datasets.open_dataset", fake_open)
    indices = kwargs.pop("indices", None) or _indices()
    extractor = ExtractVariableGroupAndLevel(variable_groups={"default": "sfc"}, metadata_variables=None)
    return EDASpreadLossScaler(indices, extractor, "store.zarr", **kwargs), indices, opened


def test_spread_in_normaliser_units():
    store = FakeStore()
    stdev = store.statistics["stdev"]
    got = eda_spread(store, ["d_an_1", "lnsp_an_1", "t_an_2"], stdev, dates_step=3)
    assert got == pytest.approx({"d_an_1": 0.4, "lnsp_an_1": 0.01, "t_an_2": 0.1}, rel=1e-12)
    assert store.read == [0, 3, 6]


@pytest.mark.parametrize("exponent", [1.0, 0.5])
def test_each_output_gets_reference_over_its_spread(monkeypatch, exponent):
    scaler, indices, opened = _scaler(monkeypatch, FakeStore(), reference=0.2, exponent=exponent, end="2023-01-11")
    dims, weights = scaler.get_scaling()
    assert opened == {"dataset": "store.zarr", "end": "2023-01-11"}
    assert dims == (4,)  # TensorDim.VARIABLE
    spread = {n: SPREAD[n] / STDEV[n] for n in NAMES}
    expected = torch.ones(len(indices.data.output.full))
    for name, idx in indices.model.output.name_to_index.items():
        expected[idx] = (0.2 / spread[name]) ** exponent
    torch.testing.assert_close(weights, expected)
    # the two t levels apart (what GeneralVariableLossScaler cannot do): 0.2 / 0.3 and 0.2 / 0.1
    out = indices.model.output.name_to_index
    assert float(weights[out["t_an_2"]]) == pytest.approx((0.2 / 0.1) ** exponent)
    assert float(weights[out["t_an_1"]]) == pytest.approx((0.2 / 0.3) ** exponent)
    assert float(weights[out["lnsp_an_1"]]) == pytest.approx(20.0**exponent)


def test_given_statistics_are_matched_by_name(monkeypatch):
    """anemoi passes the training dataset's statistics in its own order: the scaler maps them by name."""
    order = NAMES[::-1]
    stats = {"stdev": np.array([2.0 * STDEV[n] for n in order])}
    scaler, indices, _ = _scaler(monkeypatch, FakeStore(), statistics=stats, indices=_indices(order))
    spreads = scaler.spreads()
    assert spreads["t_an_2"] == pytest.approx(0.3 / 6.0)
    assert set(spreads) == {n for n in NAMES if "_an_" in n}


def test_the_loss_carries_the_weights(monkeypatch):
    from anemoi.training.losses import get_loss_function
    from omegaconf import OmegaConf

    scaler, indices, _ = _scaler(monkeypatch, FakeStore())
    scalers = {"eda_spread": scaler.get_scaling(), "node_weights": ((3,), torch.full((GRID,), 1.0 / GRID))}
    config = OmegaConf.create({"_target_": "anemoi.training.losses.MSELoss", "scalers": ["eda_spread", "node_weights"]})
    loss = get_loss_function(config, scalers, indices)
    out = indices.model.output.name_to_index
    pred = torch.zeros(1, 1, 1, GRID, len(out))
    target = torch.zeros_like(pred)

    def loss_of(name):
        p = pred.clone()
        p[..., out[name]] = 1.0
        return float(loss(p, target, pred_layout="model_output", target_layout="model_output"))

    assert loss_of("lnsp_an_1") == pytest.approx(loss_of("d_an_1") * 20.0 / 0.5, rel=1e-6)


@pytest.mark.parametrize(
    ("store", "kwargs", "message"),
    [
        (FakeStore(members=1), {}, "ensemble store"),
        (FakeStore(spread=SPREAD | {"t_an_2": 0.0}), {}, "t_an_2 have no EDA spread"),
        (FakeStore(), {"dates_step": 0}, "dates_step must be >= 1"),
    ],
)
def test_unusable_stores_are_explained(monkeypatch, store, kwargs, message):
    scaler, _, _ = _scaler(monkeypatch, store, **kwargs)
    with pytest.raises(UserInputError, match=message):
        scaler.get_scaling()


def test_a_field_missing_from_the_store_is_named():
    store = FakeStore()
    with pytest.raises(UserInputError, match="no field q_an_1"):
        eda_spread(store, ["q_an_1"], store.statistics["stdev"])


@pytest.mark.parametrize(("kwargs", "message"), [({"reference": 0.0}, "reference"), ({"exponent": np.inf}, "exponent")])
def test_bad_settings_are_refused(monkeypatch, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        _scaler(monkeypatch, FakeStore(), **kwargs)
