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


class _ResidualUpdate(nn.Module):
    """``h + LayerNorm(W_o GELU(pre))`` for a pre-activation ``pre[..., hidden]``."""

    def __init__(self, latent: int, hidden: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.out = nn.Linear(hidden, latent)
        self.norm = nn.LayerNorm(latent)

    def forward(self, h: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return h + self.norm(self.out(functional.gelu(pre + self.bias)))


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
            weights = edge_softmax(self.kernel(graph.edge_attr), graph.dst, graph.n_nodes)  # [edges, heads]
            # All heads in one sparse product: row (k, i) of a [heads * grid, grid] matrix holds kernel k at i,
            # so the smoothed tokens come out as [heads, grid * batch * channel, latent] without copies.
            offsets = torch.arange(self.heads, device=h.device)[:, None] * graph.n_nodes
            smoothed = edge_weighted_sum(
                h.reshape(n_grid, -1),
                weights.t().reshape(-1),
                graph.src.repeat(self.heads),
                (offsets + graph.dst).reshape(-1),
                self.heads * graph.n_nodes,
            ).view(self.heads, -1, latent)
            agg = torch.bmm(smoothed, self.values).sum(dim=0).view(*h.shape[:-1], -1)
        else:
            agg = h @ self.values.sum(dim=0)
        return self.update(h, self.self_map(h) + agg)


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
