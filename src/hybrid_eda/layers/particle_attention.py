"""Ensemble-space ("particle") attention: a member's drift as a learned combination of the other members' anomalies.

The analyses the member generator emulates are ensemble transforms. With all points observed and ``R = r I``, the
ETKF's analysis members are ``m + X_b T`` with ``T`` a function of the Gram matrix ``X_b^T X_b`` of the N background
anomalies, and each perturbed-observation EnKF increment ``K (y + e_j - x_j)`` lies in the span of the background
anomalies (``K v = X (X^T X + (N - 1) r I)^-1 X^T v``). A per-point network cannot form such cross-point,
cross-member linear algebra; this layer can. From each member's tokens ``h_i[grid, latent]`` it forms per-point
queries and keys, and their grid-pooled inner products are the weights over the members of the same particle
ensemble (``G`` of them) and over the ``N_s`` guides::

    a^k_ij = mean_p <Q_k h_i(p), K_k h_j(p)> / sqrt(d)                    (head k, key size d)
    b^k_il = mean_p <Q'_k h_i(p), K'_k g_l(p)> / sqrt(d)                  (g_l: guide l's token)
    out_i(p, v) = sum_k [ 1/G sum_j a^k_ij sum_c W_kcv V_jc(p, v) + 1/N_s sum_l b^k_il sum_c W'_kcv U_lc(p, v) ]

with the particle values ``V_j = ((phi_j - c(t)) / sb, (b_j - xb) / sb)`` (the member at time ``t`` and its
background anomaly) and the guide values ``U_l = ((a_l - mean a) / sb, (g^b_l - xb) / sb)`` (the guide's analysis
anomaly and background anomaly; zeros without guide backgrounds). The guide tokens ``g_l`` come from a small MLP of
``U_l`` at each point. The targets' analyses are never an input: only what the generator may use.

Weights are linear (no softmax), so a transform can take both signs like ``T - I``; the ``1/G`` and ``1/N_s``
means keep their size independent of the ensemble sizes. The mixing weights ``W, W'`` start at zero, so an
untrained layer adds exactly nothing (the member generator's untrained closed form still holds). Permuting the
members of an ensemble permutes ``out`` the same way; permuting the guides leaves it unchanged. The pooling is a
mean over the whole grid (global, as the unlocalised ETKF and EnKF); a localised version would replace that mean
by a kernel-weighted neighbour sum on the grid graph.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hybrid_eda.layers.blocks import TokenMLP

#: Value channels per particle: the member's anomaly at time t and its background's anomaly.
N_PARTICLE_VALUES = 2
#: Value channels per guide: its analysis anomaly and its background anomaly.
N_GUIDE_VALUES = 2


@dataclasses.dataclass(frozen=True)
class GuideSet:
    """The guides as the attention sees them (computed once per generation; they do not move with ``t``).

    Attributes
    ----------
    keys : torch.Tensor
        ``[b, N_s, grid, heads, d]`` guide keys.
    values : torch.Tensor
        ``[b, N_s, grid, var, N_GUIDE_VALUES]`` unit-free guide values ``U_l``.
    """

    keys: torch.Tensor
    values: torch.Tensor


def guide_values(
    guides: torch.Tensor, guide_backgrounds: torch.Tensor | None, centre: torch.Tensor, spread: torch.Tensor
) -> torch.Tensor:
    """``U_l``: ``[b, N_s, grid, var, 2]`` from ``guides[b, N_s, grid, var]``, their backgrounds (or None) and the
    backgrounds' ``centre, spread [b, 1, grid, var]``."""
    analysis = (guides - guides.mean(dim=1, keepdim=True)) / spread
    if guide_backgrounds is None:
        background = torch.zeros_like(analysis)
    else:
        background = (guide_backgrounds - centre) / spread
    return torch.stack([analysis, background], dim=-1)


def group_counts(group: torch.Tensor, n_groups: int, dtype: torch.dtype) -> torch.Tensor:
    """``[n]``: the size of each member's group (``group[n]`` long codes ``0 .. n_groups - 1``)."""
    return torch.bincount(group, minlength=n_groups).to(dtype).index_select(0, group)


class ParticleAttention(nn.Module):
    """Linear attention over the members of a particle ensemble and over the guides (see the module docstring).

    Parameters
    ----------
    latent : int
        Token size of the member tokens.
    n_variables : int
        Variables per point, ``var`` (the mixing weights are per variable).
    heads : int
        Attention heads ``k``.
    key_size : int
        Query and key size ``d`` per head.
    """

    def __init__(self, latent: int, n_variables: int, *, heads: int = 2, key_size: int = 8) -> None:
        super().__init__()
        self.heads, self.key_size = int(heads), int(key_size)
        width = self.heads * self.key_size
        # particle query, particle key, guide query: one projection of the member tokens
        self.member_projection = nn.Linear(latent, 3 * width)
        self.guide_embedding = TokenMLP(N_GUIDE_VALUES * n_variables, latent, width, layer_norm=False)
        self.particle_mixing = nn.Parameter(torch.zeros(self.heads, N_PARTICLE_VALUES, n_variables))
        self.guide_mixing = nn.Parameter(torch.zeros(self.heads, N_GUIDE_VALUES, n_variables))

    def encode_guides(self, values: torch.Tensor) -> GuideSet:
        """``values[b, N_s, grid, var, 2]`` (:func:`guide_values`) -> :class:`GuideSet`."""
        keys = self.guide_embedding(values.flatten(-2))  # [b, N_s, grid, heads * d]
        return GuideSet(keys.unflatten(-1, (self.heads, self.key_size)), values)

    def forward(
        self,
        tokens: torch.Tensor,
        values: torch.Tensor,
        group: torch.Tensor,
        n_groups: int,
        guides: GuideSet | None = None,
    ) -> torch.Tensor:
        """Drift term ``out[b, n, grid, var]`` (unit-free, in background-spread units).

        Parameters
        ----------
        tokens : torch.Tensor
            ``[b, n, grid, latent]`` member tokens.
        values : torch.Tensor
            ``[b, n, grid, var, 2]`` particle values ``V_j``.
        group : torch.Tensor
            ``[n]`` long: each member's particle ensemble (codes ``0 .. n_groups - 1``); members attend only
            within their own.
        n_groups : int
        guides : GuideSet, optional
            Attend also to the guides.
        """
        n_grid = tokens.shape[2]
        scale = 1.0 / (n_grid * self.key_size**0.5)
        query, key, guide_query = (
            self.member_projection(tokens).unflatten(-1, (3 * self.heads, self.key_size)).split(self.heads, dim=-2)
        )  # [b, n, grid, heads, d] each
        weights = torch.einsum("biphd,bjphd->bhij", query, key) * scale  # [b, heads, n, n]
        same = (group[:, None] == group[None, :]).to(weights.dtype)
        weights = weights * (same / group_counts(group, n_groups, weights.dtype)[:, None])
        # heads and mixing folded into small [b, n, n, c, var] transforms first: no field-sized tensor per head
        transform = torch.einsum("bhij,hcv->bijcv", weights, self.particle_mixing)
        out = torch.einsum("bijcv,bjpvc->bipv", transform, values)
        if guides is not None:
            n_guides = guides.keys.shape[1]
            guide_weights = torch.einsum("biphd,blphd->bhil", guide_query, guides.keys) * (scale / n_guides)
            guide_transform = torch.einsum("bhil,hcv->bilcv", guide_weights, self.guide_mixing)
            out = out + torch.einsum("bilcv,blpvc->bipv", guide_transform, guides.values)
        return out
