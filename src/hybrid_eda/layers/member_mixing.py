"""Exchange between the members of an ensemble: an equivariant (deep-sets) update of member tokens.

Tokens ``h[grid, B, channel, latent]`` with the members on the flattened axis ``B`` and ``group[B]`` naming the
ensemble each member belongs to (a batch index times a replica count, see the member generator)::

    h_i <- h_i + LN(W_o GELU(W_1 h_i + mean_{j in group(i)} W_2 h_j + b))

Permuting the members within a group permutes the output the same way; a member with a group of its own sees only
itself. The pooled term is what lets a member's drift and diffusion depend on the whole particle ensemble beyond
the handful of pooled input statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


def group_mean(x: torch.Tensor, group: torch.Tensor, n_groups: int, dim: int) -> torch.Tensor:
    """Mean of ``x`` over the entries of each group along ``dim``, broadcast back to every entry (same shape).

    ``group`` is a long ``[x.shape[dim]]`` of codes ``0 .. n_groups - 1``.
    """
    shape = list(x.shape)
    shape[dim] = n_groups
    sums = torch.zeros(shape, dtype=x.dtype, device=x.device).index_add(dim, group, x)
    counts = torch.bincount(group, minlength=n_groups).to(x.dtype).clamp_min(1)
    counts = counts.reshape([-1 if d == (dim % x.ndim) else 1 for d in range(x.ndim)])
    return (sums / counts).index_select(dim, group)


class MemberMixing(nn.Module):
    """One equivariant member-exchange update (see the module docstring)."""

    def __init__(self, latent: int, *, hidden_ratio: int = 1) -> None:
        super().__init__()
        self.width = hidden_ratio * latent
        self.project = nn.Linear(latent, 2 * self.width)
        self.out = nn.Linear(self.width, latent)
        self.norm = nn.LayerNorm(latent)

    def forward(self, h: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
        """``h[grid, B, channel, latent]``, ``group[B]`` -> same shape as ``h``."""
        own, pooled = self.project(h).split(self.width, dim=-1)
        pre = own + group_mean(pooled, group, n_groups, dim=1)
        return h + self.norm(self.out(functional.gelu(pre)))
