"""Ensemble-space noise: each member's own Brownian increments projected into the span of the background anomalies.

A stochastic (perturbed-observation) EnKF member's analysis anomaly is ``(I - K) xb'_j + K e_j``: besides a
deterministic transform of the backgrounds (:mod:`hybrid_eda.layers.ensemble_resolvent`) it carries the member's own
observation perturbation ``e_j ~ N(0, r I)`` through the gain, noise in the span of the background anomalies with
covariance ``K R K^T``. An elementwise diffusion on the grid cannot put noise there; this layer can. With
``F_j[grid, var]`` member ``j``'s background anomaly from the mean of all backgrounds in climatological units (as in
the resolvent layer; particles and guides of one replica, ``M = k + N_s`` sources, zeros for absent ones), ``H`` the
observed flag per point and variable (1 everywhere without observations) and ``dW_i`` member ``i``'s Brownian
increment of one flow step (the same seeded draw the elementwise diffusion uses)::

    P_t = [ sum_pv w_tv H F_i F_j / grid ]_ij,   R_t = (I + P_t)^-1                    (term t = 1 .. T)
    e_ti = [ sum_pv w_tv H F_m dW_i / grid ]_m                                          ([M] per member)
    a_i(p, v) = variable_scale_v * sum_t s_tv sum_m F_m(p, v) (R_t e_ti)_m               (the step's increment)

and, with ``centred`` (the default), ``a_i`` minus its mean over the members of its replica, as the EnKF centres
its perturbations over the members (``sum_i eps_i = 0``, DAPPER's ``PertObs``; :class:`~hybrid_eda.l96.filters.EnKF`):
then the noise leaves the generated members' mean alone, as the centred perturbations leave the Kalman mean (a
replica of one member gets no noise, as an EnKF of one member). ``w_tv = exp(log_w_tv) > 0`` are learned gains
(log-spaced initially, as the resolvent layer's) and ``s_tv`` learned scales. ``a_i`` does not depend on the state,
so it is additive noise (Stratonovich = Ito) and the flow adds it once
per step (:func:`hybrid_eda.flows.integrate`'s ``additive``). Over the flow's unit time ``sum_k dW_ik ~ N(0, I)``,
so with one variable, one term, every point observed and ``c = grid / w`` the noise is
``s F (F^T F + c I)^-1 F^T xi``: the EnKF's ``K e_j`` in distribution when ``c = (N - 1) r / variable_scale^2`` and
``s = sqrt(r) / variable_scale`` (``K = F (F^T F + c I)^-1 F^T`` in climatological units); its covariance
``s^2 F (G + c I)^-1 G (G + c I)^-1 F^T`` lies in ``span(F)`` and has the eigenvalues
``s^2 lambda^2 / (lambda + c)^2`` there (``lambda`` those of ``G = F^T F``). With partial observations ``H`` the Gram
matrix and projection run over the observed points, as the EnKF's ``H X``.

Permuting the particles (with their increments) permutes the noise; permuting the guides leaves it unchanged. The
CRPS gradient with respect to a zero scale vanishes in expectation (the loss is even in ``s``), so the scales start
small but positive (``init``).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hybrid_eda.layers.ensemble_resolvent import log_spaced_gains, replica_resolvents
from hybrid_eda.layers.member_mixing import group_mean


@dataclasses.dataclass(frozen=True)
class NoiseSet:
    """What :meth:`EnsembleNoise.prepare` computes once per generation.

    Attributes
    ----------
    features : torch.Tensor
        ``[b, M, grid, var]`` the sources' ``F_j`` (particles then guides).
    weighted : torch.Tensor
        ``[b, T, M, grid, var]``: ``w_tv H F_j / grid``.
    resolvent : torch.Tensor
        ``[b, R, T, M, M]``: ``R_t`` per replica (absent particles decoupled).
    mask : torch.Tensor
        ``[R, M]``: 1 where replica ``r`` holds source ``j``.
    """

    features: torch.Tensor
    weighted: torch.Tensor
    resolvent: torch.Tensor
    mask: torch.Tensor


class EnsembleNoise(nn.Module):
    """Learned ensemble-space additive noise (module docstring).

    Parameters
    ----------
    n_variables : int
        Variables per point, ``var``.
    terms : int
        Resolvent terms ``T``.
    gains : tuple of float
        Smallest and largest initial gain ``w_tv`` (log-spaced over the terms; learned).
    init : float
        Initial scale ``s_tv`` of every term (0 gives a layer that adds exactly nothing, but whose scale a CRPS
        gradient does not move in expectation).
    centred : bool
        Remove each replica's mean noise (module docstring).
    """

    def __init__(
        self,
        n_variables: int,
        *,
        terms: int = 4,
        gains: tuple[float, float] = (1.0, 1000.0),
        init: float = 0.02,
        centred: bool = True,
    ) -> None:
        super().__init__()
        self.terms = int(terms)
        self.centred = bool(centred)
        self.log_gain = nn.Parameter(log_spaced_gains(self.terms, n_variables, gains))
        self.scale = nn.Parameter(torch.full((self.terms, n_variables), float(init)))

    def prepare(
        self,
        particle_features: torch.Tensor,
        guide_features: torch.Tensor,
        observed: torch.Tensor | None,
        masks: torch.Tensor,
    ) -> NoiseSet:
        """Resolvents of every replica.

        Parameters
        ----------
        particle_features : torch.Tensor
            ``[b, k, grid, var]`` the starts' ``F_j``.
        guide_features : torch.Tensor
            ``[b, N_s, grid, var]`` the guides' ``F_l`` (zeros without guide backgrounds).
        observed : torch.Tensor or None
            ``[b, grid, var]`` 1 where observed, 0 elsewhere; None: everywhere.
        masks : torch.Tensor
            ``[R, k]`` from :func:`~hybrid_eda.layers.ensemble_resolvent.replica_masks`.
        """
        return NoiseSet(*replica_resolvents(particle_features, guide_features, self.log_gain, masks, observed))

    def forward(
        self, increments: torch.Tensor, prepared: NoiseSet, replica: torch.Tensor, n_replicas: int
    ) -> torch.Tensor:
        """Noise increments ``[steps, b, n, grid, var]`` in climatological units (multiply by ``variable_scale``).

        Parameters
        ----------
        increments : torch.Tensor
            ``[steps, b, n, grid, var]`` the members' Brownian increments.
        prepared : NoiseSet
        replica : torch.Tensor
            ``[n]`` long: each member's replica.
        n_replicas : int
            ``R``.
        """
        mask = prepared.mask.index_select(0, replica)  # [n, M]
        projected = torch.einsum("btmpv,sbnpv->sbtnm", prepared.weighted, increments) * mask
        resolvent = prepared.resolvent.index_select(1, replica)  # [b, n, T, M, M]
        coefficients = torch.einsum("bntml,sbtnl->sbtnm", resolvent, projected) * mask
        scaled = torch.einsum("sbtnm,tv->sbnmv", coefficients, self.scale)
        noise = torch.einsum("sbnmv,bmpv->sbnpv", scaled, prepared.features)
        if not getattr(self, "centred", False):  # modules pickled before the option were not centred
            return noise
        return noise - group_mean(noise, replica, n_replicas, dim=2)
