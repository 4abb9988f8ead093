"""Member emulators for the hybrid EDA cycle: cheap statistical baselines every ML generator is compared with.

In a hybrid cycle of N members, the DA method produces real analyses for members ``0 .. N_s-1`` only and an
emulator produces members ``N_s .. N-1``. The call is the member generator contract of the design card,
``generate(backgrounds[k, grid, var], guide_analyses[N_s, grid, var], n_members, generator)``: on Lorenz-96
the grid is the ring of ``n`` variables and there is a single variable, so the trailing ``var`` axis of size 1
is dropped and arrays are ``[..., k, n]``. Every baseline here also accepts a leading batch of independent
experiments ``[B, ...]``.

**What an emulator may see.** Its own backgrounds, the N_s real analyses and their backgrounds
(``guide_backgrounds``), and the window's observations (``observations``). Nothing else: the analyses the
full EDA would have computed for the emulated members are never computed in a hybrid cycle (the method is
asked for N_s analyses only), so no emulator, learned or not, can read them. :meth:`MemberEmulator.generate`
checks the inputs once (a template method) and calls the subclass's :meth:`MemberEmulator._generate`.

**The upper bound.** :class:`OracleBound` is *not* an emulator: it is handed the hidden analyses explicitly
by the cycle, which computes them only for it (:data:`BOUNDS`). Its hybrid is the full EDA, which is why it
is reported as an *upper bound*, never as an emulator score.

Baselines (median analysis RMSE over seeds at the best inflation on the seed testbed, 10 real + 10 emulated:
see ``hybrid-eda l96 table``):

* ``none``: no emulation; the cycle is an N_s-member EDA (loses track).
* ``mean-shift``: ``x_i = x^b_i + mean(x^a_real) - mean(x^b_real)``.
* ``rescaled-anomalies``: ``x_i = mean(x^a_real) + s (x^b_i - mean(x^b_own))``, with ``s`` the ratio of the
  real analysis to the real background spread.
* ``gaussian``: independent draws, variable by variable, from ``N(mean(x^a_real), var(x^a_real))``.
* ``gaussian-full``: draws from ``N(mean(x^a_real), cov(x^a_real))`` with the rank-(N_s-1) sample covariance;
  the emulated members stay in the span of the real ones, so it diverges like ``none`` (a negative control).
* ``local-regression`` and ``etkf-reconstruction`` (:mod:`hybrid_eda.l96.regression_emulators`): the local
  ensemble regression fitted each cycle on the N_s real pairs (the floor a learned generator must clear), and
  the exact ETKF reconstruction, which *knows the filter* (labelled so: an upper bound, not a competitor).
* ``generator`` (:mod:`hybrid_eda.l96.learned_emulator`): a trained member generator, ``--emulator
  run/inference-last.ckpt`` or ``generator:checkpoint=PATH,steps=S`` (``generator:untrained=true`` is the untrained
  core, a test double).

An emulator with parameters is named ``name:key=value,key=value`` (``local-regression:noise=0.3,window=2``);
:func:`get_emulator` parses it and the class's :meth:`MemberEmulator.from_params` checks it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from hybrid_eda.l96.config import ExperimentConfig

__all__ = [
    "MemberEmulator",
    "NoEmulation",
    "MeanShift",
    "RescaledAnomalies",
    "GaussianResampling",
    "SampleCovarianceResampling",
    "UpperBound",
    "OracleBound",
    "EMULATORS",
    "BOUNDS",
    "get_emulator",
    "get_member_source",
]


class MemberEmulator(ABC):
    """Produces analysis members from their own backgrounds, the N_s real (guide) analyses and observations.

    Subclasses set ``name`` (the registry key) and the class flags below, and implement :meth:`_generate`;
    the public :meth:`generate` checks the shapes once for all of them.
    """

    #: Registry key, used on the command line (``--emulator NAME``).
    name: ClassVar[str] = ""
    #: True when the hybrid is just an N_s-member EDA (the cycle then never calls :meth:`generate`).
    reduces_ensemble: ClassVar[bool] = False
    #: Maps each background to one member, so ``backgrounds`` must hold ``n_members`` rows.
    one_per_background: ClassVar[bool] = False
    #: Needs ``guide_backgrounds`` (the backgrounds of the real members).
    needs_guide_backgrounds: ClassVar[bool] = False
    #: Smallest usable N_s (2 to estimate a spread).
    min_guides: ClassVar[int] = 1
    #: Accepts a leading batch of experiments; otherwise the cycle calls it once per experiment.
    supports_batch: ClassVar[bool] = True
    #: How tables and JSON label it (``knows the filter`` for a reconstruction that is an upper bound).
    label: ClassVar[str] = "emulator"

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> MemberEmulator:
        """The emulator from the ``key=value`` parameters of its spec (``name:key=value,...``); none by default."""
        if params:
            raise ValueError(f"emulator {cls.name!r} takes no parameters, got {', '.join(params)}; use {cls.name!r}.")
        return cls()

    def unsupported(self, config: ExperimentConfig) -> str | None:
        """Why this emulator cannot run in the experiment ``config`` (a message naming the fix), or ``None``."""
        return None

    def generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None = None,
        observations: np.ndarray | None = None,
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
            Source of all randomness (in the cycle: one stream per experiment of the batch).
        guide_backgrounds : np.ndarray, optional
            ``[..., N_s, n]`` backgrounds of the real members (their analysis increments).
        observations : np.ndarray, optional
            ``[..., L, p]`` the window's observations.

        Returns
        -------
        np.ndarray
            ``[..., n_members, n]`` emulated analysis members.
        """
        self._check(backgrounds, guide_analyses, n_members, guide_backgrounds)
        out = self._generate(
            backgrounds, guide_analyses, n_members, rng, guide_backgrounds=guide_backgrounds, observations=observations
        )
        expected = guide_analyses.shape[:-2] + (n_members, guide_analyses.shape[-1])
        if out.shape != expected:
            raise ValueError(f"{self.name}: emulated members have shape {out.shape}, expected {expected}.")
        return out

    @abstractmethod
    def _generate(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        rng: np.random.Generator,
        *,
        guide_backgrounds: np.ndarray | None,
        observations: np.ndarray | None,
    ) -> np.ndarray:
        """The emulator itself, on inputs :meth:`generate` has checked; returns ``[..., n_members, n]``."""

    def _check(
        self,
        backgrounds: np.ndarray,
        guide_analyses: np.ndarray,
        n_members: int,
        guide_backgrounds: np.ndarray | None,
    ) -> None:
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
        if backgrounds.shape[:-2] != guide_analyses.shape[:-2]:
            raise ValueError(
                f"backgrounds {backgrounds.shape} and guide analyses {guide_analyses.shape} disagree on the "
                "batch of experiments (leading axes)."
            )
        if self.one_per_background and backgrounds.shape[-2] != n_members:
            raise ValueError(
                f"{self.name} maps each background to one member: got {backgrounds.shape[-2]} backgrounds "
                f"for n_members={n_members}; pass one background per emulated member."
            )
        if guide_analyses.shape[-2] < self.min_guides:
            raise ValueError(
                f"{self.name} needs at least {self.min_guides} real members to estimate a spread, "
                f"got N_s={guide_analyses.shape[-2]}; use --n-real {self.min_guides} or more."
            )
        if self.needs_guide_backgrounds:
            if guide_backgrounds is None:
                raise ValueError(f"{self.name} needs guide_backgrounds (the backgrounds of the real members).")
            if guide_backgrounds.shape != guide_analyses.shape:
                raise ValueError(
                    f"guide_backgrounds {guide_backgrounds.shape} must match guide analyses {guide_analyses.shape}."
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoEmulation(MemberEmulator):
    """No emulation: the hybrid cycle is an N_s-member EDA of the real members only."""

    name = "none"
    reduces_ensemble = True

    def _generate(self, backgrounds, guide_analyses, n_members, rng, *, guide_backgrounds, observations):
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
    one_per_background = True
    needs_guide_backgrounds = True

    def _generate(self, backgrounds, guide_analyses, n_members, rng, *, guide_backgrounds, observations):
        increment = guide_analyses.mean(axis=-2, keepdims=True) - guide_backgrounds.mean(axis=-2, keepdims=True)
        return backgrounds + increment  # [..., k, n]


class RescaledAnomalies(MemberEmulator):
    """The real analysis mean plus the members' own background anomalies, shrunk to the analysis spread.

        x^a_i = mean(x^a_real) + s (x^b_i - mean(x^b_own)),    s = sqrt(tr cov(x^a_real) / tr cov(x^b_real))

    One scalar ``s`` per experiment: the spread reduction the real members went through.
    """

    name = "rescaled-anomalies"
    one_per_background = True
    needs_guide_backgrounds = True
    min_guides = 2

    def _generate(self, backgrounds, guide_analyses, n_members, rng, *, guide_backgrounds, observations):
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
    min_guides = 2

    def _generate(self, backgrounds, guide_analyses, n_members, rng, *, guide_backgrounds, observations):
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
    min_guides = 2

    def _generate(self, backgrounds, guide_analyses, n_members, rng, *, guide_backgrounds, observations):
        n_s = guide_analyses.shape[-2]
        mean = guide_analyses.mean(axis=-2, keepdims=True)  # [..., 1, n]
        anomalies = guide_analyses - mean  # [..., N_s, n]
        z = rng.standard_normal(guide_analyses.shape[:-2] + (n_members, n_s))  # [..., n_members, N_s]
        return mean + (z @ anomalies) / np.sqrt(n_s - 1)  # [..., n_members, n]


#: Registry of the built-in emulators, by command-line name (the upper bounds are in :data:`BOUNDS`); the two
#: regression baselines are added by :mod:`hybrid_eda.l96.regression_emulators`, imported at the end of this module.
EMULATORS: dict[str, type[MemberEmulator]] = {
    cls.name: cls for cls in (NoEmulation, MeanShift, RescaledAnomalies, GaussianResampling, SampleCovarianceResampling)
}


# ------------------------------------------------------------------------------------------------------------
# upper bounds: given the hidden analyses, never an emulator


class UpperBound(ABC):
    """A reference that is *given* the analyses the full EDA computes for the emulated members.

    Not a :class:`MemberEmulator`: the cycle computes all N analyses only when the member source is an
    ``UpperBound``, and passes the hidden ones explicitly. Its score bounds what any emulator can reach; the
    tables label it ``upper bound``.
    """

    name: ClassVar[str] = ""
    #: How tables and JSON label it.
    label: ClassVar[str] = "upper bound"
    reduces_ensemble: ClassVar[bool] = False

    def unsupported(self, config: ExperimentConfig) -> str | None:
        """Why this bound cannot run in the experiment ``config``, or ``None`` (the oracle runs everywhere)."""
        return None

    @abstractmethod
    def members(self, hidden_analyses: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
        """``[..., k, n]`` members from the hidden analyses ``[..., k, n]`` and their backgrounds ``[..., k, n]``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class OracleBound(UpperBound):
    """The real analyses of the emulated members: the hybrid is the full EDA (the upper bound of every emulator)."""

    name = "oracle"

    def members(self, hidden_analyses: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
        if hidden_analyses.shape != backgrounds.shape:
            raise ValueError(f"hidden analyses {hidden_analyses.shape} must match backgrounds {backgrounds.shape}.")
        return hidden_analyses.copy()


#: Registry of the upper bounds, by command-line name.
BOUNDS: dict[str, type[UpperBound]] = {cls.name: cls for cls in (OracleBound,)}


def get_emulator(spec: str) -> MemberEmulator:
    """An emulator from its registry name or a checkpoint path; a bound or an unknown name is a ``ValueError``.

    Parameters
    ----------
    spec : str
        One of :data:`EMULATORS` (``none``, ``mean-shift``, ``rescaled-anomalies``, ``gaussian``,
        ``gaussian-full``, ``local-regression``, ``etkf-reconstruction``), optionally with parameters
        ``name:key=value,key=value`` (``local-regression:noise=0.2,window=2,ridge=1``), or the path of a
        trained member generator checkpoint (``run/inference-last.ckpt``, the same as
        ``generator:checkpoint=run/inference-last.ckpt``; :mod:`hybrid_eda.l96.learned_emulator`).
    """
    from hybrid_eda.l96.learned_emulator import CHECKPOINT_SUFFIXES, LearnedGenerator  # subclasses MemberEmulator

    name, colon, params = spec.partition(":")
    if name in EMULATORS:
        return EMULATORS[name].from_params(_parse_params(spec, params) if colon else {})
    if spec in BOUNDS:
        raise ValueError(
            f"{spec!r} is an upper bound given the hidden analyses, not an emulator; use get_member_source()."
        )
    if name == LearnedGenerator.name:
        return LearnedGenerator.from_params(_parse_params(spec, params) if colon else {})
    if spec.endswith(CHECKPOINT_SUFFIXES) or "/" in spec or Path(spec).is_file():
        # a trained member generator (hybrid_eda.l96.learned_emulator); a missing file is a clear error there
        return LearnedGenerator.from_checkpoint(spec)
    raise ValueError(
        f"unknown emulator {spec!r}; available emulators: {', '.join(EMULATORS)}, the upper bound "
        f"{', '.join(BOUNDS)} (or 'all' for the table), or a member generator checkpoint "
        "(path/to/inference-last.ckpt or generator:checkpoint=PATH)."
    )


def _parse_params(spec: str, text: str) -> dict[str, str]:
    """``"noise=0.3,window=2"`` -> ``{"noise": "0.3", "window": "2"}``; a malformed or repeated key is a ValueError."""
    params: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not (key and eq and value):
            raise ValueError(
                f"emulator spec {spec!r}: {item!r} is not key=value; write name:key=value,key=value "
                "(e.g. local-regression:noise=0.3,window=2)."
            )
        if key in params:
            raise ValueError(f"emulator spec {spec!r} gives {key} twice.")
        params[key] = value
    return params


def get_member_source(spec: str) -> MemberEmulator | UpperBound:
    """An emulator (:data:`EMULATORS`) or an upper bound (:data:`BOUNDS`) from its command-line name."""
    if spec in BOUNDS:
        return BOUNDS[spec]()
    return get_emulator(spec)


# The regression baselines live in their own module, which subclasses MemberEmulator and adds them to EMULATORS
# when it is imported (a plain module import: it works whichever of the two modules is imported first).
import hybrid_eda.l96.regression_emulators  # noqa: E402, F401
