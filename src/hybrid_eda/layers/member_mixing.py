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

from hybrid_eda.layers.blocks import layer_norm, layer_norm_channels_first


def contiguous_group_size(group: torch.Tensor, n_groups: int) -> int | None:
    """``s`` if ``group`` is ``0 x s, 1 x s, ..., (n_groups - 1) x s`` (consecutive equal-sized groups), else None.

    The member generator's groups are of that form whenever ``n`` is a whole number of replicas (the cycle's
    ``n = k`` and training's ``n = R k``): then a group mean is a reshape and a mean, not a scatter.
    """
    n = group.numel()
    if n_groups < 1 or n % n_groups:
        return None
    size = n // n_groups
    expected = torch.arange(n, device=group.device) // size
    return size if torch.equal(group, expected) else None


def group_means(x: torch.Tensor, group: torch.Tensor, n_groups: int, dim: int) -> torch.Tensor:
    """Mean of ``x`` over the entries of each group along ``dim``: ``x`` with ``n_groups`` entries along ``dim``.

    ``group`` is a long ``[x.shape[dim]]`` of codes ``0 .. n_groups - 1``; an empty group's mean is 0.
    """
    dim = dim % x.ndim
    size = contiguous_group_size(group, n_groups)
    if size is not None:
        return x.unflatten(dim, (n_groups, size)).mean(dim=dim + 1)
    shape = list(x.shape)
    shape[dim] = n_groups
    sums = torch.zeros(shape, dtype=x.dtype, device=x.device).index_add(dim, group, x)
    counts = torch.bincount(group, minlength=n_groups).to(x.dtype).clamp_min(1)
    return sums / counts.reshape([-1 if d == dim else 1 for d in range(x.ndim)])


def broadcast_groups(means: torch.Tensor, group: torch.Tensor, dim: int) -> torch.Tensor:
    """Each entry's group value: ``means`` (``n_groups`` along ``dim``) -> ``group.numel()`` entries along ``dim``."""
    dim = dim % means.ndim
    size = contiguous_group_size(group, means.shape[dim])
    if size is not None:
        expanded = means.unsqueeze(dim + 1).expand(*means.shape[: dim + 1], size, *means.shape[dim + 1 :])
        return expanded.flatten(dim, dim + 1)
    return means.index_select(dim, group)


def add_group_values(x: torch.Tensor, means: torch.Tensor, group: torch.Tensor, dim: int) -> torch.Tensor:
    """``x + broadcast_groups(means, group, dim)`` without materialising the broadcast for contiguous groups."""
    dim = dim % x.ndim
    size = contiguous_group_size(group, means.shape[dim])
    if size is not None:
        return (x.unflatten(dim, (means.shape[dim], size)) + means.unsqueeze(dim + 1)).flatten(dim, dim + 1)
    return x + means.index_select(dim, group)


def group_mean(x: torch.Tensor, group: torch.Tensor, n_groups: int, dim: int) -> torch.Tensor:
    """Mean of ``x`` over the entries of each group along ``dim``, broadcast back to every entry (same shape).

    ``group`` is a long ``[x.shape[dim]]`` of codes ``0 .. n_groups - 1``.
    """
    return broadcast_groups(group_means(x, group, n_groups, dim), group, dim)


class MemberMixing(nn.Module):
    """One equivariant member-exchange update (see the module docstring)."""

    def __init__(self, latent: int, *, hidden_ratio: int = 1) -> None:
        super().__init__()
        self.width = hidden_ratio * latent
        self.project = nn.Linear(latent, 2 * self.width)
        self.out = nn.Linear(self.width, latent)
        self.norm = nn.LayerNorm(latent)

    def forward(self, h: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
        """``h[grid, B, channel, latent]``, ``group[B]`` -> same shape as ``h``.

        The pooled projection is taken of the group means of ``h`` (``mean_j W_2 h_j + b = W_2 mean_j h_j + b``):
        one projection per group instead of one per member, the same numbers to round-off.
        """
        weight, bias = self.project.weight, self.project.bias
        own = functional.linear(h, weight[: self.width], bias[: self.width])
        pooled = functional.linear(group_means(h, group, n_groups, dim=1), weight[self.width :], bias[self.width :])
        pre = add_group_values(own, pooled, group, dim=1)
        return h + layer_norm(self.norm, self.out(functional.gelu(pre)))

    def forward_channels_first(self, h: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without autograd on channels-first tokens ``h[latent, groups, members, grid]``.

        Each group is the ``members`` axis (consecutive equal-sized groups of :meth:`forward`), the tokens' long axis
        is last: every product is a ``[width, latent] @ [latent, tokens]`` matrix product (see
        :meth:`~hybrid_eda.layers.blocks.GridMessagePassing.forward_channels_first`). Equal to :meth:`forward` of
        the transposed tokens to round-off.
        """
        latent, n_groups, _, n_grid = h.shape
        weight, bias = self.project.weight, self.project.bias
        pre = torch.addmm(bias[: self.width, None], weight[: self.width], h.view(latent, -1))
        means = h.mean(dim=2).view(latent, -1)  # [latent, groups * grid]
        pooled = torch.addmm(bias[self.width :, None], weight[self.width :], means)
        pre.view(self.width, n_groups, -1, n_grid).add_(pooled.view(self.width, n_groups, 1, n_grid))
        out = torch.addmm(self.out.bias[:, None], self.out.weight, functional.gelu(pre))
        return h + layer_norm_channels_first(self.norm, out).view(h.shape)
