"""Negative log-likelihood losses of Gaussian and log-normal predictive distributions.

The NLL (the log score) is strictly proper: its expectation is minimised only by the true distribution. It scores
a parametric distribution, not an ensemble, so there is no fair/unfair distinction. Both are the full NLL,
constants included, so that training and evaluation report the same number as ``-torch.distributions.*.log_prob``.
"""

from __future__ import annotations

import torch

from hybrid_eda.distributions import Gaussian, LogNormal, PredictiveDistribution
from hybrid_eda.losses.base import DistributionLoss


class GaussianNLLLoss(DistributionLoss):
    """``log(scale) + log(2 pi) / 2 + ((y - loc) / scale)^2 / 2``, per point, scaled and reduced.

    ``pred[b, t, 0]`` is ``loc`` and ``pred[b, t, 1]`` is ``scale > 0``.
    """

    name: str = "gaussian_nll"
    distribution = Gaussian

    def score(self, dist: PredictiveDistribution, target: torch.Tensor) -> torch.Tensor:
        return -dist.log_prob(target)


class LogNormalNLLLoss(DistributionLoss):
    """``log(y) + log(sigma) + log(2 pi) / 2 + ((log y - mu) / sigma)^2 / 2``, per point, scaled and reduced.

    ``pred[b, t, 0]`` is ``mu`` and ``pred[b, t, 1]`` is ``sigma > 0``. The ``log(y)`` term carries no gradient;
    it makes the value the true NLL of ``y`` (in the units anemoi's normaliser gives it: use a multiplicative
    normaliser, ``std`` or ``none``, for spread targets, since subtracting a mean makes them negative).
    Targets must be > 0; a zero is an error, not a silent ``inf``.
    """

    name: str = "lognormal_nll"
    distribution = LogNormal

    def check_target(self, target: torch.Tensor) -> None:
        bad = ~(target > 0) & ~torch.isnan(target)
        if bool(bad.any()):
            lowest = float(target[bad].min())
            msg = (
                f"{type(self).__name__} needs targets > 0 (a log-normal has no density at 0), but "
                f"{int(bad.sum())} of {target.numel()} target values are <= 0 (lowest {lowest:.3g}). "
                "Either the target store has zero spread at those points (identical members, e.g. a constant or "
                "masked field: drop the variable with `predicted_variables`/`target_variables`, or floor the "
                "statistic), or the target is normalised with a mean-subtracting normaliser (use `std` or `none` "
                "for spread variables), or use GaussianNLLLoss."
            )
            raise ValueError(msg)

    def score(self, dist: PredictiveDistribution, target: torch.Tensor) -> torch.Tensor:
        return -dist.log_prob(target)
