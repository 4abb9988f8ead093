"""Token blocks of the variance emulator; tokens ``h[grid, batch, channel, latent]`` (grid first).

Every block is a residual update ``h <- h + LayerNorm(W_o GELU(sum_i L_i(h) + b))`` whose inner sum is a
concatenation MLP written as a sum of linear maps (``W [a, b] = W_a a + W_b b``): the same function as
anemoi's ``MLP`` on concatenated inputs, without materialising the concatenation, and with pooling and
neighbour sums applied after the projection (they commute with it). Weights are shared over points and
channels, so the parameter count does not grow with the grid or the number of levels. The grid-first layout
makes a token tensor a ``[grid, width]`` matrix without copies, which is what the sparse neighbour sums take.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from anemoi.models.layers.mlp import MLP
from anemoi.models.layers.utils import load_layer_kernels
from torch import nn
from torch.nn import functional

from hybrid_eda.layers.aggregation import edge_softmax, edge_weighted_sum


@dataclasses.dataclass(frozen=True)
class GridGraph:
    """Edges between the points of one grid: ``src -> dst`` (long ``[edges]``) and their attributes."""

    src: torch.Tensor
    dst: torch.Tensor
    edge_attr: torch.Tensor  # [edges, edge_dim]
    n_nodes: int


class TokenMLP(MLP):
    """anemoi's ``MLP`` (Linear, GELU, Linear, optional LayerNorm) with torch.nn kernels."""

    def __init__(self, in_features: int, hidden: int, out_features: int, *, layer_norm: bool = True) -> None:
        super().__init__(
            in_features, hidden, out_features, layer_kernels=load_layer_kernels(None), layer_norm=layer_norm
        )


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` over the last axis; without autograd, its moments as products with a ``[latent, 1]`` vector.

    On CPU torch's layer norm over a short last axis (latent 32) takes about 1.5 times a 32 x 32 matrix product of
    the same tokens; the two means as matrix-vector products take two thirds of that, with the same numbers to
    round-off (two-pass variance, as torch's).
    """
    if torch.is_grad_enabled() or len(norm.normalized_shape) != 1 or norm.weight is None:
        return norm(x)
    width = x.shape[-1]
    flat = x.reshape(-1, width)
    average = torch.full((width, 1), 1.0 / width, dtype=x.dtype, device=x.device)
    centred = flat - flat @ average
    scale = torch.rsqrt((centred * centred) @ average + norm.eps)
    return torch.addcmul(norm.bias, centred * scale, norm.weight).view(x.shape)


def layer_norm_channels_first(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """:func:`layer_norm` (no autograd) of channels-first tokens ``x[latent, ...]``, normalised over the first axis.

    The two moments are ``[1, latent]`` row-vector products over the tokens (long rows, fast), the same numbers as
    :func:`layer_norm` of the transposed tokens to round-off.
    """
    width = x.shape[0]
    flat = x.reshape(width, -1)
    average = torch.full((1, width), 1.0 / width, dtype=x.dtype, device=x.device)
    centred = flat - average @ flat
    scale = torch.rsqrt(average @ (centred * centred) + norm.eps)
    return torch.addcmul(norm.bias[:, None], centred * scale, norm.weight[:, None]).view(x.shape)


class _ResidualUpdate(nn.Module):
    """``h + LayerNorm(W_o GELU(pre))`` for a pre-activation ``pre[..., hidden]``."""

    def __init__(self, latent: int, hidden: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.out = nn.Linear(hidden, latent)
        self.norm = nn.LayerNorm(latent)

    def forward(self, h: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return self.finish(h, pre + self.bias)

    def finish(self, h: torch.Tensor, biased: torch.Tensor) -> torch.Tensor:
        """``h + LayerNorm(W_o GELU(biased))`` for a pre-activation that already holds the bias."""
        return h + layer_norm(self.norm, self.out(functional.gelu(biased)))

    def finish_channels_first(self, h: torch.Tensor, biased: torch.Tensor) -> torch.Tensor:
        """:meth:`finish` (no autograd) of channels-first ``h[latent, tokens]``, ``biased[hidden, tokens]``."""
        out = torch.addmm(self.out.bias[:, None], self.out.weight, functional.gelu(biased))
        return h + layer_norm_channels_first(self.norm, out)


class GridMessagePassing(nn.Module):
    """One round of message passing on the data grid, channel by channel.

    For each head ``k``: a normalised kernel ``w_k(e_ij) = softmax_j(MLP(edge attributes))`` learned from the
    edges' length and direction (several heads: several length scales, anisotropy) sums the projected tokens of
    the neighbours, ``agg = sum_k sum_{j in N(i)} w_k(e_ij) V_k h[j]``; then ``h <- h + LN(W_o GELU(W_s h + agg))``
    (hidden width ``hidden_ratio * latent``). Kernels are shared by all channels. With ``use_neighbours=False``
    the block keeps its parameters but every kernel is the identity (``agg = sum_k V_k h[i]``): the
    no-message-passing ablation, whose output at a point depends on that point only.
    """

    def __init__(
        self,
        latent: int,
        edge_dim: int,
        *,
        heads: int = 4,
        hidden: int = 16,
        hidden_ratio: int = 1,
        use_neighbours: bool = True,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.use_neighbours = use_neighbours
        width = hidden_ratio * latent
        self.kernel = TokenMLP(edge_dim, hidden, heads, layer_norm=False)
        self.values = nn.Parameter(torch.randn(heads, latent, width) / (latent * heads) ** 0.5)
        self.self_map = nn.Linear(latent, width, bias=False)
        self.update = _ResidualUpdate(latent, width)

    def forward(self, h: torch.Tensor, graph: GridGraph) -> torch.Tensor:
        """``h[grid, batch, channel, latent]`` -> same shape."""
        n_grid, latent = h.shape[0], h.shape[-1]
        if self.use_neighbours:
            # All heads in one product: row (k, i) of a [heads * grid, grid] operator holds kernel k at i, so the
            # smoothed tokens come out as [heads, grid * batch * channel, latent] without copies.
            if not torch.is_grad_enabled():
                return self._inference_forward(h, graph)
            smoothed = self._smooth(h.reshape(n_grid, -1), graph)
            agg = torch.bmm(smoothed.view(self.heads, -1, latent), self.values).sum(dim=0).view(*h.shape[:-1], -1)
        else:
            agg = h @ self.values.sum(dim=0)
        return self.update(h, self.self_map(h) + agg)

    def _inference_forward(self, h: torch.Tensor, graph: GridGraph) -> torch.Tensor:
        """:meth:`forward` without autograd: the cached operator, and the self map, both heads' values and the bias
        accumulated into one ``[tokens, width]`` buffer by ``addmm`` (no per-head products to sum, no extra adds)."""
        n_grid, latent = h.shape[0], h.shape[-1]
        h = h.contiguous()  # one copy for a transposed input, then views for both products
        smoothed = _apply(self._smoothing_operator(graph, h.dtype, h.device), h.view(n_grid, -1))
        smoothed = smoothed.view(self.heads, -1, latent)  # [heads, tokens, latent]
        pre = torch.addmm(self.update.bias, h.view(-1, latent), self.self_map.weight.t())  # [tokens, width]
        for head in range(self.heads):
            pre.addmm_(smoothed[head], self.values[head])
        return self.update.finish(h, pre.view(*h.shape[:-1], -1))

    def forward_channels_first(self, h: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without autograd on channels-first tokens ``h[latent, batch, grid]`` (contiguous).

        ``kernels[heads, grid, grid]`` are the transposed dense kernels (:meth:`dense_kernels`). With the tokens'
        long axis last, every product with a weight is a ``[width, latent] @ [latent, tokens]`` matrix product,
        which CPU BLAS runs several times faster than the ``[tokens, latent] @ [latent, width]`` of a small latent
        size; the neighbour sums contract the grid axis, ``[latent batch, grid] @ [grid, grid]``. Equal to
        :meth:`forward` of the transposed tokens to round-off.
        """
        latent = h.shape[0]
        flat = h.view(latent, -1)
        pre = torch.addmm(self.update.bias[:, None], self.self_map.weight, flat)  # [width, batch * grid]
        rows = h.view(-1, h.shape[-1])  # [latent * batch, grid]
        for head in range(self.heads):
            pre.addmm_(self.values[head].t(), (rows @ kernels[head]).view(latent, -1))
        return self.update.finish_channels_first(flat, pre).view(h.shape)

    def dense_kernels(self, graph: GridGraph, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``[heads, grid, grid]``: kernel ``k`` transposed (``[k, j, i]`` the weight of source ``j`` at ``i``), dense.

        Built once per graph and weights like :meth:`_smoothing_operator` (and kept beside it); for small grids
        (``grid^2`` entries per head).
        """
        key = self._cache_key(graph, dtype, device)
        cached = getattr(self, "_dense_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        weights, src, rows = self._edges(graph)
        operator = torch.zeros(self.heads * graph.n_nodes, graph.n_nodes, dtype=dtype, device=device)
        operator.index_put_((rows.to(device), src.to(device)), weights.to(dtype=dtype, device=device), accumulate=True)
        kernels = operator.view(self.heads, graph.n_nodes, graph.n_nodes).transpose(1, 2).contiguous()
        self._dense_cache = (key, kernels)
        return kernels

    def _cache_key(self, graph: GridGraph, dtype: torch.dtype, device: torch.device) -> tuple:
        """What the cached kernels depend on: the graph, the kernel MLP's weights (in-place updates bump a tensor's
        ``_version``), dtype and device."""
        tensors = (graph.src, graph.dst, graph.edge_attr, *self.kernel.parameters())
        return (graph.n_nodes, dtype, device, *((t.data_ptr(), t._version) for t in tensors))

    def _kernel_weights(self, graph: GridGraph) -> torch.Tensor:
        """``[edges, heads]`` normalised kernel weights of the graph's edges."""
        return edge_softmax(self.kernel(graph.edge_attr), graph.dst, graph.n_nodes)

    def _edges(self, graph: GridGraph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All heads' edges as one ``[heads * grid, grid]`` pattern: weights, sources, rows ``k * grid + dst``."""
        weights = self._kernel_weights(graph)
        offsets = torch.arange(self.heads, device=graph.dst.device)[:, None] * graph.n_nodes
        return weights.t().reshape(-1), graph.src.repeat(self.heads), (offsets + graph.dst).reshape(-1)

    def _smooth(self, x: torch.Tensor, graph: GridGraph) -> torch.Tensor:
        """``x[grid, width]`` -> ``[heads * grid, width]``, differentiable in the kernels (training path)."""
        weights, src, rows = self._edges(graph)
        return edge_weighted_sum(x, weights, src, rows, self.heads * graph.n_nodes)

    def _smoothing_operator(self, graph: GridGraph, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The kernels as one ``[heads * grid, grid]`` matrix, built once per graph and weights (no-grad path).

        Inference calls the block many times with the same graph and weights (every flow step of every cycle), and
        the kernels do not depend on the tokens: the edge MLP, the softmax and the sparse pattern are computed once
        and kept until a weight or the graph changes (in-place updates bump a tensor's ``_version``), as a sparse
        CSR matrix (on the 40-point ring with 5 neighbours it multiplies 1.5 times faster than the dense matrix);
        equal to the training path's :func:`~hybrid_eda.layers.aggregation.edge_weighted_sum` to round-off.
        """
        key = self._cache_key(graph, dtype, device)
        cached = getattr(self, "_operator_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        weights, src, rows = self._edges(graph)
        indices = torch.stack([rows, src]).to(device)
        shape = (self.heads * graph.n_nodes, graph.n_nodes)
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            operator = torch.sparse_coo_tensor(indices, weights.to(dtype=dtype, device=device), shape)
            operator = operator.coalesce().to_sparse_csr()
        self._operator_cache = (key, operator)
        return operator

    def __getstate__(self) -> dict:
        """Pickled (checkpoints, deep copies) without the inference caches."""
        state = self.__dict__.copy()
        state.pop("_operator_cache", None)
        state.pop("_dense_cache", None)
        return state


def _apply(operator: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``operator[rows, grid] @ x[grid, width]`` for a sparse CSR operator."""
    return torch.sparse.mm(operator, x)


class ColumnMixing(nn.Module):
    """Exchange between the channels of a column: means over all channels, the same level, the same variable.

    ``h <- h + LN(W_o GELU(W_1 h + mean_all(W_2 h) + mean_level(W_3 h) + mean_variable(W_4 h)))``: pointwise (no
    neighbours), equivariant to permutations within each group, as cheap as one token MLP however many levels.
    """

    def __init__(
        self, latent: int, channel_level: torch.Tensor, channel_variable: torch.Tensor, *, hidden_ratio: int = 1
    ) -> None:
        super().__init__()
        self.register_buffer("channel_level", torch.as_tensor(channel_level, dtype=torch.long), persistent=False)
        self.register_buffer("channel_variable", torch.as_tensor(channel_variable, dtype=torch.long), persistent=False)
        self.width = hidden_ratio * latent
        self.project = nn.Linear(latent, 4 * self.width, bias=False)
        self.update = _ResidualUpdate(latent, self.width)

    @staticmethod
    def _group_mean(x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Mean of ``x[grid, batch, channel, width]`` over the channels of each group, back on every channel."""
        n_groups = int(group.max()) + 1
        shape = (*x.shape[:2], n_groups, x.shape[-1])
        sums = torch.zeros(shape, dtype=x.dtype, device=x.device).index_add(2, group, x)
        counts = torch.bincount(group, minlength=n_groups).to(x.dtype)
        return (sums / counts[:, None]).index_select(2, group)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        own, overall, level, variable = self.project(h).split(self.width, dim=-1)
        pre = (
            own
            + overall.mean(dim=2, keepdim=True)
            + self._group_mean(level, self.channel_level)
            + self._group_mean(variable, self.channel_variable)
        )
        return self.update(h, pre)
