"""A variance emulator built outside anemoi-training, the way anemoi-training builds it (benchmarks, tests, notebooks).

anemoi-training hands the model constructor ``data_indices`` (one :class:`IndexCollection` per dataset) and
``statistics`` (per dataset and channel) from the stores. Without stores, :func:`build_variance_emulator` makes
them from channel names, with unit statistics unless given: the normalisers are then identities and the model
sees the members in the units they are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

__all__ = ["build_variance_emulator", "unit_statistics"]

_STATISTICS = ("mean", "stdev", "minimum", "maximum")


def unit_statistics(names: Sequence[str]) -> dict[str, np.ndarray]:
    """anemoi's per-channel statistics block ``{mean, stdev, minimum, maximum}: [channel]``, all ones."""
    return {key: np.ones(len(names)) for key in _STATISTICS}


def build_variance_emulator(
    model_config: DictConfig,
    input_names: Sequence[str],
    target_names: Sequence[str],
    graph_data,
    *,
    statistics: Mapping[str, Mapping[str, np.ndarray]] | None = None,
):
    """:class:`hybrid_eda.models.VarianceEmulator` from a run config's ``model`` and ``data`` sections.

    Parameters
    ----------
    model_config : DictConfig
        ``{model: ..., data: {datasets: {members: ..., spread: ...}}}`` as in a composed run config.
    input_names, target_names : sequence of str
        Channel names of the member dataset (``t_1``, ...) and the spread dataset (``t_std_1``, ...), in store order.
    graph_data : torch_geometric.data.HeteroData
        The grid graph (``members`` nodes and edges, ``spread`` nodes).
    statistics : mapping, optional
        ``{"members": {...}, "spread": {...}}`` per-channel statistics; unit statistics (:func:`unit_statistics`)
        when omitted.

    Returns
    -------
    VarianceEmulator
        In training mode, with the weights of the current torch seed.
    """
    from anemoi.models.data_indices.collection import IndexCollection

    from hybrid_eda.models.variance_emulator import VarianceEmulator

    data = model_config.data.datasets
    indices = {
        "members": IndexCollection(data.members, {name: i for i, name in enumerate(input_names)}),
        "spread": IndexCollection(data.spread, {name: i for i, name in enumerate(target_names)}),
    }
    if statistics is None:
        statistics = {"members": unit_statistics(input_names), "spread": unit_statistics(target_names)}
    return VarianceEmulator(
        model_config=model_config,
        data_indices=indices,
        statistics=statistics,
        graph_data=graph_data,
        n_step_input=1,
        n_step_output=1,
    )
