"""Shared by the variance emulator's benchmarks: the operational grid, channels, settings and a random-init core.

Not a benchmark itself. ``variance_inference.py`` and ``variance_training.py`` import it (scripts in this folder
see each other).
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import torch

VARIABLES = ("vo", "d", "t", "q", "o3")  # on every model level; lnsp on level 1 only (as in MARS)
#: Settings of the model config (``model.model``) a row of a benchmark may change.
SETTING_NAMES = ("latent", "rounds", "heads", "kernel_hidden", "hidden_ratio")


def set_threads_default() -> None:
    """One thread per library unless told otherwise (benchmarks/README.md); call before importing numpy/torch."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def composed_config(name: str, overrides: list[str] | tuple[str, ...] = ()):
    """The shipped training config ``name`` composed by Hydra (as ``anemoi-training train`` does), with overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hybrid_eda.resources import configs_dir
    from hybrid_eda.training import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(configs_dir()), version_base=None):
        return compose(name, overrides=list(overrides))


def setting_overrides(settings: str) -> list[str]:
    """``"latent=24,rounds=3"`` -> Hydra overrides of ``model.model`` (``""``/``"config"``: none)."""
    if settings in ("", "config"):
        return []
    overrides = []
    for item in settings.split(","):
        match = re.fullmatch(r"\s*(\w+)\s*=\s*(\S+)\s*", item)
        if match is None or match.group(1) not in SETTING_NAMES:
            msg = f"bad setting {item!r} in {settings!r}: use NAME=VALUE with NAME one of {', '.join(SETTING_NAMES)}"
            raise SystemExit(msg)
        overrides.append(f"model.model.{match.group(1)}={match.group(2)}")
    return overrides


def run_worker(script: str, spec: dict, env: dict[str, str] | None = None) -> dict:
    """Run one benchmark row as ``python SCRIPT --worker SPEC`` in a fresh process (its own peak memory); the
    worker prints its result as JSON on the last line."""
    result = subprocess.run(
        [sys.executable, script, "--worker", json.dumps(spec)], capture_output=True, text=True, check=False, env=env
    )
    if result.returncode != 0:
        raise RuntimeError(f"row {spec} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def channel_names(levels: int) -> list[str]:
    """``vo_1 .. vo_L, d_*, t_*, q_*, o3_*, lnsp_1``: ``5 L + 1`` channels (686 at 137 levels), as in the stores."""
    return [f"{v}_{k}" for v in VARIABLES for k in range(1, levels + 1)] + ["lnsp_1"]


def grid_graph(grid: str):
    """Coordinates ``[grid, 2]`` (radians) and the 9-NN graph of ``grid`` (HeteroData), as configs/graph builds it.

    anemoi-graphs' ``KNNEdges`` (k = 9, the point included) with ``EdgeLength`` and ``EdgeDirection`` attributes
    (``unit-std``), on ``LatLonNodes`` of the package's grid (:func:`hybrid_eda.synthetic.grids.make_grid`).
    """
    from anemoi.graphs.edges import KNNEdges
    from anemoi.graphs.nodes import LatLonNodes
    from anemoi.utils.config import DotDict
    from torch_geometric.data import HeteroData

    from hybrid_eda.synthetic.grids import make_grid

    points = make_grid(grid)
    attributes = DotDict(
        {
            "edge_length": {"_target_": "anemoi.graphs.edges.attributes.EdgeLength", "norm": "unit-std"},
            "edge_dirs": {"_target_": "anemoi.graphs.edges.attributes.EdgeDirection", "norm": "unit-std"},
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = LatLonNodes(points.latitudes, points.longitudes, name="members").update_graph(HeteroData())
        graph = KNNEdges("members", "members", num_nearest_neighbours=9).update_graph(graph, attributes)
    return graph["members"].x.float(), graph


def build_emulator(config: str, levels: int, coordinates, graph_data, overrides=(), *, seed: int = 0):
    """The shipped config's model through its anemoi adapter (as anemoi-training builds it), random weights.

    ``graph_data`` is the HeteroData of :func:`grid_graph`; statistics are ones (the timing does not depend on
    them). Returns the adapter (:class:`hybrid_eda.models.VarianceEmulator`); its ``core`` is the network. The
    output layer starts at zero (an untrained model predicts the debiased s_M); it is drawn at random, seeded,
    so that comparisons of two forward passes see the whole network.
    """
    from omegaconf import OmegaConf

    from hybrid_eda.models.standalone import build_variance_emulator

    cfg = composed_config(config, overrides)
    inputs = channel_names(levels)
    targets = [name.replace("_", "_std_", 1) for name in inputs]
    OmegaConf.update(cfg, "data.datasets.spread.diagnostic", targets, force_add=True)
    model_config = OmegaConf.create({"model": OmegaConf.to_container(cfg.model, resolve=True), "data": cfg.data})
    graph_data["spread"].x = coordinates
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_variance_emulator(model_config, inputs, targets, graph_data)
    with torch.no_grad():
        model.core.output.mlp[-1].weight.normal_(0.0, 0.1)
    return model.eval()


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def random_members(n_members: int, n_grid: int, n_channels: int, *, seed: int = 0) -> torch.Tensor:
    """Positive random members ``[1, M, grid, channel]`` (log-normal; the model sees only their mean and spread)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, n_members, n_grid, n_channels, generator=generator).exp_()


def repository_root() -> Path:
    return Path(__file__).resolve().parents[1]
