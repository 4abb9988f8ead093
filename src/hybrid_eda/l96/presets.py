"""Lorenz-96 experiment presets, each named after its source, with the expected score beside each setting.

A preset fixes the twin experiment (model, observation network, cycle length) and the default method; the
expected analysis RMSEs are the published values (DAPPER's ``mods/Lorenz96/sakov2008.py`` "suggested tuning")
or distributions measured here over 32 seeds of 10,000 cycles (median, 10th-90th percentile band, fraction of
seeds that lost track), as each entry's ``source`` says: a marginal chaotic setting has no single score that
holds across machines. An experiment prints the matching median as ``expected_analysis_rmse`` in its JSON
summary and the band as ``expected_band``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["ExpectedScore", "ExperimentSettings", "Preset", "PRESETS", "TWIN_FIELDS", "get_preset"]


@dataclass(frozen=True)
class ExpectedScore:
    """A published or measured time-mean analysis RMSE for one method setting, as a distribution over seeds.

    A marginal, chaotic setting has no single score (kernels and BLAS differ between CPUs, and a few seeds lose
    track late): measured entries give the median over ``seeds`` runs of ``cycles`` cycles, the 10th-90th
    percentile band and the fraction of runs that lost track (time-mean analysis RMSE above
    :data:`hybrid_eda.l96.metrics.LOST_TRACK_RMSE`). Published single numbers (DAPPER's) have no band.

    Parameters
    ----------
    method : str
        Method name in the method registry (``etkf``, ``enkf``, ``oi``, ``3dvar``, ``4dvar``).
    analysis_rmse : float
        Expected analysis RMSE of the ensemble mean, averaged over the scored cycles: the median over seeds.
    members : int or None
        Ensemble size the value holds for; ``None`` for any (deterministic baselines).
    inflation : float or None
        Multiplicative inflation the value holds for; ``None`` for any.
    source : str
        Where the number comes from.
    emulator : str or None
        For hybrid cycles: the member emulator (10 real + 10 emulated members) the value holds for.
    low, high : float or None
        The 10th and 90th percentiles over seeds (``None`` for a published single number).
    lost_track : float or None
        Fraction of the seeds that lost track.
    seeds, cycles : int or None
        How many seeds, of how many cycles each, the distribution was measured over.
    """

    method: str
    analysis_rmse: float
    members: int | None = None
    inflation: float | None = None
    source: str = ""
    emulator: str | None = None
    low: float | None = None
    high: float | None = None
    lost_track: float | None = None
    seeds: int | None = None
    cycles: int | None = None

    @property
    def median(self) -> float:
        return self.analysis_rmse

    @property
    def band(self) -> tuple[float, float] | None:
        """``(low, high)``, the 10th-90th percentile band over seeds, or ``None`` for a single number."""
        return None if self.low is None or self.high is None else (self.low, self.high)

    def describe(self) -> str:
        """``0.187 [0.184, 0.190], lost 0% of 32 x 10,000 cycles`` (or ``~0.95`` for a single number)."""
        if self.band is None:
            return f"~{self.analysis_rmse:g}"
        lost = "" if self.lost_track is None else f", lost track {self.lost_track:.0%}"
        runs = (
            ""
            if self.seeds is None
            else f" of {self.seeds} seeds" + (f" x {self.cycles:,} cycles" if self.cycles else "")
        )
        return f"median {self.analysis_rmse:.3f} [{self.low:.3f}, {self.high:.3f}]{lost}{runs}"

    def matches(self, method: str, members: int, inflation: float, emulator: str | None = None) -> bool:
        """Whether this score applies to the given setting (inflation compared to 1e-9)."""
        return (
            self.method == method
            and self.emulator == emulator
            and (self.members is None or self.members == members)
            and (self.inflation is None or abs(self.inflation - inflation) < 1e-9)
        )


#: The settings that define the twin experiment itself (model and observation network); expected scores hold
#: only for a preset's own twin.
TWIN_FIELDS = ("n", "forcing", "dt", "obs_every", "obs_std", "steps_per_obs")


@dataclass(frozen=True, kw_only=True)
class ExperimentSettings:
    """Every setting of a Lorenz-96 experiment, each defined once here with its one default.

    :class:`Preset` inherits these fields (a preset is a named set of them) and
    :class:`~hybrid_eda.l96.config.ExperimentConfig` has the same fields with ``None`` = "the preset's";
    the method-dependent rules (4D-Var window, rotation, deterministic methods) live in
    :func:`hybrid_eda.l96.config.resolve_settings`.

    Parameters
    ----------
    n, forcing, dt : int, float, float
        Lorenz-96 state size, forcing F and RK4 time step.
    obs_every : int
        Observe every ``obs_every``-th variable (1 = all).
    obs_std : float
        Observation-error standard deviation (R = obs_std^2 I).
    steps_per_obs : int
        Model steps between observation times (1 = observe every step).
    method, members, inflation : str, int, float
        DA method, ensemble size N and multiplicative inflation (>= 1) of the background anomalies.
    window : int
        Observation times per 4D-Var window (the filters always use 1).
    b_mode : str
        4D-Var background covariance: ``ensemble``, ``static`` or ``hybrid`` (half ensemble, half static, the
        default: with the ensemble covariance alone, the perturbed-observation 4D-Var EDA of N=20 diverges in this
        setting at inflations up to 1.1, like a stochastic EnKF of that size; the hybrid scores ~0.25).
    hybrid_weight : float
        Ensemble weight of a hybrid B.
    b_scale : float
        Static B = ``b_scale`` x climatological covariance (3D-Var and the static part of a 4D-Var B).
    rotate : bool
        Randomly rotate the ETKF analysis anomalies every cycle (mean and covariance unchanged), as DAPPER's
        ``EnKF('Sqrt', rot=True)`` that produced the reference numbers; applies to the ETKF only.
    cycles, spinup : int, int
        Cycles run and the first cycles left out of the scores (at most a fifth of the cycles by default).
    init_spread : float
        Standard deviation of the initial ensemble around the initial truth.
    n_real : int
        Number N_s of real members in a hybrid cycle.
    rtps : float
        Relaxation to prior spread of the analysis ensemble (0 = off, 1 = the background spread), after the
        analysis and, in a hybrid cycle, on the real and emulated members together
        (:mod:`hybrid_eda.l96.spread_relaxation`); 0 for a deterministic method.
    """

    n: int = 40
    forcing: float = 8.0
    dt: float = 0.05
    obs_every: int = 1
    obs_std: float = 1.0
    steps_per_obs: int = 1
    method: str = "etkf"
    members: int = 20
    inflation: float = 1.02
    window: int = 4
    b_mode: str = "hybrid"
    hybrid_weight: float = 0.5
    b_scale: float = 0.02
    rotate: bool = True
    cycles: int = 10_000
    spinup: int = 500
    init_spread: float = 1.0
    n_real: int = 10
    rtps: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Preset(ExperimentSettings):
    """A named Lorenz-96 twin experiment and its default DA setting (every :class:`ExperimentSettings` field).

    Parameters
    ----------
    name : str
        Registry key, after the source (``sakov2008``, ``pan2026``).
    source : str
        The paper or talk the setting comes from.
    description : str
        One line for ``hybrid-eda l96 presets``.
    climatology_rmse : float
        RMSE of the climatological mean, the level a diverged filter sits at.
    expected : tuple of ExpectedScore
        The scores known for this setting.
    """

    name: str
    source: str
    description: str
    climatology_rmse: float = 3.6
    expected: tuple[ExpectedScore, ...] = field(default_factory=tuple)

    def settings(self) -> ExperimentSettings:
        """The preset's experiment settings alone."""
        return ExperimentSettings(**{f.name: getattr(self, f.name) for f in fields(ExperimentSettings)})

    def expected_rmse(
        self, method: str, members: int, inflation: float, emulator: str | None = None
    ) -> ExpectedScore | None:
        """The expected score for a setting, or ``None`` where none is known.

        Expected scores hold for the preset's own twin experiment only; an experiment that changes the
        model or observation network (``--obs-every``) should not look them up.
        """
        for score in self.expected:
            if score.matches(method, members, inflation, emulator):
                return score
        return None


_DAPPER = "DAPPER mods/Lorenz96/sakov2008.py suggested tuning"
_MEASURED = "DAPPER 1.7.1 EnKF('Sqrt', rot=True), 10,000 cycles, two seeds on a 2-core machine"
_SEEDS = (
    "hybrid-eda, seeds 1-32, 500 spin-up, OpenBLAS 0.3.31 SkylakeX kernel on a 2-core AMD EPYC; "
    "OPENBLAS_CORETYPE=Haswell gives the same median within the band"
)
_HYBRID = (
    "hybrid-eda l96 table, seed testbed, 10 real + 10 emulated members, ETKF transform of all 20 keeping 10, "
    "seeds 0-31 x 10,000 cycles, best inflation of 1.0-1.3"
)


def _band(low: float, high: float, lost_track: float) -> dict[str, float | int]:
    """The spread of a measured 32-seed x 10,000-cycle distribution (:data:`_SEEDS`)."""
    return {"low": low, "high": high, "lost_track": lost_track, "seeds": 32, "cycles": 10_000}


_BASELINES = (
    ExpectedScore("etkf", 4.0, members=10, source=_MEASURED + ": diverges at any inflation (climatology 3.6)"),
    ExpectedScore("enkf", 0.22, members=40, inflation=1.06, source=_DAPPER),
    ExpectedScore("oi", 0.95, source=_DAPPER),
    ExpectedScore("3dvar", 0.41, source=_DAPPER),
    ExpectedScore("climatology", 3.6, source=_DAPPER),
)

# With DAPPER's random rotation (rot=True), as the sakov2008 preset runs the ETKF. Medians over 32 seeds with the
# 10th-90th percentile band and the fraction that lost track (RMSE > LOST_TRACK_RMSE = 1): at inflation 1.02 the
# setting is marginal (DAPPER 1.7.1 gave 0.181 on two seeds; 5 of our 32 seeds lose track late, 3 of 32 under the
# Haswell kernel, and which ones depends on the kernel), from 1.03 on no seed does. Haswell medians: 0.183, 0.187,
# 0.195, 0.178 (pan2026: 0.188, 0.193, 0.201), all inside these bands.
_SAKOV_SCORES = (
    ExpectedScore("etkf", 0.183, members=20, inflation=1.02, source=_SEEDS, **_band(0.179, 1.453, 5 / 32)),
    ExpectedScore("etkf", 0.187, members=20, inflation=1.03, source=_SEEDS, **_band(0.184, 0.190, 0.0)),
    ExpectedScore("etkf", 0.195, members=20, inflation=1.04, source=_SEEDS, **_band(0.193, 0.197, 0.0)),
    ExpectedScore("etkf", 0.178, members=40, inflation=1.02, source=_SEEDS, **_band(0.175, 0.180, 0.0)),
    ExpectedScore("etkf", 0.18, members=24, inflation=1.013, source=_DAPPER),
    *_BASELINES,
)

# The plain symmetric ETKF of the seed testbed (no rotation) and its hybrid cycles.
_PAN_SCORES = (
    # Hybrid cycles, 10 real + 10 emulated (`hybrid-eda l96 table`, seeds 0-31 x 10,000 cycles, grid 1.0-1.3,
    # each row at its best inflation: fewest seeds lost, then lowest median). The oracle is an upper bound (the
    # full EDA itself), not an emulator score.
    ExpectedScore(
        "etkf", 0.193, members=20, inflation=1.03, emulator="oracle", source=_HYBRID, **_band(0.191, 0.196, 0.0)
    ),
    ExpectedScore(
        "etkf", 0.480, members=20, inflation=1.2, emulator="gaussian", source=_HYBRID, **_band(0.474, 0.484, 0.0)
    ),
    ExpectedScore(
        "etkf",
        0.699,
        members=20,
        inflation=1.2,
        emulator="rescaled-anomalies",
        source=_HYBRID,
        **_band(0.686, 0.707, 0.0),
    ),
    ExpectedScore(
        "etkf",
        1.994,
        members=20,
        inflation=1.3,
        emulator="mean-shift",
        source=_HYBRID + "; every seed loses track at every inflation of the grid",
        **_band(1.983, 2.008, 1.0),
    ),
    ExpectedScore(
        "etkf",
        3.668,
        members=20,
        inflation=1.3,
        emulator="none",
        source=_HYBRID + "; a 10-member ETKF loses track on every seed",
        **_band(3.580, 3.737, 1.0),
    ),
    # The plain symmetric ETKF without rotations: DAPPER's suggested tuning for N=20 is inflation 1.04 (0.20).
    ExpectedScore("etkf", 0.201, members=20, inflation=1.04, source=_SEEDS, **_band(0.199, 0.204, 0.0)),
    ExpectedScore("etkf", 0.193, members=20, inflation=1.03, source=_SEEDS, **_band(0.191, 0.196, 0.0)),
    ExpectedScore("etkf", 0.188, members=20, inflation=1.02, source=_SEEDS, **_band(0.185, 0.192, 2 / 32)),
    *_BASELINES,
)

_PAN_SOURCE = "Wei Pan et al., ECMWF 2026 talk on ML ensemble data assimilation (the seed testbed)"

PRESETS: dict[str, Preset] = {
    "sakov2008": Preset(
        name="sakov2008",
        source="Sakov & Oke (2008), Tellus A 60, 361-371; DAPPER mods/Lorenz96/sakov2008.py",
        description=(
            "40 vars, F=8, dt=0.05, all variables observed every step, R=I; ETKF N=20 inflation 1.02 with random "
            "rotations (marginal: 5 of 32 seeds lose track within 10,000 cycles with OpenBLAS's SkylakeX kernel, "
            "3 with Haswell; seed 1 is one of them on SkylakeX only)"
        ),
        expected=_SAKOV_SCORES,
    ),
    "pan2026": Preset(
        name="pan2026",
        source=_PAN_SOURCE,
        description=(
            "the hybrid-EDA seed testbed: the sakov2008 twin with a plain symmetric ETKF N=20, inflation 1.04 "
            "(DAPPER's suggested tuning for N=20; no localisation, no rotation; 0 of 32 seeds lose track); "
            "hybrid cycles keep 10 real members and emulate 10"
        ),
        inflation=1.04,
        rotate=False,
        expected=_PAN_SCORES,
    ),
    "pan2026-marginal": Preset(
        name="pan2026-marginal",
        source=_PAN_SOURCE,
        description=(
            "the seed testbed at its former inflation 1.02: a better median (0.188) but marginal, 2 of 32 seeds "
            "lose track within 10,000 cycles with OpenBLAS's SkylakeX kernel (0 with Haswell); for stress tests, "
            "not as the reference of an emulator"
        ),
        inflation=1.02,
        rotate=False,
        expected=_PAN_SCORES,
    ),
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name; an unknown name is a ``ValueError`` listing the available ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown Lorenz-96 preset {name!r}; available presets: {', '.join(sorted(PRESETS))} "
            "(list them with `hybrid-eda l96 presets`)."
        ) from None
