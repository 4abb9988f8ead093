"""Builders of small member generators for tests: the shipped L96 model config built in-process, and its file.

Shared by ``test_member_generator_training.py`` (the anemoi adapter, the runner) and ``test_l96_learned_emulator.py``
(the generator in the Lorenz-96 cycle), so that neither test module imports the other.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

__all__ = ["NAMES", "N_GRID", "N_MEMBERS", "compose_config", "member_generator_model", "save_small_checkpoint"]

N_MEMBERS, N_GRID = 20, 40
NAMES = {"obs": 0, "x_an": 1, "x_bg": 2}  # store order of the L96 training store (truth not selected)


def compose_config(name: str):
    """The shipped config ``name`` composed by hydra (``hybrid_eda.resources.configs_dir()``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hybrid_eda.resources import configs_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(configs_dir()), version_base=None):
        return compose(name)


def ring_graph_data(n: int = N_GRID, k: int = 2):
    """An anemoi-like graph of the ring: nodes ``eda`` at (0, 2 pi i / n) and KNN edges within +-k."""
    from torch_geometric.data import HeteroData

    offsets = [o for o in range(-k, k + 1)]
    dst = torch.arange(n).repeat_interleave(len(offsets))
    src = (dst + torch.tensor(offsets).repeat(n)) % n
    graph = HeteroData()
    graph["eda"].x = torch.stack([torch.zeros(n), 2 * math.pi * torch.arange(n) / n], dim=-1)
    edges = graph[("eda", "to", "eda")]
    edges.edge_index = torch.stack([src, dst])
    shift = torch.tensor(offsets, dtype=torch.float32).repeat(n)
    edges.edge_length = shift.abs()[:, None]
    edges.edge_dirs = torch.stack([torch.sign(shift), torch.zeros_like(shift)], dim=-1)
    return graph


def member_generator_model(seed: int = 0, diffusion: bool = True, **overrides):
    """The shipped L96 model config built in-process, with a random (trained-looking) output layer."""
    from anemoi.models.data_indices.collection import IndexCollection

    from hybrid_eda.models import MemberGenerator

    config = compose_config("member_generator_l96")
    for key, value in overrides.items():
        config.model.model[key] = value
    indices = {"eda": IndexCollection(config.data.datasets.eda, NAMES)}
    stats = {"mean": np.array([2.3, 2.3, 2.3]), "stdev": np.array([3.6, 3.6, 3.6])}
    stats |= {"minimum": np.full(3, -10.0), "maximum": np.full(3, 15.0)}
    model = MemberGenerator(
        model_config=config,
        data_indices=indices,
        statistics={"eda": stats},
        graph_data=ring_graph_data(),
        n_step_input=1,
        n_step_output=1,
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        model.core.output.weight.normal_(0.0, 0.1)
        model.core.output.bias.normal_(0.0, 0.1)
        if not diffusion:
            model.core.output.weight[1:].zero_()  # rows (correction, sigma) per variable: keep the drift only
            model.core.output.bias[1:].zero_()
    return model.eval()


def save_small_checkpoint(path: Path, seed: int = 0, scale: float = 0.1) -> Path:
    """:func:`member_generator_model` with its output layer scaled by ``scale``, saved at ``path`` as a model.

    ``load_member_generator`` reads the model from the file as from an inference checkpoint; the output layer
    stands in for training (zero would be the untrained flow; the 0.1-sized one of the training tests diverges in
    the cycle, ``scale=0.1`` of it does not).
    """
    model = member_generator_model(seed=seed)
    with torch.no_grad():
        model.core.output.weight.mul_(scale)
        model.core.output.bias.mul_(scale)
    torch.save(model, path)
    return path
