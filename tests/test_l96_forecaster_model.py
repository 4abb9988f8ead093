"""The ``l96_forecaster`` GNN's structure on the Lorenz-96 ring (shipped config and graph, random weights).

Why the first version barely used its neighbours: anemoi's GNN decoder takes ``target_node_features:
[encoded_data]`` by default, the encoder's own embedding of each grid point's input, and adds it back in the
decoder's node update (``node_mlp([x_dst, msg]) + x_dst``). With the ring's 1-to-1 encoder and decoder this is a
path from x_i to the forecast at i that skips the hidden mesh, and so the processor: trained, that model's
forecast had derivatives of 1e-9 with respect to the neighbours and matched the best pointwise regression
(one-step test RMSE 0.33). The shipped config gives the decoder position features only (coordinates and
trainable parameters), so the forecast can see the data only through the hidden mesh and its message passing;
trained so (default 5000 steps) its one-step test RMSE is 0.010 and its derivatives with respect to
x_{i+-1}, x_{i+-2} match the true L96 step's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

N = 40  # the L96 ring: 40 grid points on the equator, longitude 360 i / 40


def _composed():
    """The composed shipped ``l96_forecaster`` config, as anemoi-training composes it."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="anemoi.training.config", version_base=None):
        return compose("l96_forecaster")


def _ring_graph(cfg):
    """The shipped ``l96_ring`` graph (edges and attributes) on nodes given by their coordinates."""
    from anemoi.graphs.create import GraphCreator
    from omegaconf import OmegaConf

    ring = {
        "_target_": "anemoi.graphs.nodes.LatLonNodes",
        "latitudes": [0.0] * N,
        "longitudes": [360.0 * i / N for i in range(N)],
    }
    for nodes in ("data", "hidden"):
        OmegaConf.update(cfg, f"graph.nodes.{nodes}.node_builder", ring, merge=False)
    return GraphCreator(config=OmegaConf.create(OmegaConf.to_container(cfg.graph, resolve=True))).create(save_path=None)


def _model(decoder_targets: list[str] | None = None, seed: int = 0):
    """anemoi's ``AnemoiModelEncProcDec`` built from the shipped config (random weights, seeded)."""
    from anemoi.models.data_indices.collection import IndexCollection
    from anemoi.models.models import AnemoiModelEncProcDec
    from anemoi.utils.config import DotDict
    from omegaconf import OmegaConf

    cfg = _composed()
    graph = _ring_graph(cfg)
    if decoder_targets is not None:
        OmegaConf.update(cfg, "model.decoders.0.target_node_features", decoder_targets, merge=False)
        if "encoded_data" in decoder_targets:  # anemoi's default model: 8 trainable parameters per grid point
            OmegaConf.update(cfg, "model.node_trainable_parameters.data", 8)
    data = cfg.data.datasets.data
    torch.manual_seed(seed)
    return AnemoiModelEncProcDec(
        model_config=DotDict({"model": OmegaConf.to_container(cfg.model, resolve=True)}),
        data_indices={"data": IndexCollection(data, {"truth": 0})},
        statistics={"data": {k: np.ones(1) for k in ("mean", "stdev", "minimum", "maximum")}},
        n_step_input=cfg.task.multistep_input,
        n_step_output=cfg.task.multistep_output,
        graph_data=graph,
    )


def _jacobian(model, x, cut_mesh: bool = False, no_messages: bool = False) -> np.ndarray:
    """d forecast_i / d x_j(t) - identity (anemoi's residual skip), ``[sample, i, j]``.

    ``cut_mesh`` detaches the hidden nodes' latent state after the encoder, so only paths that avoid the mesh
    remain; ``no_messages`` replaces the processor by the identity (no message passing on the mesh)."""
    handles = []
    if cut_mesh:
        handles.append(model.encoder["0"].register_forward_hook(lambda mod, args, out: (out[0], out[1].detach())))
    if no_messages:
        handles.append(model.processor.register_forward_hook(lambda mod, a, kw, out: kw["x"], with_kwargs=True))
    x = x.clone().requires_grad_(True)  # [sample, time, ens=1, grid, var=1]
    y = model.forward({"data": x})["data"][:, 0, 0, :, 0]  # [sample, grid]
    rows = [torch.autograd.grad(y[:, i].sum(), x, retain_graph=True)[0][:, -1, 0, :, 0] for i in range(N)]
    for handle in handles:
        handle.remove()
    return (torch.stack(rows, 1) - torch.eye(N)).detach().numpy()


def _by_offset(jac: np.ndarray, k: int) -> np.ndarray:
    """The derivatives of each point's forecast with respect to its neighbour at offset ``k``: ``[sample, grid]``."""
    i = np.arange(N)
    return jac[:, i, (i + k) % N]


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(4, 2, 1, N, 1, generator=torch.Generator().manual_seed(1))  # normalised, 2 input steps


def test_shipped_decoder_sees_the_data_only_through_the_mesh(inputs):
    """Cut the hidden mesh after the encoder: the shipped model's forecast no longer depends on its input
    (beyond the residual skip), while anemoi's default ``[encoded_data]`` decoder keeps a pointwise bypass."""
    shipped = _model()
    assert [f.name for f in shipped.decoders_target_input["0"].features] == ["coordinates", "trainable_parameters"]
    np.testing.assert_array_equal(_jacobian(shipped, inputs, cut_mesh=True), 0.0)

    default = _model(decoder_targets=["encoded_data"])
    bypass = _jacobian(default, inputs, cut_mesh=True)
    assert np.abs(_by_offset(bypass, 0)).min() > 0  # x_i reaches forecast_i around the processor
    np.testing.assert_array_equal(bypass - np.einsum("sii->si", bypass)[:, :, None] * np.eye(N), 0.0)  # and only x_i


def test_shipped_forecast_responds_to_the_stencil_through_the_processor(inputs):
    """Each forecast responds to x_{i+-1}, x_{i+-2} (the KNN-5 processor edges), to nothing beyond the
    processor's reach of 2 points per layer, and, without the processor's messages, to x_i alone."""
    model = _model()
    jac = _jacobian(model, inputs)
    reach = 2 * model.processor.num_layers
    for k in (-2, -1, 1, 2):
        assert np.abs(_by_offset(jac, k)).min() > 0, k
    for k in range(reach + 1, N - reach):
        np.testing.assert_array_equal(_by_offset(jac, k), 0.0)

    pointwise = _jacobian(model, inputs, no_messages=True)
    assert np.abs(_by_offset(pointwise, 0)).min() > 0
    np.testing.assert_array_equal(pointwise - np.einsum("sii->si", pointwise)[:, :, None] * np.eye(N), 0.0)
