"""Builders of small member generators for tests: the shipped L96 model config built in-process, and its file.

Shared by ``test_member_generator_training.py`` (the anemoi adapter, the runner), ``test_l96_learned_emulator.py``
(the generator in the Lorenz-96 cycle), the shipped L96 configs' end-to-end tests (a tiny store from a shipped recipe,
a 2-step training) and the ensemble-space layers' tests (seeded ring inputs), so that no test module imports another.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from isolated_run import isolated_environment, run_logged

__all__ = [
    "NAMES",
    "N_GRID",
    "N_MEMBERS",
    "SYNTHETIC_SPLITS",
    "TINY_L96_DATES",
    "TINY_L96_SPLITS",
    "assert_seeded_hybrid_cycle",
    "compose_config",
    "member_generator_model",
    "ring_inputs",
    "save_small_checkpoint",
    "tiny_recipe_store",
    "tiny_synthetic_store",
    "train_shipped_config",
]

N_MEMBERS, N_GRID = 20, 40
NAMES = {"obs": 0, "x_an": 1, "x_bg": 2}  # store order of the L96 training store (truth not selected)
#: 40 six-hourly dates after a 100-cycle spin-up of the shipped 6-hourly L96 recipes (140 cycles), and their splits
#: for a 2-step training of the shipped L96 configs.
TINY_L96_DATES = {"start": "2000-01-26T00:00:00", "end": "2000-02-04T18:00:00", "frequency": "6h"}
TINY_L96_SPLITS = [
    "training.max_steps=2",
    "dataloader.limit_batches.validation=1",
    "dataloader.batch_size.training=2",
    "dataloader.training.datasets.eda.end=2000-02-01T18:00:00",
    "dataloader.validation.datasets.eda.start=2000-02-02T00:00:00",
    "dataloader.validation.datasets.eda.end=2000-02-03T06:00:00",
    "dataloader.test.datasets.eda.start=2000-02-03T12:00:00",
]
#: The splits of a 2-step training of the synthetic configs on a tiny store of 6 dates from 2023-01-01T00.
SYNTHETIC_SPLITS = [
    "training.max_steps=2",
    "dataloader.limit_batches.validation=1",
    "dataloader.batch_size.training=1",
    "dataloader.training.datasets.eda.end=2023-01-01T06:00:00",
    "dataloader.validation.datasets.eda.start=2023-01-01T12:00:00",
    "dataloader.validation.datasets.eda.end=2023-01-01T18:00:00",
    "dataloader.test.datasets.eda.start=2023-01-02T00:00:00",
]


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
    from omegaconf import open_dict

    from hybrid_eda.models import MemberGenerator

    config = compose_config("member_generator_l96")
    with open_dict(config.model.model):  # settings the config does not name too (e.g. observation_fill)
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


def ring_inputs(n_grid: int, seed: int = 1):
    """Seeded ring inputs: 6 backgrounds, 4 guides and their backgrounds ``[*, n_grid, 1]``, and observations
    ``[n_grid, 1]`` at every other point (NaN elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    backgrounds = torch.randn(6, n_grid, 1, generator=g) + 2.0
    guide_bg = torch.randn(4, n_grid, 1, generator=g) + 2.0
    guides = 0.6 * guide_bg + 0.3 * torch.randn(guide_bg.shape, generator=g) + 1.0
    observations = torch.randn(n_grid, 1, generator=g) + 2.0
    observations[1::2] = float("nan")
    return backgrounds, guides, guide_bg, observations


def tiny_recipe_store(workdir: Path, recipe: str, store: str, *, cycles: int, spinup: int, dates: dict) -> dict:
    """Build ``workdir/store`` with ``anemoi-datasets create`` from the shipped recipe ``recipe`` shrunk to
    ``cycles`` (``spinup``) and ``dates``; the isolated environment to run anemoi in from ``workdir``."""
    from hybrid_eda.resources import recipes_dir

    shrunk = yaml.safe_load((recipes_dir() / recipe).read_text())
    shrunk["input"]["lorenz96"]["run"].update(cycles=cycles, spinup=spinup)
    shrunk["dates"] = dict(dates)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(shrunk))
    env = isolated_environment(workdir)
    run_logged([str(Path(sys.executable).parent / "anemoi-datasets"), "create", "tiny.yaml", store], workdir, env)
    return env


def tiny_synthetic_store(workdir: Path, recipe: str, store: str, *, members: int) -> dict:
    """Write a tiny synthetic EDA (``workdir/synthetic-eda``: O32 x 2 levels, ``members``, 6 dates from
    2023-01-01T00, seed 1) and build ``workdir/store`` from the shipped recipe ``recipe`` shrunk to those dates; the
    isolated environment to run anemoi in from ``workdir``."""
    from hybrid_eda.resources import recipes_dir

    env = isolated_environment(workdir)
    bin_dir = Path(sys.executable).parent
    synthetic = ["synthetic", "--grid", "O32", "--levels", "2", "--members", str(members), "--start", "2023-01-01T00",
                 "--end", "2023-01-02T06", "--seed", "1", "--out", "synthetic-eda"]  # fmt: skip
    run_logged([str(bin_dir / "hybrid-eda"), *synthetic], workdir, env)
    shrunk = yaml.safe_load((recipes_dir() / recipe).read_text())
    shrunk["dates"]["end"] = "2023-01-02T06:00:00"
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(shrunk))
    run_logged([str(bin_dir / "anemoi-datasets"), "create", "tiny.yaml", store], workdir, env)
    return env


def train_shipped_config(workdir: Path, env: dict, config: str, overrides: list[str]) -> tuple[str, Path]:
    """``anemoi-training train --config-name=config *overrides`` from ``workdir`` (a 2-step run): its log, once it
    stopped at ``max_steps=2``, and the one inference checkpoint under ``output/<config>``."""
    command = [str(Path(sys.executable).parent / "anemoi-training"), "train", f"--config-name={config}", *overrides]
    log = run_logged(command, workdir, env)
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in log
    (checkpoint,) = (workdir / "output" / config / "checkpoint").glob("*/inference-last.ckpt")
    return log, checkpoint


def assert_seeded_hybrid_cycle(checkpoint: Path, **settings) -> None:
    """A 6-cycle, 2-experiment Lorenz-96 hybrid cycle of preset pan2026, 10 real members plus 10 generated by
    ``checkpoint``, with ``settings`` (method, members, inflation, ...): 10 analyses per cycle, finite RMSE, the same
    with the same seed, different with another."""
    from hybrid_eda.l96.config import ExperimentConfig
    from hybrid_eda.l96.experiment import run_experiment

    def hybrid(seed: int):
        config = ExperimentConfig.from_preset(
            "pan2026", **settings, cycles=6, spinup=2, batch=2, seed=seed, emulator=str(checkpoint), n_real=10
        )
        return run_experiment(config, mask_diverged=True).output

    out, again, other = hybrid(5), hybrid(5), hybrid(6)
    rmse = out.series["analysis_rmse"]  # [T, B]
    assert out.analyses_per_cycle == 10 and out.emulation_seconds > 0  # 10 analyses, 10 generated members
    assert rmse.shape == (6, 2) and np.isfinite(rmse).all()
    np.testing.assert_array_equal(rmse, again.series["analysis_rmse"])  # seeded
    assert not np.array_equal(rmse, other.series["analysis_rmse"])
