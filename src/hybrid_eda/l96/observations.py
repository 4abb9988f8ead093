"""Observation operators for Lorenz-96: observe every k-th variable with Gaussian errors.

    y = H x + eps,    eps ~ N(0, R),    R = obs_std^2 I

``H`` is a selection of variables (``x[..., index]``), so it is applied by indexing, never as a matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ObservationOperator"]


@dataclass(frozen=True)
class ObservationOperator:
    """Observe every ``every``-th of ``n`` variables with independent Gaussian errors of std ``obs_std``.

    Parameters
    ----------
    n : int
        State size.
    every : int
        Observe variables ``0, every, 2*every, ...`` (1 = all variables).
    obs_std : float
        Observation-error standard deviation (R = obs_std^2 I).
    """

    n: int = 40
    every: int = 1
    obs_std: float = 1.0
    index: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.every <= self.n:
            raise ValueError(
                f"obs_every must be between 1 and the state size {self.n}, got {self.every}; "
                "use 1 to observe every variable or k to observe every k-th one."
            )
        if not self.obs_std > 0:
            raise ValueError(f"observation error std must be positive, got {self.obs_std}; use e.g. 1.0 (R = I).")
        object.__setattr__(self, "index", np.arange(0, self.n, self.every))

    @property
    def p(self) -> int:
        """Number of observations per time."""
        return int(self.index.size)

    @property
    def variance(self) -> float:
        """Observation-error variance (the diagonal of R)."""
        return self.obs_std**2

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``H x``: ``[..., n] -> [..., p]``."""
        return x[..., self.index]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """``H^T y``: ``[..., p] -> [..., n]`` (zeros at unobserved variables)."""
        out = np.zeros(y.shape[:-1] + (self.n,), dtype=y.dtype)
        out[..., self.index] = y
        return out

    def sample(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy observations of ``x``: ``[..., n] -> [..., p]``."""
        hx = self.apply(x)
        return hx + self.obs_std * rng.standard_normal(hx.shape)
