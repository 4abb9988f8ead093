"""Spread/skill and rank histograms of torch ensembles ``members[..., ens, grid, var]`` against a truth.

The same definitions as the Lorenz-96 scores (:mod:`hybrid_eda.l96.metrics`, numpy, one cycle at a time), for
tensors on any device, e.g. generated members during validation (anemoi 0.17 has no spread/skill or rank metric):

- ``rmse = sqrt(mean_{grid, var} w (xbar - y)^2)``, ``spread = sqrt(mean_{grid, var} w s^2)`` with ``s^2`` the
  unbiased (``M - 1``) ensemble variance and ``w`` optional grid weights normalised to mean 1 (area weights);
- a reliable ensemble of M members has ``E[(xbar - y)^2] = (1 + 1/M) E[s^2]``: its spread/RMSE ratio is close to
  ``sqrt(M / (M + 1))``, not 1 (:attr:`SpreadSkill.reliable_ratio`);
- rank of the truth: the number of members below it, ``0 .. M`` (``M + 1`` bins); ties broken uniformly among the
  tied positions with an explicit ``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from hybrid_eda.errors import UserInputError


def _check(members: torch.Tensor, truth: torch.Tensor) -> int:
    if members.ndim < 3 or truth.shape != members.shape[:-3] + members.shape[-2:]:
        msg = (
            f"scores need members [..., ens, grid, var] and truth [..., grid, var], got {tuple(members.shape)} and "
            f"{tuple(truth.shape)}"
        )
        raise UserInputError(msg)
    return members.shape[-3]


@dataclasses.dataclass(frozen=True)
class SpreadSkill:
    """Spread and RMSE of the ensemble mean per leading index, ``[...]`` each.

    Attributes
    ----------
    spread, rmse : torch.Tensor
        ``[...]`` (the leading axes of the members, e.g. dates).
    n_members : int
        M.
    """

    spread: torch.Tensor
    rmse: torch.Tensor
    n_members: int

    @property
    def ratio(self) -> float:
        """Mean spread over mean RMSE (the time-mean ratio of the Lorenz-96 tables)."""
        return float(self.spread.mean() / self.rmse.mean())

    @property
    def reliable_ratio(self) -> float:
        """``sqrt(M / (M + 1))``: the ratio a reliable M-member ensemble has on average."""
        return math.sqrt(self.n_members / (self.n_members + 1))


def spread_skill(members: torch.Tensor, truth: torch.Tensor, weights: torch.Tensor | None = None) -> SpreadSkill:
    """Spread and RMSE of ``members[..., M, grid, var]`` against ``truth[..., grid, var]`` (M >= 2).

    ``weights[grid]`` (e.g. area weights) are normalised to mean 1; default uniform.
    """
    n_members = _check(members, truth)
    if n_members < 2:
        raise UserInputError(f"spread needs at least 2 members, got {n_members}")
    w = torch.ones(members.shape[-2], dtype=members.dtype, device=members.device) if weights is None else weights
    w = (w / w.mean())[:, None]  # [grid, 1]
    error = torch.square(members.mean(dim=-3) - truth)  # [..., grid, var]
    variance = members.var(dim=-3, correction=1)
    return SpreadSkill(
        spread=torch.sqrt((w * variance).mean(dim=(-2, -1))),
        rmse=torch.sqrt((w * error).mean(dim=(-2, -1))),
        n_members=n_members,
    )


def truth_rank(members: torch.Tensor, truth: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rank of the truth among the members per point and variable: ``[..., M, grid, var] -> [..., grid, var]``.

    Counts the members strictly below the truth; ties add a uniform draw from ``0 .. #tied`` (from ``generator``).
    """
    _check(members, truth)
    below = (members < truth.unsqueeze(-3)).sum(dim=-3)
    tied = (members == truth.unsqueeze(-3)).sum(dim=-3)
    if bool(tied.any()):
        u = torch.rand(tied.shape, generator=generator, device=tied.device, dtype=torch.float64)
        below = below + torch.floor(u * (tied + 1)).long().clamp_max(tied)
    return below


def rank_histogram(ranks: torch.Tensor, n_members: int) -> torch.Tensor:
    """Counts of the ranks ``0 .. M`` (``M + 1`` bins) over all entries of ``ranks``."""
    return torch.bincount(ranks.reshape(-1).long(), minlength=n_members + 1)
