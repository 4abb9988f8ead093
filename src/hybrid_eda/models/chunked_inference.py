"""The variance emulator's forward pass for inference, in chunks: the same function in a fraction of time and memory.

    out = chunked_forward(core, members)          # == core(members) up to float32 rounding, under inference_mode

Why it is faster: at N80 x 137 levels (35,718 points x 686 channels = 24.5 M tokens) one token tensor of latent 32
is 3.1 GB, so :meth:`VarianceEmulatorCore.forward` is bound by memory traffic (adds, copies and fills of full
token tensors took 60% of its time) and holds ~8 such tensors at once (a round's ``values`` alone are ``heads``
of them). Two facts of the architecture allow exact chunking:

* message passing is channel by channel (kernels shared by all channels): a chunk of channels over the whole grid
  is updated independently of the others;
* column mixing is point by point: a chunk of grid points over all channels is updated independently.

So each round updates the token tensor in place, first by channel chunks, then by grid chunks; the working set is
a chunk, and peak memory is about one token tensor plus the input. Within a block the algebra is rearranged
without changing the function (sums commute with linear maps):

* message passing ``W_s h + sum_k A_k (h V_k)`` (``A_k`` the sparse kernel of head k) is computed as
  ``[A_1 h, ..., A_K h, h] @ [V_1; ...; V_K; W_s^T]``: all heads' neighbour sums at width ``latent`` in one
  numba pass over a tile of points (:func:`multihead_neighbour_sums`), then one matrix product with
  ``(K + 1) latent`` inputs, instead of K + 1 narrow products, K sparse sums at width ``width`` and a copy;
* column mixing ``W_1 h + mean_all(W_2 h) + mean_level(W_3 h) + mean_variable(W_4 h)`` is computed as
  ``W_1 h + W_2 mean_all(h) + W_3 mean_level(h) + W_4 mean_variable(h)``: the group means are taken on the
  ``latent``-wide tokens (one numba pass, :func:`column_means`), then projected once per group instead of once
  per token, and added back in one pass (:func:`add_column_terms`).

The residual update ``h + LayerNorm(...)`` is one numba pass (:func:`residual_layer_norm`). Only the order of
floating-point operations changes (tested against the core: differences ~1e-6). The functions read the blocks'
weights (``values``, ``self_map``, ``project``, ``update``) and refuse blocks of another kind; the core's own
``token_features``, ``output`` and ``head`` are called unchanged.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn import functional

from hybrid_eda.layers.aggregation import _csr_pattern, edge_softmax
from hybrid_eda.layers.blocks import ColumnMixing, GridGraph, GridMessagePassing
from hybrid_eda.models._inference_kernels import (
    add_column_terms,
    column_means,
    multihead_neighbour_sums,
    residual_layer_norm,
)
from hybrid_eda.models.variance_core import VarianceEmulatorCore

__all__ = [
    "DEFAULT_CHANNEL_CHUNK",
    "DEFAULT_GRID_CHUNK",
    "chunked_forward",
    "column_mixing_",
    "message_passing_",
]

#: Channels per message-passing chunk (a chunk is [grid, batch, chunk, latent]: 37 MB at N80, latent 32).
DEFAULT_CHANNEL_CHUNK = 4
#: Grid points per column-mixing chunk (a chunk is [chunk, batch, channel, latent]: 44 MB at 686 channels).
DEFAULT_GRID_CHUNK = 1024


def _check_block(block: torch.nn.Module, kind: type) -> None:
    if type(block) is not kind:
        msg = (
            f"chunked inference evaluates {kind.__name__} blocks, got {type(block).__name__}: the model's "
            "architecture changed; run the core itself (core(members)) or update hybrid_eda.models.chunked_inference"
        )
        raise TypeError(msg)


def _update_(update: torch.nn.Module, own: torch.Tensor, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = own + LayerNorm(W_o GELU(pre + b))``: the block's ``update`` with the residual LayerNorm fused.

    ``own, out`` ``[..., latent]`` contiguous (``out`` may be ``own``), ``pre`` ``[..., width]``.
    """
    norm = update.norm
    if not isinstance(norm, torch.nn.LayerNorm) or norm.weight is None or norm.bias is None:
        msg = "chunked inference fuses the update's LayerNorm (with weight and bias): the block update changed"
        raise TypeError(msg)
    z = update.out(functional.gelu(pre + update.bias))
    latent = own.shape[-1]
    residual_layer_norm(
        own.view(-1, latent).numpy(),
        z.view(-1, latent).numpy(),
        norm.weight.detach().numpy(),
        norm.bias.detach().numpy(),
        np.float32(norm.eps),
        out.view(-1, latent).numpy(),
    )
    return out


def _kernels(block: GridMessagePassing, graph: GridGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The block's kernels as CSR ``crow [grid + 1], col [edges], weights [edges, heads]`` (row = target point)."""
    weights = edge_softmax(block.kernel(graph.edge_attr), graph.dst, graph.n_nodes)  # [edges, heads]
    crow, col, slot = _csr_pattern(graph.dst, graph.src, graph.n_nodes, graph.n_nodes)
    summed = weights.new_zeros((col.numel(), weights.shape[1])).index_add_(0, slot, weights)  # duplicates add up
    return crow.numpy(), col.numpy(), summed.float().numpy()


def message_passing_(
    block: GridMessagePassing,
    h: torch.Tensor,
    graph: GridGraph,
    channel_chunk: int = DEFAULT_CHANNEL_CHUNK,
    grid_chunk: int = DEFAULT_GRID_CHUNK,
) -> torch.Tensor:
    """Apply ``block`` to ``h[grid, batch, channel, latent]`` in place, ``channel_chunk`` channels at a time.

    Within a chunk, ``grid_chunk`` target points at a time: their neighbour sums of all heads and their own tokens
    ``[T, batch * c, heads + 1, latent]`` (one pass of :func:`multihead_neighbour_sums`), one matrix product with
    the stacked value and self maps, the block's residual update.
    """
    _check_block(block, GridMessagePassing)
    n_grid, n_batch, n_channels, latent = h.shape
    self_weight = block.self_map.weight.t()  # [latent, width]
    if block.use_neighbours:
        crow, col, weights = _kernels(block, graph)
        weight = torch.cat([block.values.reshape(-1, self_weight.shape[1]), self_weight], dim=0)
    else:  # the ablation: every kernel is the identity, W_s h + sum_k h V_k = h (W_s^T + sum_k V_k)
        crow = col = weights = None
        weight = self_weight + block.values.sum(dim=0)
    for start in range(0, n_channels, channel_chunk):
        chunk = h[:, :, start : start + channel_chunk]
        tokens = chunk.contiguous()  # [grid, batch, c, latent], read while chunk is overwritten
        if crow is None:
            chunk.copy_(_update_(block.update, tokens, tokens @ weight, torch.empty_like(tokens)))
            continue
        x = tokens.view(n_grid, -1, latent).numpy()
        for first in range(0, n_grid, grid_chunk):
            rows = slice(first, min(first + grid_chunk, n_grid))
            stacked = np.empty((rows.stop - first, x.shape[1], weights.shape[1] + 1, latent), dtype=np.float32)
            multihead_neighbour_sums(crow, col, weights, x, first, stacked)
            pre = torch.from_numpy(stacked).view(-1, weight.shape[0]) @ weight  # [T * batch * c, width]
            own = tokens[rows]
            chunk[rows] = _update_(block.update, own, pre.view(*own.shape[:-1], -1), torch.empty_like(own))
    return h


def column_mixing_(block: ColumnMixing, h: torch.Tensor, grid_chunk: int = DEFAULT_GRID_CHUNK) -> torch.Tensor:
    """Apply ``block`` to ``h[grid, batch, channel, latent]`` in place, ``grid_chunk`` points at a time.

    Per chunk: the column means of the tokens (all channels, level groups, variable groups; one numba pass),
    projected once per group, added to the own projection in one pass, then the block's residual update.
    """
    _check_block(block, ColumnMixing)
    own_w, all_w, level_w, variable_w = (w.t() for w in block.project.weight.split(block.width, dim=0))
    codes, weights = [], []
    for group in (block.channel_level, block.channel_variable):
        counts = torch.bincount(group, minlength=int(group.max()) + 1).float()
        codes.append(group.numpy())
        weights.append((1.0 / counts.clamp_min(1.0)).numpy())
    (level, variable), (level_weight, variable_weight) = codes, weights
    n_grid, n_batch, n_channels, latent = h.shape
    for start in range(0, n_grid, grid_chunk):
        chunk = h[start : start + grid_chunk]  # contiguous [g, batch, channel, latent]
        points = chunk.view(-1, n_channels, latent)  # [g * batch, channel, latent]
        n_points = points.shape[0]
        mean_all = torch.empty((n_points, latent))
        mean_level = torch.empty((n_points, len(level_weight), latent))
        mean_variable = torch.empty((n_points, len(variable_weight), latent))
        column_means(
            points.numpy(), level, level_weight, variable, variable_weight,
            mean_all.numpy(), mean_level.numpy(), mean_variable.numpy(),
        )  # fmt: skip
        pre = points @ own_w  # [g * batch, channel, width]
        add_column_terms(
            pre.numpy(), (mean_all @ all_w).numpy(), level, (mean_level @ level_w).numpy(), variable,
            (mean_variable @ variable_w).numpy(),
        )  # fmt: skip
        _update_(block.update, chunk, pre.view(*chunk.shape[:-1], -1), chunk)
    return h


def chunked_forward(
    core: VarianceEmulatorCore,
    members: torch.Tensor,
    log_target_mul: torch.Tensor | None = None,
    *,
    channel_chunk: int = DEFAULT_CHANNEL_CHUNK,
    grid_chunk: int = DEFAULT_GRID_CHUNK,
    timings: dict[str, float] | None = None,
) -> torch.Tensor:
    """``core(members, log_target_mul)`` evaluated in chunks, for inference on CPUs (no gradients).

    Members on another device are passed to the core itself (the neighbour sums are a numba CPU kernel).

    Parameters
    ----------
    core : VarianceEmulatorCore
        The emulator (its weights are read, never changed).
    members : torch.Tensor
        ``[batch, M, grid, channel]`` in physical units, M >= 2.
    log_target_mul : torch.Tensor, optional
        ``[channel]``, as for the core.
    channel_chunk, grid_chunk : int
        Chunk sizes of message passing (channels) and column mixing (grid points); any value gives the same
        result, they trade speed for memory.
    timings : dict, optional
        If given, seconds spent in each phase are added to it (``features``, ``embedding``, ``message_passing``,
        ``column_mixing``, ``output``).

    Returns
    -------
    torch.Tensor
        ``[batch, 2, grid, channel]``, the head's distribution tensor (as the core's forward).

    Raises
    ------
    ValueError
        If ``members`` has another shape than the core was built for, or gradients are enabled.
    TypeError
        If the core's blocks are not the ones this module evaluates.
    """
    if members.device.type != "cpu":  # the neighbour sums are a CPU kernel; a GPU has the memory for the core
        return core(members, log_target_mul)
    if torch.is_grad_enabled():
        msg = "chunked_forward updates tokens in place and has no backward pass: call it under torch.inference_mode()"
        raise ValueError(msg)
    if members.ndim != 4 or members.shape[-2:] != (core.n_grid, core.n_channels):
        msg = f"members must be [batch, M, grid={core.n_grid}, channel={core.n_channels}], got {tuple(members.shape)}"
        raise ValueError(msg)
    if channel_chunk < 1 or grid_chunk < 1:
        msg = f"chunk sizes must be >= 1, got channel_chunk={channel_chunk}, grid_chunk={grid_chunk}"
        raise ValueError(msg)
    clock = _Clock(timings)
    log_spread, features = core.token_features(members)  # [b, grid, channel], [grid, b, channel, features]
    # h = embedding(features) + channel embedding + point embedding, point chunk by point chunk (no full temporaries)
    points = core.point_embedding(core.point_features)[:, None, None, :]  # [grid, 1, 1, latent]
    clock.lap("features")
    h = features.new_empty((*features.shape[:3], core.settings.latent))
    for start in range(0, core.n_grid, grid_chunk):
        part = slice(start, start + grid_chunk)
        torch.add(core.token_embedding(features[part]), core.channel_embedding, out=h[part])
        h[part] += points[part]
    del features
    clock.lap("embedding")
    graph = core.graph
    for mp_block, cm_block in zip(core.message_passing, core.column_mixing, strict=True):
        message_passing_(mp_block, h, graph, channel_chunk, grid_chunk)
        clock.lap("message_passing")
        column_mixing_(cm_block, h, grid_chunk)
        clock.lap("column_mixing")
    n_batch = members.shape[0]
    out = h.new_empty((core.n_grid, n_batch, core.n_channels, 2))
    for start in range(0, core.n_grid, grid_chunk):
        out[start : start + grid_chunk] = core.output(h[start : start + grid_chunk])
    del h
    delta, raw = out.transpose(0, 1).unbind(dim=-1)  # [b, grid, channel] each
    if log_target_mul is None:
        log_target_mul = torch.zeros(core.n_channels, dtype=delta.dtype, device=delta.device)
    result = core.head((log_spread + delta)[:, None], raw[:, None], log_target_mul)
    clock.lap("output")
    return result


class _Clock:
    """Adds the seconds since the last lap to ``timings[name]`` (nothing when ``timings`` is None)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, name: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
            self.last = now
