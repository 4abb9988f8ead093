"""Permutation-invariant pooling over the M members at each point: what the emulator keeps of its input set.

For M Gaussian members of std ``sigma``, ``(M - 1) s_M^2 / sigma^2 ~ chi2_{M-1}``, hence

    E[log s_M^2] = log sigma^2 + psi((M - 1) / 2) + log(2 / (M - 1))        (psi: digamma)

and ``log s_M - (psi(k / 2) + log(2 / k)) / 2`` (k = M - 1) is an unbiased estimate of ``log sigma`` for every M.
The emulator works on that debiased log-spread, so a model trained with M = 5 sees inputs of the same meaning
when run with M = 10 (its remaining M-dependence, the estimate's variance ``psi'(k / 2) / 4``, is passed as a
feature). Pooling is a mean over the member axis, so the result does not depend on the members' order.
"""

from __future__ import annotations

import dataclasses
import math

import torch

#: Smallest variance kept before the log (physical units squared); below any spread a float32 field resolves.
VARIANCE_FLOOR = 1e-30


def log_variance_bias(n_members: int) -> float:
    """``E[log s_M^2] - log sigma^2 = psi(k / 2) + log(2 / k)``, k = M - 1, for Gaussian members."""
    k = n_members - 1
    return float(torch.special.digamma(torch.tensor(k / 2.0, dtype=torch.float64))) + math.log(2.0 / k)


def log_variance_noise(n_members: int) -> float:
    """Standard deviation of ``log s_M`` for Gaussian members: ``sqrt(psi'(k / 2)) / 2``, k = M - 1."""
    k = n_members - 1
    return 0.5 * math.sqrt(float(torch.special.polygamma(1, torch.tensor(k / 2.0, dtype=torch.float64))))


@dataclasses.dataclass(frozen=True)
class MemberStatistics:
    """Summaries of an ensemble at each point, the member axis pooled away.

    Attributes
    ----------
    log_spread : torch.Tensor
        Debiased ``log sigma`` estimate from the M members, ``[..., grid, var]`` (physical units of the input).
    mean : torch.Tensor
        Ensemble mean, ``[..., grid, var]``.
    n_members : int
        M.
    noise : float
        Standard deviation of ``log_spread`` around ``log sigma`` for Gaussian members (0.35 for M = 5).
    """

    log_spread: torch.Tensor
    mean: torch.Tensor
    n_members: int
    noise: float


def member_spread(members: torch.Tensor, dim: int = -3) -> MemberStatistics:
    """Pool the member axis ``dim`` of ``members[..., M, grid, var]`` into :class:`MemberStatistics`.

    Raises
    ------
    ValueError
        If there are fewer than 2 members (no spread to estimate).
    """
    n_members = members.shape[dim]
    if n_members < 2:
        msg = (
            f"the variance emulator needs at least 2 members to estimate a spread, got {n_members} on axis {dim} "
            f"of an input of shape {tuple(members.shape)}; select M >= 2 members (e.g. number: {{random: 5}})"
        )
        raise ValueError(msg)
    mean = members.mean(dim=dim, keepdim=True)
    variance = torch.square(members - mean).sum(dim=dim) / (n_members - 1)
    log_spread = 0.5 * (torch.log(variance.clamp_min(VARIANCE_FLOOR)) - log_variance_bias(n_members))
    return MemberStatistics(
        log_spread=log_spread, mean=mean.squeeze(dim), n_members=n_members, noise=log_variance_noise(n_members)
    )
