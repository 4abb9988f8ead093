"""Output heads: from a log-spread estimate and a raw width to a predictive distribution of ``s_N``.

The network predicts ``c = log s_N`` up to noise (a correction of the members' debiased ``log s_M``) and an
unconstrained ``r`` for the width; a head turns them into the tensor form of a
:class:`~hybrid_eda.distributions.PredictiveDistribution`, ``[..., 2, grid, var]``, in the target's normalised
units ``y = s_N * target_mul`` (anemoi's ``std``/``none`` normalisers are multiplicative). Both heads are
positive by construction and stable for any spread: the magnitude lives in ``c`` (log space), the width is
relative.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch.nn import functional

from hybrid_eda.distributions import Gaussian, LogNormal


def inverse_softplus(value: float) -> float:
    """``r`` with ``softplus(r) = value``."""
    return value + math.log(-math.expm1(-value))


class DistributionHead(ABC):
    """Maps ``(c, r)`` to a distribution's tensor form; chosen in the model config by ``_target_``."""

    def __init__(self, min_width: float = 1e-4) -> None:
        self.min_width = min_width

    def raw_width(self, width: float) -> float:
        """The ``r`` at which the relative width is ``width`` (to initialise the last layer's bias)."""
        return inverse_softplus(max(width - self.min_width, 1e-6))

    def width(self, raw: torch.Tensor) -> torch.Tensor:
        return functional.softplus(raw) + self.min_width

    @abstractmethod
    def __call__(self, log_centre: torch.Tensor, raw: torch.Tensor, log_target_mul: torch.Tensor) -> torch.Tensor:
        """``[..., 2, grid, var]`` from ``log_centre, raw [..., 1, grid, var]`` and ``log(target_mul) [var]``."""


class LogNormalHead(DistributionHead):
    """``log s_N ~ N(mu, sigma^2)`` with ``mu = c + log(target_mul)``, ``sigma = softplus(r) + min_width``."""

    distribution = LogNormal

    def __call__(self, log_centre: torch.Tensor, raw: torch.Tensor, log_target_mul: torch.Tensor) -> torch.Tensor:
        return LogNormal(log_centre + log_target_mul, self.width(raw)).to_tensor()


class GaussianHead(DistributionHead):
    """``s_N ~ N(loc, scale^2)`` with ``loc = exp(c) target_mul``, ``scale = loc (softplus(r) + min_width)``."""

    distribution = Gaussian

    def __call__(self, log_centre: torch.Tensor, raw: torch.Tensor, log_target_mul: torch.Tensor) -> torch.Tensor:
        loc = torch.exp(log_centre + log_target_mul)
        return Gaussian(loc, loc * self.width(raw)).to_tensor()
