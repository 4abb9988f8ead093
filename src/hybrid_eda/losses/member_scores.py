"""Scores of generated members against the analyses of the members they stand for (anemoi's losses, regrouped).

The member generator (:class:`hybrid_eda.models.MemberGenerator`) takes the first N_s members of a sample as guides
and generates R replicas from the background of each of the other ``k = N - N_s`` members (the targets; the loader
draws the member order, :mod:`hybrid_eda.data.member_split`). Its output is ``[batch, time, k R, grid, var]``,
target-major (the R replicas of target 0, then of target 1, ...); anemoi hands the loss the whole sample's
analyses ``[batch, time, N, grid, var]``. :class:`GeneratedMemberScore` pairs them up: the R replicas of target
``j`` form one ensemble scored against analysis ``N_s + j`` by any anemoi ensemble loss (``CRPS`` with ``alpha``,
``EnergyScoreLoss``), over a batch of ``batch x k`` cases; the guides' analyses are never scored (they were
inputs). ``k`` is read from the shapes (``k = E / R``), so N_s may change from batch to batch::

    training:
      training_loss:
        datasets:
          eda:
            _target_: hybrid_eda.losses.GeneratedMemberScore
            replicas: ${model.model.replicas}
            loss: {_target_: anemoi.training.losses.kcrps.CRPS, alpha: 0.95}
            scalers: [node_weights]
"""

from __future__ import annotations

from typing import Any

import torch
from anemoi.training.losses.base import BaseLoss, BaseLossWrapper
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

__all__ = ["GeneratedMemberScore", "pair_generated_with_targets"]


def pair_generated_with_targets(
    pred: torch.Tensor, target: torch.Tensor, replicas: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred[b, t, k R, grid, v]``, ``target[b, t, N, grid, v]`` -> ``[b k, t, R, grid, v]``, ``[b k, t, 1, grid, v]``.

    The targets are the last ``k`` members of ``target`` (the first ``N - k`` are the guides).
    """
    if pred.ndim != 5 or target.ndim != 5:
        msg = f"expected [batch, time, ens, grid, var], got pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        raise ValueError(msg)
    b, t, e = pred.shape[:3]
    if e % replicas:
        msg = f"{e} generated members are not a whole number of replicas ({replicas}) per target member"
        raise ValueError(msg)
    k, n = e // replicas, target.shape[2]
    if not 1 <= k < n - 1:
        msg = (
            f"{k} targets of {n} members leave {n - k} guides; the generator needs >= 2 guides and >= 1 target "
            "(does loss.replicas match model.model.replicas?)"
        )
        raise ValueError(msg)
    grouped = pred.reshape(b, t, k, replicas, *pred.shape[3:]).transpose(1, 2)  # [b, k, t, R, grid, v]
    truth = target[:, :, n - k :].transpose(1, 2).unsqueeze(3)  # [b, k, t, 1, grid, v]
    return grouped.reshape(b * k, t, replicas, *pred.shape[3:]), truth.reshape(b * k, t, 1, *target.shape[3:])


class GeneratedMemberScore(BaseLossWrapper):
    """An anemoi ensemble loss applied to each target member's R generated replicas (see the module docstring).

    Parameters
    ----------
    loss : dict or BaseLoss
        The ensemble loss (``{_target_: anemoi.training.losses.kcrps.CRPS, alpha: 1.0}``, ``EnergyScoreLoss``, ...).
    replicas : int
        R, generated members per target member (``model.model.replicas``; >= 2: anemoi's ensemble losses need two).
    """

    def __init__(self, loss: dict | DictConfig | BaseLoss, replicas: int, **kwargs: Any) -> None:
        if not isinstance(loss, BaseLoss):
            loss = OmegaConf.to_container(loss, resolve=True) if isinstance(loss, DictConfig) else dict(loss)
            loss = instantiate(loss, _recursive_=False)
        super().__init__(loss, **kwargs)
        if int(replicas) < 2:
            msg = f"replicas must be >= 2 (an ensemble score needs two members per target), got {replicas}"
            raise ValueError(msg)
        self.replicas = int(replicas)

    @property
    def name(self) -> str:
        return f"generated_{self.loss.name}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor, squash: bool = True, **kwargs: Any) -> torch.Tensor:
        """Score ``pred[b, t, k R, grid, v]`` against the last ``k`` members of ``target[b, t, N, grid, v]``."""
        kwargs.pop("pred_layout", None)
        kwargs.pop("target_layout", None)
        grouped, truth = pair_generated_with_targets(pred, target, self.replicas)
        return self.loss(grouped, truth, squash, **kwargs)
