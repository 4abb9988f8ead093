"""Gaussian predictive distribution ``N(loc, scale^2)``."""

from __future__ import annotations

import dataclasses
import math
from typing import Self

import torch

from hybrid_eda.distributions.base import (
    INV_SQRT_PI,
    LOG_SQRT_2PI,
    SQRT_HALF,
    PredictiveDistribution,
    softplus_floor,
    split_parameters,
)


@dataclasses.dataclass(frozen=True, eq=False)
class Gaussian(PredictiveDistribution):
    """``X ~ N(loc, scale^2)``, elementwise; ``loc`` and ``scale > 0`` broadcast, e.g. ``[b, t, 1, grid, var]``.

    Everything is written with ``z = (x - loc) / scale`` and ``log(scale)``, never ``scale^2`` alone, so tiny
    scales (1e-8 in float32) neither underflow nor lose precision.
    """

    loc: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def from_raw(cls, raw: torch.Tensor, *, min_scale: float = 1e-12) -> Self:
        """``loc = raw[..., 0:1, :, :]``, ``scale = softplus(raw[..., 1:2, :, :]) + min_scale``.

        ``min_scale`` is in the units of the predicted quantity; the default keeps ``z^2`` finite in float32 for
        errors up to ~1e7 while sitting far below any spread worth predicting.
        """
        loc, raw_scale = split_parameters(raw, cls.n_parameters, cls.parameter_names())
        return cls(loc, softplus_floor(raw_scale, min_scale))

    def _z(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.loc) / self.scale

    def mean(self) -> torch.Tensor:
        return torch.broadcast_to(self.loc, self._shape())

    def variance(self) -> torch.Tensor:
        return torch.broadcast_to(torch.square(self.scale), self._shape())

    def quantile(self, q: float | torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * self._standard_normal_quantile(q)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.ndtr(self._z(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``-log(scale) - log(2 pi) / 2 - z^2 / 2``."""
        return -torch.log(self.scale) - LOG_SQRT_2PI - 0.5 * torch.square(self._z(x))

    def crps(self, x: torch.Tensor) -> torch.Tensor:
        """``scale * (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))`` (Gneiting et al. 2005, eq. 5).

        ``2 Phi(z) - 1`` is computed as ``erf(z / sqrt 2)``, exact near ``z = 0``.
        """
        z = self._z(x)
        pdf = torch.exp(-0.5 * torch.square(z)) / math.sqrt(2.0 * math.pi)
        return self.scale * (z * torch.erf(SQRT_HALF * z) + 2.0 * pdf - INV_SQRT_PI)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loc + self.scale * self._standard_normal_draws(n, generator)
