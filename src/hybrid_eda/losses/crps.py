"""Closed-form CRPS of Gaussian and log-normal predictive distributions, as losses or validation metrics.

The exact CRPS of the parametric distribution, ``int (F(z) - 1{z >= y})^2 dz``: there are no members, so no
finite-ensemble bias and no fair correction (compare anemoi's kernel ``CRPS(alpha)`` on ensembles). Both accept any
real target (the log-normal CRPS of ``y <= 0`` is finite), so a zero-spread point scores instead of failing.

As validation metrics anemoi evaluates them on post-processed (denormalised) tensors: the Gaussian's ``loc`` and
``scale`` must then both scale with the normaliser's factor (a multiplicative normaliser), and the log-normal's
``mu, sigma`` are only meaningful with the ``none`` normaliser on the predicted variables.
"""

from __future__ import annotations

import torch

from hybrid_eda.distributions import Gaussian, LogNormal, PredictiveDistribution
from hybrid_eda.losses.base import DistributionLoss


class GaussianCRPS(DistributionLoss):
    """``scale (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))``, ``z = (y - loc) / scale`` (Gneiting et al. 2005)."""

    name: str = "gaussian_crps"
    distribution = Gaussian

    def score(self, dist: PredictiveDistribution, target: torch.Tensor) -> torch.Tensor:
        return dist.crps(target)


class LogNormalCRPS(DistributionLoss):
    """Log-normal CRPS of Baran & Lerch (2015), in a cancellation-free form (see ``LogNormal.crps``)."""

    name: str = "lognormal_crps"
    distribution = LogNormal

    def score(self, dist: PredictiveDistribution, target: torch.Tensor) -> torch.Tensor:
        return dist.crps(target)
