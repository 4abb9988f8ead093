"""Ensemble-space resolvents: learned matrix functions of the background Gram matrix applied to the members' anomalies.

With all points observed and ``R = r I`` the symmetric ETKF's analysis anomalies are ``X T`` with
``T = (I + G / ((N - 1) r))^(-1/2)`` and its mean increment is ``X (I + G / ((N - 1) r))^-1 X^T d / ((N - 1) r)``,
``G = X^T X`` the Gram matrix of all N background anomalies and ``d = y - xb`` the innovation; the EnKF gain is
``K v = X (X^T X + (N - 1) r I)^-1 X^T v``. These are resolvents and matrix functions of ``G``, which one linear
attention step (:mod:`hybrid_eda.layers.particle_attention`) cannot form. ``(1 + x)^(-1/2)`` is a Stieltjes function,
so a few resolvents with positive weights approximate it; this layer learns such a sum.

Per particle ensemble (one replica of the member generator: its ``m <= k`` particles together with the ``N_s``
guides, ``M = k + N_s`` members in all), with ``F_j[grid, var]`` member ``j``'s background anomaly from the mean of
all backgrounds in climatological units (``(b_j - xb) / variable_scale``; zeros for guides without backgrounds)::

    P_t = [ mean_p sum_v w_tv F_i(p, v) F_j(p, v) ]_ij          (term t = 1 .. T, w_tv = exp(log_w_tv) > 0: PSD)
    R_t = (I + P_t)^-1                                             ([M, M], torch.linalg.solve)
    u_tq = R_t e_q,   (e_q)_j = mean_p sum_v w_tv F_j(p, v) r_q(p, v)
    out_i(p, v) = sum_t sum_j [ (R_t)_ji W^s(j)_tcv + sum_q (u_tq)_j W'^s(j)_tqcv ] V_jc(p, v)

with ``r_0 = (y - xb) / variable_scale`` on the observed points (zeros elsewhere or without observations),
``r_1 = delta / variable_scale`` (the guides' mean increment), ``s(j)`` whether source ``j`` is a particle or a guide,
and the values ``V_j`` as in the particle attention: ``((phi_j - c(t)) / sb, (b_j - xb) / sb)`` for particles and
``((a_l - mean a) / sb, (g^b_l - xb) / sb)`` for guides. The first sum is a transform of the whole ensemble (the
ETKF's ``T``: with the background-anomaly channel, ``sum_j X_j T_ji``); the second is the same for every member of
the ensemble, a mean increment in the span of the anomalies (the ETKF's ``X R X^T d``). ``P_t`` and ``u`` depend only
on the backgrounds and observations, so they are computed once per generation (:meth:`EnsembleResolvent.prepare`),
``T`` tiny ``M x M`` solves per case and replica; the per-step cost is one ensemble-space contraction like the
attention's.

The mixing weights ``W, W'`` start at zero, so an untrained layer adds exactly nothing (the generator's untrained
closed form holds). Permuting the particles of an ensemble permutes ``out`` the same way; permuting the guides leaves
it unchanged; a partial replica's missing particles are decoupled (zero rows of ``P``). Pooling is over the whole grid
(the unlocalised filters); a localised version would replace the grid mean by a kernel-weighted neighbour sum.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

#: Value channels per source (particle: anomaly at t, background anomaly; guide: analysis and background anomaly).
N_VALUES = 2
#: Right-hand sides of the mean term: the innovation and the guides' mean increment.
N_RHS = 2


@dataclasses.dataclass(frozen=True)
class ResolventSet:
    """What :meth:`EnsembleResolvent.prepare` computes once per generation.

    Attributes
    ----------
    particle : torch.Tensor
        ``[b, R, k, k, 2, var]``: weight of particle source ``j`` on target ``i`` per value channel and variable
        (``[..., j, i, c, v]``), the transform and the mean term together.
    guide : torch.Tensor
        ``[b, R, N_s, k, 2, var]``: the same for guide sources.
    """

    particle: torch.Tensor
    guide: torch.Tensor


def replica_masks(k: int, n_members: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[R, k]``: 1 where replica ``r`` holds a member starting from background ``s`` (members ``r k + s < n``)."""
    n_replicas = -(-n_members // k)
    index = torch.arange(n_replicas, device=device)[:, None] * k + torch.arange(k, device=device)[None, :]
    return (index < n_members).to(dtype)


def log_spaced_gains(terms: int, n_variables: int, gains: tuple[float, float]) -> torch.Tensor:
    """``[T, var]`` initial log gains ``log w_tv``: log-spaced from ``gains[0]`` to ``gains[1]`` over the terms (their
    geometric mean for one term), the same for every variable."""
    lo, hi = math.log(gains[0]), math.log(gains[1])
    start = torch.linspace(lo, hi, terms) if terms > 1 else torch.tensor([0.5 * (lo + hi)])
    return start[:, None].repeat(1, n_variables)


def replica_resolvents(
    particle_features: torch.Tensor,
    guide_features: torch.Tensor,
    log_gain: torch.Tensor,
    masks: torch.Tensor,
    observed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resolvents ``(I + P_t)^-1`` of every replica's gained Gram matrix over particles and guides.

    Parameters
    ----------
    particle_features, guide_features : torch.Tensor
        ``[b, k, grid, var]`` and ``[b, N_s, grid, var]``: the starts' and the guides' ``F_j``.
    log_gain : torch.Tensor
        ``[T, var]`` the terms' log gains ``log w_tv``.
    masks : torch.Tensor
        ``[R, k]`` from :func:`replica_masks`.
    observed : torch.Tensor, optional
        ``[b, grid, var]`` 1 where observed, 0 elsewhere: the Gram matrix over the observed points only.

    Returns
    -------
    features : ``[b, M, grid, var]`` particles then guides (``M = k + N_s``);
    weighted : ``[b, T, M, grid, var]`` the features times ``w_tv / grid`` (and ``observed``);
    resolvent : ``[b, R, T, M, M]`` symmetric;
    mask : ``[R, M]`` the members of each replica (every guide in every replica).
    """
    n_grid = particle_features.shape[2]
    features = torch.cat([particle_features, guide_features], dim=1)  # [b, M, grid, var]
    gain = log_gain.exp() / n_grid  # [T, var]
    weighted = torch.einsum("bmpv,tv->btmpv", features, gain)
    if observed is not None:
        weighted = weighted * observed[:, None, None]
    gram = torch.einsum("btmpv,bnpv->btmn", weighted, features)  # [b, T, M, M]
    mask = torch.cat([masks, masks.new_ones(masks.shape[0], guide_features.shape[1])], dim=1)  # [R, M]
    gram = gram[:, None] * (mask[:, :, None] * mask[:, None, :])[None, :, None]  # [b, R, T, M, M]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    resolvent = torch.linalg.solve(eye + gram, eye.expand_as(gram))  # [b, R, T, M, M] symmetric
    return features, weighted, resolvent, mask


class EnsembleResolvent(nn.Module):
    """Learned sums of resolvents of the background Gram matrix over particles and guides (module docstring).

    Parameters
    ----------
    n_variables : int
        Variables per point, ``var``.
    terms : int
        Resolvent terms ``T``.
    gains : tuple of float
        Smallest and largest initial Gram gain ``w_tv`` (log-spaced over the terms; learned).
    """

    def __init__(self, n_variables: int, *, terms: int = 4, gains: tuple[float, float] = (1.0, 1000.0)) -> None:
        super().__init__()
        self.terms = int(terms)
        self.log_gain = nn.Parameter(log_spaced_gains(self.terms, n_variables, gains))
        # [term, source (particle, guide), channel, var] and [term, rhs, source, channel, var]
        self.transform_mixing = nn.Parameter(torch.zeros(self.terms, 2, N_VALUES, n_variables))
        self.mean_mixing = nn.Parameter(torch.zeros(self.terms, N_RHS, 2, N_VALUES, n_variables))

    def prepare(
        self,
        particle_features: torch.Tensor,
        guide_features: torch.Tensor,
        rhs: torch.Tensor,
        masks: torch.Tensor,
    ) -> ResolventSet:
        """Resolvents and mean coefficients of every replica.

        Parameters
        ----------
        particle_features : torch.Tensor
            ``[b, k, grid, var]`` the starts' ``F_j`` (background anomalies in climatological units).
        guide_features : torch.Tensor
            ``[b, N_s, grid, var]`` the guides' ``F_l`` (zeros without guide backgrounds).
        rhs : torch.Tensor
            ``[b, 2, grid, var]``: ``r_0`` (innovation, zeros where unobserved) and ``r_1`` (guides' mean increment).
        masks : torch.Tensor
            ``[R, k]`` from :func:`replica_masks`.
        """
        k, n_guides = particle_features.shape[1], guide_features.shape[1]
        _, weighted, resolvent, mask = replica_resolvents(particle_features, guide_features, self.log_gain, masks)
        projected = torch.einsum("btmpv,bqpv->btqm", weighted, rhs)  # [b, T, 2, M]
        mean = torch.einsum("brtmn,btqn->brtqm", resolvent, projected) * mask[None, :, None, None, :]
        source = torch.cat([resolvent.new_zeros(k, dtype=torch.long), resolvent.new_ones(n_guides, dtype=torch.long)])
        transform_w = self.transform_mixing.index_select(1, source)  # [T, M, c, var]
        mean_w = self.mean_mixing.index_select(2, source)  # [T, q, M, c, var]
        weights = torch.einsum("brtji,tjcv->brjicv", resolvent[..., :k], transform_w)  # [b, R, M, k, c, var]
        weights = weights + torch.einsum("brtqj,tqjcv->brjcv", mean, mean_w)[:, :, :, None]
        return ResolventSet(weights[:, :, :k], weights[:, :, k:])

    def forward(
        self, values: torch.Tensor, guide_values: torch.Tensor, prepared: ResolventSet, n_members: int
    ) -> torch.Tensor:
        """Drift term ``out[b, n, grid, var]`` (unit-free, in background-spread units).

        Parameters
        ----------
        values : torch.Tensor
            ``[b, n, grid, var, 2]`` particle values (member ``j`` starts from background ``j mod k`` and belongs to
            replica ``j // k``).
        guide_values : torch.Tensor
            ``[b, N_s, grid, var, 2]`` guide values.
        prepared : ResolventSet
        n_members : int
            ``n``.
        """
        b, n = values.shape[:2]
        n_replicas, k = prepared.particle.shape[1], prepared.particle.shape[2]
        pad = n_replicas * k - n
        if pad:
            values = torch.cat([values, values.new_zeros(b, pad, *values.shape[2:])], dim=1)
        values = values.unflatten(1, (n_replicas, k))  # [b, R, k, grid, var, c]
        out = torch.einsum("brjicv,brjpvc->bripv", prepared.particle, values)
        out = out + torch.einsum("brlicv,blpvc->bripv", prepared.guide, guide_values)
        return out.flatten(1, 2)[:, :n_members]
