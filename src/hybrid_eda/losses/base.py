"""Shared scaling and reduction for scores of a predictive distribution, in anemoi's ``BaseLoss`` conventions.

A subclass names its distribution and writes one pointwise kernel, ``score(dist, target)``; this module checks the
shapes, masks NaN targets, applies anemoi's scalers (node weights, variable and level weights, ...) to the
pointwise score and reduces it with ``BaseLoss.reduce`` (mean over variables if ``squash``, sum over grid and
time, mean over batch), as anemoi's ``FunctionalLoss`` and ``CRPS`` do.

Shapes (anemoi's ``TensorDim`` order)::

    pred    [batch, time, 2, grid, var]   the distribution's parameters on the ensemble axis (see
                                          hybrid_eda.distributions), as the model returns them
    target  [batch, time, 1, grid, var]   the observed quantity (for the variance emulator: s_N)
    score   [batch, time, 1, grid, var]   pointwise, then scaled and reduced

Why the ensemble axis and not ``[..., 2 * var]``: everything in anemoi that indexes variables (``data_indices``,
``LossVariableMapper``'s ``pred[..., indices]``, validation ``scaler_indices=(..., indices)``, variable and
level scalers) keeps working unchanged when the variable axis keeps its meaning; the pointwise score has the
target's shape, so every scaler multiplies it exactly as it multiplies a squared error.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from contextlib import nullcontext
from typing import ClassVar

import torch
from anemoi.training.losses.base import BaseLoss, Squash_mode
from anemoi.training.utils.enums import TensorDim
from torch.distributed.distributed_c10d import ProcessGroup

from hybrid_eda.distributions import PARAMETER_AXIS, PredictiveDistribution

LOGGER = logging.getLogger(__name__)

N_DIMS = len(TensorDim)


class DistributionLoss(BaseLoss):
    """Scaled, reduced pointwise score of a predictive distribution against a target (abstract)."""

    distribution: ClassVar[type[PredictiveDistribution]]

    def __init__(self, ignore_nans: bool = False, no_autocast: bool = True, **kwargs) -> None:  # noqa: ARG002
        """Score of the distribution whose parameters ``pred`` carries.

        Parameters
        ----------
        ignore_nans : bool, optional
            Score only the points where the target is not NaN (the others weigh 0), by default False.
        no_autocast : bool, optional
            Compute the score in at least float32 with autocast off (logs and ``z^2`` in bfloat16 are too coarse
            for tiny spreads), by default True.
        """
        super().__init__(ignore_nans=ignore_nans)
        self.no_autocast = no_autocast

    @abstractmethod
    def score(self, dist: PredictiveDistribution, target: torch.Tensor) -> torch.Tensor:
        """Pointwise score ``[batch, time, 1, grid, var]`` of ``dist`` at ``target`` (lower is better)."""

    def check_target(self, target: torch.Tensor) -> None:  # noqa: B027 (optional hook)
        """Hook for targets outside the distribution's support; nothing to check by default."""

    def _check_shapes(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        name = type(self).__name__
        names = ", ".join(self.distribution.parameter_names())
        if pred.ndim != N_DIMS or target.ndim != N_DIMS:
            msg = (
                f"{name} expects anemoi's 5-D tensors [batch, time, ens, grid, var], got pred "
                f"{tuple(pred.shape)} and target {tuple(target.shape)}"
            )
            raise ValueError(msg)
        n_params = self.distribution.n_parameters
        if pred.shape[PARAMETER_AXIS] != n_params:
            msg = (
                f"{name}: pred must carry the {n_params} parameters ({names}) of a "
                f"{self.distribution.__name__} on the ensemble axis, [batch, time, {n_params}, grid, var]; got "
                f"{tuple(pred.shape)}. Have the model return `{self.distribution.__name__}.from_raw(raw).to_tensor()`"
            )
            raise ValueError(msg)
        if target.shape[PARAMETER_AXIS] != 1:
            msg = (
                f"{name}: the target must have an ensemble axis of size 1, [batch, time, 1, grid, var]; got "
                f"{tuple(target.shape)} (a member store was given as the target? use the N-member statistic)"
            )
            raise ValueError(msg)
        pred_rest = (*pred.shape[:PARAMETER_AXIS], *pred.shape[PARAMETER_AXIS + 1 :])
        target_rest = (*target.shape[:PARAMETER_AXIS], *target.shape[PARAMETER_AXIS + 1 :])
        if pred_rest != target_rest:
            msg = (
                f"{name}: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in batch, time, grid "
                "or variable size"
            )
            raise ValueError(msg)

    def pointwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unscaled score ``[batch, time, 1, grid, var]`` (0 where an ignored target is NaN)."""
        self._check_shapes(pred, target)
        context = torch.amp.autocast(device_type=pred.device.type, enabled=False) if self.no_autocast else nullcontext()
        with context:
            if self.no_autocast and pred.dtype in (torch.float16, torch.bfloat16):
                pred = pred.float()
            target = target.to(pred.dtype)
            dist = self.distribution.from_tensor(pred)
            nan_mask = torch.isnan(target) if self.ignore_nans else None
            if nan_mask is not None:
                # Any value in the support keeps the masked branch finite, so torch.where's gradient stays clean.
                target = torch.where(nan_mask, dist.mean().detach(), target)
            self.check_target(target)
            out = self.score(dist, target)
            if nan_mask is not None:
                out = torch.where(nan_mask, torch.zeros_like(out), out)
        return out

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        squash: bool = True,
        *,
        scaler_indices: tuple[int, ...] | None = None,
        without_scalers: list[str] | list[int] | None = None,
        grid_shard_slice: slice | None = None,
        group: ProcessGroup | None = None,
        squash_mode: Squash_mode = "avg",
        **_kwargs,
    ) -> torch.Tensor:
        """Scaled score, reduced as anemoi reduces its losses.

        Parameters
        ----------
        pred : torch.Tensor
            Distribution parameters, ``[batch, time, 2, grid, var]``.
        target : torch.Tensor
            Target, ``[batch, time, 1, grid, var]``.
        squash : bool, optional
            Reduce the variable axis too (``squash_mode``), by default True; else one value per variable.
        scaler_indices : tuple[int, ...], optional
            Indices to subset the scaled score with (validation metrics pass ``(..., variable_indices)``).
        without_scalers : list[str] | list[int] | None, optional
            Scalers to leave out, by name or dimension.
        grid_shard_slice : slice, optional
            This rank's slice of the grid if the tensors come sharded.
        group : ProcessGroup, optional
            Group to reduce over when sharded.
        squash_mode : {"avg", "sum"}, optional
            Reduction of the variable axis, by default "avg".

        Returns
        -------
        torch.Tensor
            Scalar, or ``[var]`` (or ``[len(indices)]``) if not ``squash``.
        """
        is_sharded = grid_shard_slice is not None
        out = self.pointwise(pred, target)
        out = self.scale(out, scaler_indices, without_scalers=without_scalers, grid_shard_slice=grid_shard_slice)
        return self.reduce(out, squash=squash, squash_mode=squash_mode, group=group if is_sharded else None)
