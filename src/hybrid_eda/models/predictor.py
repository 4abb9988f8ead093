"""Load a trained variance emulator for use outside anemoi: M members in physical units -> distribution of s_N.

    predictor = load_variance_predictor("output/variance_emulator_synthetic/checkpoint/<run>/inference-last.ckpt")
    dist = predictor(members)        # members [date, M, grid, field] (numpy or torch), fields predictor.variables
    dist.mean(), dist.quantile(0.9)  # a hybrid_eda.distributions.LogNormal (or Gaussian), [date, 1, grid, field]

The contract of :mod:`hybrid_eda.evaluation.emulator`: ``variables`` names the member fields the model reads
(``t_137``, ...), ``family`` is ``"lognormal"`` or ``"normal"``, and the distribution is in physical units
whatever normaliser the training used.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from hybrid_eda.distributions import PredictiveDistribution
from hybrid_eda.layers.heads import GaussianHead
from hybrid_eda.models.checkpoints import load_inference_model
from hybrid_eda.models.chunked_inference import chunked_forward

LOGGER = logging.getLogger(__name__)

#: Dates per forward pass (bounds memory: tokens are dates x grid x fields x latent; 1 at N80 x 137 x 6).
DATES_PER_PASS = 1


class VariancePredictor:
    """A trained :class:`~hybrid_eda.models.VarianceEmulator` as a plain function of physical members."""

    def __init__(self, emulator: Any) -> None:
        self.core = emulator.core.eval()
        self.variables: tuple[str, ...] = tuple(emulator.input_names)
        self.target_variables: tuple[str, ...] = tuple(emulator.target_names)
        self.family = "normal" if isinstance(self.core.head, GaussianHead) else "lognormal"
        self.distribution = self.core.head.distribution

    def __call__(self, members: Any) -> PredictiveDistribution:
        """Distribution of s_N, parameters ``[date, 1, grid, field]``, from ``members [date, M, grid, field]``."""
        x = torch.as_tensor(np.asarray(members, dtype=np.float32) if not torch.is_tensor(members) else members)
        if x.ndim != 4 or x.shape[-1] != len(self.variables):
            msg = (
                f"members must be [date, M, grid, field={len(self.variables)}] with the fields "
                f"{', '.join(self.variables[:3])}, ...; got shape {tuple(x.shape)}"
            )
            raise ValueError(msg)
        with (
            torch.inference_mode()
        ):  # the core's function computed in place (models.chunked_inference): ~3x faster on CPUs
            batches = [x[i : i + DATES_PER_PASS].float() for i in range(0, x.shape[0], DATES_PER_PASS)]
            parts = [chunked_forward(self.core, batch) for batch in batches]
        return self.distribution.from_tensor(torch.cat(parts))  # physical units: no target normaliser


def load_variance_predictor(checkpoint: str | os.PathLike) -> VariancePredictor:
    """The :class:`VariancePredictor` of an anemoi inference checkpoint (``inference-*.ckpt``).

    Raises
    ------
    UserInputError
        No such file, a training checkpoint (``last.ckpt``), or the checkpoint of another model (a ``ValueError``;
        see :func:`~hybrid_eda.models.checkpoints.load_inference_model`).
    """
    from hybrid_eda.models.variance_emulator import VarianceEmulator

    hint = (
        "a variance emulator run's checkpoint/<run-id>/inference-last.ckpt (anemoi-training train "
        "--config-name=variance_emulator_*)"
    )
    return VariancePredictor(load_inference_model(checkpoint, VarianceEmulator, "variance emulator", hint))
