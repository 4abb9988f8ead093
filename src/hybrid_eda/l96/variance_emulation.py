"""The variance emulator inside the Lorenz-96 cycle: M background members in, the N-member std predicted, per point.

    emu = load_l96_variance_emulator("output/variance_emulator_l96/checkpoint/<run>/inference-last.ckpt")
    std = emu(backgrounds)            # [..., M, n] float64 -> [..., n] float64: predictive mean of s_N
    low, high = emu.quantiles(backgrounds, (0.05, 0.95))   # [..., n] each

The checkpoint is an inference checkpoint of :class:`hybrid_eda.models.VarianceEmulator` trained with
``anemoi-training train --config-name=variance_emulator_l96`` on the ``lorenz96`` source's stores (one field,
``x_bg``, on the ``n``-point ring). :func:`hybrid_eda.models.load_variance_predictor` refuses other models and
training checkpoints; this loader adds what the cycle needs on top: one field, the ring size and the number of
members ``M`` the model was trained with (read from the checkpoint's anemoi metadata), each refused with an
error naming both values. Leading axes (experiments of a vectorised cycle, dates) are flattened into one batch
and go through the model in one forward pass (40 points: cheap), in float32 as trained.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybrid_eda.distributions import PredictiveDistribution
from hybrid_eda.errors import UserInputError

LOGGER = logging.getLogger(__name__)

__all__ = ["L96VarianceEmulator", "load_l96_variance_emulator", "trained_members"]


def trained_members(checkpoint: str | os.PathLike) -> int | None:
    """``dataloader.members_per_sample`` of the run that wrote ``checkpoint`` (None if its metadata lacks it)."""
    from anemoi.utils.checkpoints import load_metadata

    try:
        config = load_metadata(str(checkpoint)).get("config", {})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        LOGGER.warning("no anemoi metadata in %s (%s): M not checked", checkpoint, err)
        return None
    value = (config.get("dataloader") or {}).get("members_per_sample")
    return None if value is None else int(value)


@dataclass(frozen=True)
class L96VarianceEmulator:
    """A trained variance emulator as a numpy function of the background members of an L96 EDA.

    Attributes
    ----------
    predictor : hybrid_eda.models.predictor.VariancePredictor
        The loaded model (its ``core`` and ``distribution``).
    n : int
        Ring size (grid points) the model was built for.
    members : int or None
        M the model was trained with (None: unknown, any M >= 2 accepted).
    """

    predictor: Any
    n: int
    members: int | None

    @property
    def family(self) -> str:
        """``"lognormal"`` (or ``"normal"`` for a Gaussian head)."""
        return str(self.predictor.family)

    def _check(self, members: np.ndarray) -> np.ndarray:
        x = np.asarray(members)
        if x.ndim < 2 or x.shape[-1] != self.n:
            raise ValueError(
                f"members must be [..., M, n={self.n}] (background members of the {self.n}-variable ring the "
                f"emulator was trained on), got shape {x.shape}."
            )
        m = x.shape[-2]
        if self.members is not None and m != self.members:
            raise ValueError(
                f"the emulator was trained on M={self.members} members per sample, got M={m}; pass the same "
                f"{self.members} background members each cycle (or train with dataloader.members_per_sample={m})."
            )
        if m < 2:
            raise ValueError(f"M={m} member gives no spread; pass at least 2 (the emulator's M={self.members}).")
        if not np.isfinite(x).all():
            raise ValueError("members hold NaN or inf (a diverged experiment?); retire it before emulating.")
        return x

    def distribution(self, members: np.ndarray) -> PredictiveDistribution:
        """Predictive distribution of ``s_N``, parameters ``[B, 1, n, 1]`` with ``B = prod(leading axes)``.

        Parameters
        ----------
        members : np.ndarray
            ``[..., M, n]`` background members (physical units).
        """
        x = self._check(members)
        batch = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, *x.shape[-2:]), dtype=np.float32))
        with torch.inference_mode():
            out = self.predictor.core(batch[..., None])  # [B, M, n, 1] -> [B, 2, n, 1], physical units
        return self.predictor.distribution.from_tensor(out)

    def __call__(self, members: np.ndarray) -> np.ndarray:
        """Predicted N-member std (the predictive mean of ``s_N``), ``[..., M, n] -> [..., n]`` float64."""
        x = np.asarray(members)
        mean = self.distribution(x).mean()  # [B, 1, n, 1]
        return mean.double().numpy().reshape(*x.shape[:-2], self.n)

    def quantiles(self, members: np.ndarray, levels: Sequence[float]) -> tuple[np.ndarray, ...]:
        """Predictive quantiles of ``s_N`` at ``levels`` (each in (0, 1)), one ``[..., n]`` float64 array each."""
        if any(not 0.0 < float(q) < 1.0 for q in levels):
            raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {list(levels)}.")
        x = np.asarray(members)
        dist = self.distribution(x)
        shape = (*x.shape[:-2], self.n)
        return tuple(dist.quantile(float(q)).double().numpy().reshape(shape) for q in levels)


def load_l96_variance_emulator(
    checkpoint: str | os.PathLike, *, n: int | None = None, members: int | None = None
) -> L96VarianceEmulator:
    """Load an L96 variance emulator for the cycle.

    Parameters
    ----------
    checkpoint : path
        ``inference-last.ckpt`` of ``anemoi-training train --config-name=variance_emulator_l96``.
    n : int, optional
        Ring size the caller runs; refused if the model was built for another.
    members : int, optional
        M the caller will pass; refused if the model was trained with another.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``checkpoint``.
    ValueError
        If it is not an inference checkpoint of the variance emulator, has more than one field (a global EDA
        model), or was built for another ring size or M.
    """
    from hybrid_eda.models import load_variance_predictor

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train one with `anemoi-training train --config-name=variance_emulator_l96` "
            "and pass output/variance_emulator_l96/checkpoint/<run>/inference-last.ckpt."
        )
    predictor = load_variance_predictor(path)
    if len(predictor.variables) != 1:
        raise UserInputError(
            f"{path} emulates {len(predictor.variables)} fields ({', '.join(predictor.variables[:4])}, ...), not "
            "the single L96 state variable; give a checkpoint trained with --config-name=variance_emulator_l96."
        )
    grid = int(predictor.core.n_grid)
    if n is not None and int(n) != grid:
        raise UserInputError(
            f"{path} was built for a ring of {grid} points, the cycle runs n={n}; train on an EDA of that size."
        )
    trained = trained_members(path)
    if members is not None and trained is not None and int(members) != trained:
        raise UserInputError(
            f"{path} was trained on M={trained} members per sample, the cycle passes M={members}; use M={trained} "
            f"or train with dataloader.members_per_sample={members}."
        )
    LOGGER.info("L96 variance emulator %s: n=%d, M=%s, %s", path, grid, trained, predictor.family)
    return L96VarianceEmulator(predictor=predictor, n=grid, members=trained if trained is not None else members)
