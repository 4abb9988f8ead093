"""Where a variance-fed 4D-Var takes its background-error variances ``D`` from, each cycle.

Every source maps a recorded EDA pass (:class:`~hybrid_eda.l96.eda_record.EDARecord`) to variances
``[T, B, n]`` at every window start, computed for all cycles at once (the EDA does not depend on the controls,
so nothing is lost by doing this up front)::

    ensemble   var_N(xb)                   the N-member EDA's background variance (the reference)
    subset     var_M(xb_1 .. xb_M)         a raw M-member EDA: the first M members (exchangeable)
    smoothed   mean_{|j| <= w} var_M(.)_{k+j}   the same, averaged over 2w + 1 neighbours on the ring
    emulator   emu(xb_1 .. xb_M)^2         an emulator of the N-member std fed by the same M members
    static     d_clim                      a fixed (climatological) variance
    noisy      var_N(xb) exp(sigma z - sigma^2 / 2)   the reference with seeded lognormal noise of a chosen size
                                           (z ~ N(0, 1) per variable and cycle; the mean is kept), to calibrate how
                                           much variance error costs

Glossary: ``T`` cycles, ``B`` seeds, ``N`` EDA members, ``M`` members fed to a subset / emulator, ``n`` state size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hybrid_eda.l96.eda_record import EDARecord

__all__ = [
    "EmulatedVariances",
    "EnsembleVariances",
    "NoisyVariances",
    "SmoothedSubsetVariances",
    "StaticVariances",
    "SubsetVariances",
    "VarianceSource",
]

#: An emulator of the N-member std: ``std = emulator(members)``, ``[..., M, n] -> [..., n]``.
StdEmulator = Callable[[np.ndarray], np.ndarray]


class VarianceSource(ABC):
    """A source of background-error variances for every cycle of a recorded EDA pass."""

    #: Short row name (JSON key, figure legend).
    name: str = ""

    @abstractmethod
    def variances(self, record: EDARecord) -> np.ndarray:
        """``[T, B, n]`` variances at every window start (finite, >= 0)."""


@dataclass(frozen=True)
class EnsembleVariances(VarianceSource):
    """The unbiased variance of all N background members."""

    name: str = "ensemble"

    def variances(self, record: EDARecord) -> np.ndarray:
        return record.variance


@dataclass(frozen=True)
class SubsetVariances(VarianceSource):
    """The unbiased variance of the first ``m`` background members (a raw ``m``-member EDA)."""

    m: int = 5
    name: str = "subset"

    def variances(self, record: EDARecord) -> np.ndarray:
        _check_subset(self.m, record)
        return record.members[..., : self.m, :].var(axis=-2, ddof=1)


@dataclass(frozen=True)
class SmoothedSubsetVariances(VarianceSource):
    """The ``m``-member variance averaged over the ``2 w + 1`` nearest variables of the (periodic) Lorenz-96 ring."""

    m: int = 5
    half_width: int = 2
    name: str = "smoothed"

    def variances(self, record: EDARecord) -> np.ndarray:
        raw = SubsetVariances(self.m).variances(record)  # [T, B, n]
        if not 0 <= 2 * self.half_width < raw.shape[-1]:
            raise ValueError(f"half width {self.half_width} must satisfy 0 <= 2 w < n = {raw.shape[-1]}.")
        shifts = range(-self.half_width, self.half_width + 1)
        return sum(np.roll(raw, j, axis=-1) for j in shifts) / len(shifts)


@dataclass(frozen=True)
class NoisyVariances(VarianceSource):
    """The N-member variance times seeded lognormal noise ``exp(sigma z - sigma^2 / 2)`` (mean-preserving).

    Its relative RMS error is ``sqrt(exp(sigma^2) - 1)`` (about ``sigma``): a known variance error, to measure
    the analysis cost of a given error size (what an emulator must reach to be neutral).
    """

    sigma: float = 0.2
    seed: int = 0
    name: str = "noisy"

    def variances(self, record: EDARecord) -> np.ndarray:
        if not self.sigma >= 0:
            raise ValueError(f"sigma is a lognormal noise std and must be >= 0, got {self.sigma}.")
        z = np.random.default_rng(self.seed).standard_normal(record.variance.shape)  # [T, B, n]
        return record.variance * np.exp(self.sigma * z - 0.5 * self.sigma**2)


@dataclass(frozen=True)
class EmulatedVariances(VarianceSource):
    """``emulator(first m members)^2``, the emulator's N-member std squared (negative outputs clipped to 0).

    Parameters
    ----------
    emulator : callable
        ``std = emulator(members)``, ``[..., m, n] -> [..., n]`` (numpy in, numpy or torch out).
    m : int
        Members fed to it.
    chunk : int
        Cycles per call (bounds the emulator's memory).
    """

    emulator: StdEmulator
    m: int = 5
    name: str = "emulator"
    chunk: int = 512

    def variances(self, record: EDARecord) -> np.ndarray:
        _check_subset(self.m, record)
        members = record.members[..., : self.m, :]  # [T, B, m, n]
        out = np.empty(members.shape[:2] + members.shape[-1:])  # [T, B, n]
        for first in range(0, members.shape[0], self.chunk):
            part = members[first : first + self.chunk]
            std = np.asarray(_to_numpy(self.emulator(part)), dtype=float)
            if std.shape != part.shape[:-2] + part.shape[-1:]:
                raise ValueError(
                    f"the emulator returned shape {std.shape} for members of shape {part.shape}; it must map "
                    "[..., M, n] members to an [..., n] std."
                )
            if not np.all(np.isfinite(std)):
                raise ValueError("the emulator returned NaN or infinite stds; check the checkpoint and its inputs.")
            out[first : first + self.chunk] = np.clip(std, 0.0, None) ** 2
        return out


@dataclass(frozen=True)
class StaticVariances(VarianceSource):
    """A fixed variance per variable (``[n]`` or a scalar), e.g. the time-mean EDA variance of training seeds."""

    value: np.ndarray | float = 1.0
    name: str = "static"

    def variances(self, record: EDARecord) -> np.ndarray:
        value = np.asarray(self.value, dtype=float)
        if not np.all(np.isfinite(value)) or np.any(value < 0):
            raise ValueError(f"a static variance must be finite and >= 0, got {value}.")
        return np.broadcast_to(value, record.variance.shape).copy()


def _check_subset(m: int, record: EDARecord) -> None:
    kept = record.members.shape[-2]
    if not 2 <= m <= kept:
        raise ValueError(
            f"a subset of m={m} members needs 2 <= m <= {kept} (the members the EDA record kept); record more "
            "members (record_eda(..., subset=m)) or lower m."
        )


def _to_numpy(x: object) -> np.ndarray:
    """A torch tensor (detached, on the CPU) or an array-like as a numpy array."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(x)
