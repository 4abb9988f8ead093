"""Building blocks of the variance emulator: set pooling over members, message passing on the data grid.

The layers work on *tokens*, one per grid point and channel (channel = one variable at one level, e.g.
``t_137``), ``h[grid, batch, channel, latent]`` (grid first, so a token tensor is a ``[grid, width]`` matrix for
the sparse neighbour sums); the model's boundaries keep anemoi's ``TensorDim`` order.

``set_pooling``
    :func:`member_spread`, :class:`MemberStatistics`: permutation-invariant summaries of the M members at each
    point (debiased log sample std, ensemble mean), valid for any M >= 2.
``aggregation``
    :func:`edge_weighted_sum`: ``out[dst] = sum_e w_e h[src_e]`` with a memory-lean custom backward (no
    ``[edges, channels, latent]`` tensor), :func:`edge_softmax`.
``blocks``
    :class:`GridMessagePassing` (learned, normalised smoothing kernels from edge geometry, one per head),
    :class:`ColumnMixing` (pooling over the channels of a column: all, same level, same variable),
    :class:`TokenMLP` (anemoi's ``MLP``), :class:`GridGraph`.
``heads``
    :class:`LogNormalHead`, :class:`GaussianHead`: map a log-spread estimate and a raw width to the parameters
    of a predictive distribution of ``s_N`` (positive by construction).
"""

from hybrid_eda.layers.aggregation import edge_softmax, edge_weighted_sum
from hybrid_eda.layers.blocks import ColumnMixing, GridGraph, GridMessagePassing, TokenMLP
from hybrid_eda.layers.heads import DistributionHead, GaussianHead, LogNormalHead
from hybrid_eda.layers.set_pooling import MemberStatistics, member_spread

__all__ = [
    "ColumnMixing",
    "DistributionHead",
    "GaussianHead",
    "GridGraph",
    "GridMessagePassing",
    "LogNormalHead",
    "MemberStatistics",
    "TokenMLP",
    "edge_softmax",
    "edge_weighted_sum",
    "member_spread",
]
