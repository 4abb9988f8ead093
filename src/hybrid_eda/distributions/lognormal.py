"""Log-normal predictive distribution of a positive quantity (the N-member sample std ``s_N``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Self

import torch

from hybrid_eda.distributions.base import LOG_SQRT_2PI, SQRT_HALF, PredictiveDistribution, split_parameters


@dataclasses.dataclass(frozen=True, eq=False)
class LogNormal(PredictiveDistribution):
    """``log X ~ N(mu, sigma^2)``, elementwise; ``mean = exp(mu + sigma^2 / 2)``.

    ``mu`` carries the magnitude (``log s_N``: a spread of 1e-6 is ``mu ~ -13.8``, no underflow) and ``sigma`` the
    relative uncertainty (about ``1 / sqrt(2 (N - 1))`` for a sample std of N members, plus what M members
    cannot tell), so the parameters are O(1) whatever the units: the natural model of ``s_N`` over variables
    whose spreads differ by many orders of magnitude. Values ``x <= 0`` have density 0 (``log_prob = -inf``),
    CDF 0 and a finite CRPS.
    """

    mu: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def from_raw(cls, raw: torch.Tensor, *, min_sigma: float = 1e-4, max_sigma: float = 3.0) -> Self:
        """``mu = raw[..., 0:1, :, :]``, ``sigma = min_sigma + (max_sigma - min_sigma) sigmoid(raw[..., 1:2, :, :])``.

        ``sigma`` is a relative spread, so fixed bounds are unit-free. The floor (1e-4, i.e. 0.01 %, far below what
        a 50-member std can resolve) keeps ``w = (log x - mu) / sigma`` and its square finite in float32. The cap
        keeps ``mean = exp(mu + sigma^2 / 2)`` and the CRPS finite (an unbounded ``sigma = 30`` would give
        ``exp(450) = inf``); 3 means a factor ``e^3 = 20`` per standard deviation, beyond any plausible
        uncertainty of s_N. Towards the floor ``sigma ~ (max - min) e^raw``, so ``log sigma`` stays linear in
        ``raw`` and small spreads are reached without vanishing gradients.
        """
        if not 0.0 < min_sigma < max_sigma:
            msg = f"need 0 < min_sigma < max_sigma, got min_sigma={min_sigma}, max_sigma={max_sigma}"
            raise ValueError(msg)
        mu, raw_sigma = split_parameters(raw, cls.n_parameters, cls.parameter_names())
        return cls(mu, min_sigma + (max_sigma - min_sigma) * torch.sigmoid(raw_sigma))

    def _w(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``w = (log x - mu) / sigma`` where ``x > 0`` (0 elsewhere), and the mask ``x > 0``."""
        positive = x > 0
        log_x = torch.log(torch.where(positive, x, torch.ones_like(x)))
        return (log_x - self.mu) / self.sigma, positive

    def mean(self) -> torch.Tensor:
        return torch.exp(self.mu + 0.5 * torch.square(self.sigma))

    def variance(self) -> torch.Tensor:
        """``(exp(sigma^2) - 1) exp(2 mu + sigma^2)``, with ``expm1`` for small ``sigma``."""
        return torch.expm1(torch.square(self.sigma)) * torch.exp(2.0 * self.mu + torch.square(self.sigma))

    def quantile(self, q: float | torch.Tensor) -> torch.Tensor:
        return torch.exp(self.mu + self.sigma * self._standard_normal_quantile(q))

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        w, positive = self._w(x)
        return torch.where(positive, torch.special.ndtr(w), torch.zeros_like(w))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``-log x - log(sigma) - log(2 pi) / 2 - w^2 / 2``; ``-inf`` for ``x <= 0``."""
        w, positive = self._w(x)
        log_x = torch.log(torch.where(positive, x, torch.ones_like(x)))
        value = -log_x - torch.log(self.sigma) - LOG_SQRT_2PI - 0.5 * torch.square(w)
        return torch.where(positive, value, torch.full_like(value, -math.inf))

    def crps(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form CRPS of Baran & Lerch (2015, eq. 4), rearranged to avoid cancellation.

        Baran & Lerch: ``CRPS = x (2 Phi(w) - 1) - 2 m (Phi(w - sigma) + Phi(sigma / sqrt 2) - 1)`` with
        ``m = exp(mu + sigma^2 / 2)``, ``w = (log x - mu) / sigma``. Its two terms are O(x) and their difference
        O(x sigma), so float32 loses digits for small ``sigma``. Written with ``m (2 Phi(w) - 1)`` taken out::

            CRPS = (x - m) erf(w / sqrt 2) - 2 m (Phi(w - sigma) - Phi(w) + erf(sigma / 2) / 2),

        where every term is O(x sigma) and ``Phi(w - sigma) - Phi(w)`` is taken in the lower tail (by symmetry,
        ``Phi(-w) - Phi(sigma - w)`` when ``w > 0``). For ``x <= 0`` (``w -> -inf``): ``m - x - m erf(sigma/2)``.
        """
        w, positive = self._w(x)
        m = self.mean()
        half_pair = m * torch.erf(0.5 * self.sigma)  # E|X - X'| / 2
        ndtr = torch.special.ndtr
        tail_difference = torch.where(
            w > 0, ndtr(-w) - ndtr(self.sigma - w), ndtr(w - self.sigma) - ndtr(w)
        )  # Phi(w - sigma) - Phi(w)
        crps_positive = (x - m) * torch.erf(SQRT_HALF * w) - 2.0 * m * tail_difference - half_pair
        return torch.where(positive, crps_positive, m - x - half_pair)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.exp(self.mu + self.sigma * self._standard_normal_draws(n, generator))
