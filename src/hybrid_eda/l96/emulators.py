"""Member emulators for the hybrid EDA cycle: cheap statistical baselines every ML generator is compared with.

In a hybrid cycle of N members, the DA method produces real analyses for members ``0 .. N_s-1`` and an
emulator produces members ``N_s .. N-1`` from their own backgrounds and the N_s real analyses. The call
mirrors the member generator contract of the design card,
``generate(backgrounds[k, grid, var], guide_analyses[N_s, grid, var], n_members, generator)``: on Lorenz-96
the grid is the ring of ``n`` variables and there is a single variable, so the trailing ``var`` axis of size 1
is dropped and arrays are ``[..., k, n]``. Every baseline here also accepts a leading batch of independent
experiments ``[B, ...]``.

Baselines (analysis RMSE at the best inflation on the seed testbed, 10 real + 10 emulated, in brackets):

* ``none``: no emulation; the cycle is an N_s-member EDA (diverges, > 3.5).
* ``mean-shift``: ``x_i = x^b_i + mean(x^a_real) - mean(x^b_real)`` (2.6).
* ``rescaled-anomalies``: ``x_i = mean(x^a_real) + s (x^b_i - mean(x^b_own))``, with ``s`` the ratio of the
  real analysis to the real background spread (0.75).
* ``gaussian``: independent draws, variable by variable, from ``N(mean(x^a_real), var(x^a_real))`` (0.48).
* ``gaussian-full``: draws from ``N(mean(x^a_real), cov(x^a_real))`` with the rank-(N_s-1) sample covariance;
  the emulated members stay in the span of the real ones, so it diverges like ``none`` (a negative control).
* ``oracle``: the real analyses of the emulated members, i.e. the full EDA (0.187); an upper bound.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

__all__ = [
    "MemberEmulator",
    "NoEmulation",
    "MeanShift",
    "RescaledAnomalies",
    "GaussianResampling",
    "SampleCovarianceResampling",
    "Oracle",
    "EMULATORS",
    "get_emulator",
]


class MemberEmulator(ABC):
    """Produces analysis members from their own backgrounds and the N_s real (guide) analyses.

    Subclasses set ``name`` (the registry key) and implement :meth:`generate`.
    """

    #: Registry key, used on the command line (``--emulator NAME``).
    name: ClassVar[str] = ""
    #: True when the hybrid is just an N_s-member EDA (the cycle then never calls :meth:`generate`).
    reduces_ensemble: ClassVar[bool] = False

    @abstractmethod
    def generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None = None,
        real_analyses: np.ndarray | None = None,
    ) -> np.ndarray:
        """Emulate ``n_members`` analysis members.

        Parameters
        ----------
        backgrounds : np.ndarray
            ``[..., k, n]`` backgrounds of the members to emulate (k = n_members in the L96 cycle).
        guide_analyses : np.ndarray
            ``[..., N_s, n]`` real analyses from the DA method.
        n_members : int
            Number of members to produce.
        rng : np.random.Generator
            Source of all randomness.
        guide_backgrounds : np.ndarray, optional
            ``[..., N_s, n]`` backgrounds of the real members (their analysis increments).
        real_analyses : np.ndarray, optional
            ``[..., k, n]`` the real analyses of the emulated members; only the oracle may read them.

        Returns
        -------
        np.ndarray
            ``[..., n_members, n]`` emulated analysis members.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_shapes(backgrounds: np.ndarray, guide_analyses: np.ndarray, n_members: int, need_k: bool) -> None:
    """Raise a ``ValueError`` when the arrays cannot describe the same members and state."""
    if backgrounds.ndim < 2 or guide_analyses.ndim < 2:
        raise ValueError(
            f"emulator inputs must be [..., members, n]; got backgrounds {backgrounds.shape} "
            f"and guide analyses {guide_analyses.shape}."
        )
    if backgrounds.shape[-1] != guide_analyses.shape[-1]:
        raise ValueError(
            f"backgrounds {backgrounds.shape} and guide analyses {guide_analyses.shape} disagree on the state size."
        )
    if need_k and backgrounds.shape[-2] != n_members:
        raise ValueError(
            f"this emulator maps each background to one member: got {backgrounds.shape[-2]} backgrounds "
            f"for n_members={n_members}; pass one background per emulated member."
        )


class NoEmulation(MemberEmulator):
    """No emulation: the hybrid cycle is an N_s-member EDA of the real members only."""

    name = "none"
    reduces_ensemble = True

    def generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None = None,
        real_analyses: np.ndarray | None = None,
    ) -> np.ndarray:
        raise RuntimeError(
            "the 'none' emulator produces no members: the hybrid cycle runs the DA method with the N_s real "
            "members only and never calls generate()."
        )


class MeanShift(MemberEmulator):
    """Background plus the mean analysis increment of the real members.

        x^a_i = x^b_i + (mean_j x^a_j - mean_j x^b_j),    j over the N_s real members

    The emulated members keep their background spread, which is too large after an analysis, so the
    ensemble is overdispersive in the emulated half and the filter tends to diverge at higher inflation.
    """

    name = "mean-shift"

    def generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None = None,
        real_analyses: np.ndarray | None = None,
    ) -> np.ndarray:
        _check_shapes(backgrounds, guide_analyses, n_members, need_k=True)
        if guide_backgrounds is None:
            raise ValueError("mean-shift needs guide_backgrounds (the backgrounds of the real members).")
        increment = guide_analyses.mean(axis=-2, keepdims=True) - guide_backgrounds.mean(axis=-2, keepdims=True)
        return backgrounds + increment  # [..., k, n]


class RescaledAnomalies(MemberEmulator):
    """The real analysis mean plus the members' own background anomalies, shrunk to the analysis spread.

        x^a_i = mean(x^a_real) + s (x^b_i - mean(x^b_own)),    s = sqrt(tr cov(x^a_real) / tr cov(x^b_real))

    One scalar ``s`` per experiment: the spread reduction the real members went through.
    """

    name = "rescaled-anomalies"

    def generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None = None,
        real_analyses: np.ndarray | None = None,
    ) -> np.ndarray:
        _check_shapes(backgrounds, guide_analyses, n_members, need_k=True)
        if guide_backgrounds is None:
            raise ValueError("rescaled-anomalies needs guide_backgrounds (the backgrounds of the real members).")
        if guide_analyses.shape[-2] < 2:
            raise ValueError("rescaled-anomalies needs at least 2 real members to measure their spread.")
        var_a = guide_analyses.var(axis=-2, ddof=1).sum(axis=-1)  # [...]
        var_b = guide_backgrounds.var(axis=-2, ddof=1).sum(axis=-1)  # [...]
        scale = np.sqrt(var_a / np.maximum(var_b, np.finfo(float).tiny))[..., None, None]
        anomalies = backgrounds - backgrounds.mean(axis=-2, keepdims=True)  # [..., k, n]
        return guide_analyses.mean(axis=-2, keepdims=True) + scale * anomalies


class GaussianResampling(MemberEmulator):
    """Independent draws from a Gaussian fitted, variable by variable, to the N_s real analyses.

        x_ik = mean_j x^a_jk + s_k z_ik,    s_k^2 = var_j x^a_jk (unbiased),    z_ik ~ N(0, 1)

    The covariance is the **diagonal** of the sample covariance. This is what keeps the hybrid alive: the
    independent noise adds directions the real members do not span. Resampling from the full sample
    covariance (:class:`SampleCovarianceResampling`) puts every emulated member in the (N_s - 1)-dimensional
    span of the real analysis anomalies, so the whole ensemble acts like an N_s-member one and diverges
    at N_s = 10 like the ``none`` emulator. The own backgrounds are not used.
    """

    name = "gaussian"

    def generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None = None,
        real_analyses: np.ndarray | None = None,
    ) -> np.ndarray:
        _check_shapes(backgrounds, guide_analyses, n_members, need_k=False)
        if guide_analyses.shape[-2] < 2:
            raise ValueError("gaussian resampling needs at least 2 real members to estimate a variance.")
        mean = guide_analyses.mean(axis=-2, keepdims=True)  # [..., 1, n]
        std = guide_analyses.std(axis=-2, ddof=1, keepdims=True)  # [..., 1, n]
        z = rng.standard_normal(guide_analyses.shape[:-2] + (n_members, guide_analyses.shape[-1]))
        return mean + std * z  # [..., n_members, n]


class SampleCovarianceResampling(MemberEmulator):
    """Independent draws from ``N(mean(x^a_real), cov(x^a_real))`` with the full, rank-(N_s-1) sample covariance.

        x_i = mean(x^a_real) + A^T z_i / sqrt(N_s - 1),    z_i ~ N(0, I_{N_s}),

    with ``A`` the ``[N_s, n]`` analysis anomalies, so ``x_i ~ N(mean, A^T A / (N_s - 1))`` exactly. A negative
    control: the emulated members add no new directions, and the hybrid diverges like an N_s-member EDA.
    """

    name = "gaussian-full"

    def generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None = None,
        real_analyses: np.ndarray | None = None,
    ) -> np.ndarray:
        _check_shapes(backgrounds, guide_analyses, n_members, need_k=False)
        n_s = guide_analyses.shape[-2]
        if n_s < 2:
            raise ValueError("gaussian-full resampling needs at least 2 real members to estimate a covariance.")
        mean = guide_analyses.mean(axis=-2, keepdims=True)  # [..., 1, n]
        anomalies = guide_analyses - mean  # [..., N_s, n]
        z = rng.standard_normal(guide_analyses.shape[:-2] + (n_members, n_s))  # [..., n_members, N_s]
        return mean + (z @ anomalies) / np.sqrt(n_s - 1)  # [..., n_members, n]


class Oracle(MemberEmulator):
    """The real analyses of the emulated members: the hybrid equals the full EDA (an upper bound)."""

    name = "oracle"

    def generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None = None,
        real_analyses: np.ndarray | None = None,
    ) -> np.ndarray:
        _check_shapes(backgrounds, guide_analyses, n_members, need_k=True)
        if real_analyses is None:
            raise ValueError("the oracle needs real_analyses (the full EDA's analyses of the emulated members).")
        if real_analyses.shape != backgrounds.shape:
            raise ValueError(f"real_analyses {real_analyses.shape} must match backgrounds {backgrounds.shape}.")
        return real_analyses.copy()


#: Registry of the built-in emulators, by command-line name.
EMULATORS: dict[str, type[MemberEmulator]] = {
    cls.name: cls
    for cls in (NoEmulation, MeanShift, RescaledAnomalies, GaussianResampling, SampleCovarianceResampling, Oracle)
}


def get_emulator(spec: str) -> MemberEmulator:
    """An emulator from its registry name; a checkpoint path or an unknown name is a clear ``ValueError``.

    Parameters
    ----------
    spec : str
        One of :data:`EMULATORS` (``none``, ``mean-shift``, ``rescaled-anomalies``, ``gaussian``,
        ``gaussian-full``, ``oracle``), or later the path of a trained member generator checkpoint.
    """
    if spec in EMULATORS:
        return EMULATORS[spec]()
    looks_like_path = "/" in spec or spec.endswith((".ckpt", ".pt", ".pth")) or Path(spec).exists()
    if looks_like_path:
        raise ValueError(
            f"--emulator {spec!r} looks like a checkpoint path: trained member generators plug into the "
            "Lorenz-96 cycle with the member-generator capability, which is not part of this version; "
            f"for now use one of the baselines: {', '.join(EMULATORS)}."
        )
    raise ValueError(
        f"unknown emulator {spec!r}; available emulators: {', '.join(EMULATORS)} (or 'all' for the table)."
    )
