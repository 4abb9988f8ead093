"""Lorenz-96 experiment presets, each named after its source, with the expected score beside each setting.

A preset fixes the twin experiment (model, observation network, cycle length) and the default method; the
expected analysis RMSEs are the published values (DAPPER's ``mods/Lorenz96/sakov2008.py`` "suggested tuning")
or values measured with DAPPER 1.7.1 in the same setting, as each entry's ``source`` says.
An experiment prints the matching value as ``expected_analysis_rmse`` in its JSON summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["ExpectedScore", "ExperimentSettings", "Preset", "PRESETS", "TWIN_FIELDS", "get_preset"]


@dataclass(frozen=True)
class ExpectedScore:
    """A published or measured time-mean analysis RMSE for one method setting.

    Parameters
    ----------
    method : str
        Method name in the method registry (``etkf``, ``enkf``, ``oi``, ``3dvar``, ``4dvar``).
    analysis_rmse : float
        Expected analysis RMSE of the ensemble mean, averaged over the scored cycles.
    members : int or None
        Ensemble size the value holds for; ``None`` for any (deterministic baselines).
    inflation : float or None
        Multiplicative inflation the value holds for; ``None`` for any.
    source : str
        Where the number comes from.
    emulator : str or None
        For hybrid cycles: the member emulator (10 real + 10 emulated members) the value holds for.
    """

    method: str
    analysis_rmse: float
    members: int | None = None
    inflation: float | None = None
    source: str = ""
    emulator: str | None = None

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
    :class:`~hybrid_eda.l96.experiment.ExperimentConfig` has the same fields with ``None`` = "the preset's";
    the method-dependent rules (4D-Var window, rotation, deterministic methods) live in
    :func:`hybrid_eda.l96.experiment.resolve_settings`.

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
_TUNED = "DAPPER 1.7.1, tuned inflation, 3 seeds, 2,000 scored cycles on a 2-core machine"
_HYBRID = "seed testbed, 10 real + 10 emulated members, ETKF transform of all 20, best inflation"

_BASELINES = (
    ExpectedScore("etkf", 4.0, members=10, source=_MEASURED + ": diverges at any inflation (climatology 3.6)"),
    ExpectedScore("enkf", 0.22, members=40, inflation=1.06, source=_DAPPER),
    ExpectedScore("oi", 0.95, source=_DAPPER),
    ExpectedScore("3dvar", 0.41, source=_DAPPER),
    ExpectedScore("climatology", 3.6, source=_DAPPER),
)

# With DAPPER's random rotation (rot=True), as the sakov2008 preset runs the ETKF.
_SAKOV_SCORES = (
    ExpectedScore("etkf", 0.181, members=20, inflation=1.02, source=_MEASURED),
    ExpectedScore("etkf", 0.194, members=20, inflation=1.04, source=_MEASURED),
    ExpectedScore("etkf", 0.176, members=40, inflation=1.02, source=_MEASURED),
    ExpectedScore("etkf", 0.18, members=24, inflation=1.013, source=_DAPPER),
    *_BASELINES,
)

# The plain symmetric ETKF of the seed testbed (no rotation) and its hybrid cycles.
_PAN_SCORES = (
    ExpectedScore("etkf", 0.187, members=20, emulator="oracle", source=_HYBRID),
    ExpectedScore("etkf", 0.48, members=20, emulator="gaussian", source=_HYBRID),
    ExpectedScore("etkf", 0.75, members=20, emulator="rescaled-anomalies", source=_HYBRID),
    ExpectedScore("etkf", 2.6, members=20, emulator="mean-shift", source=_HYBRID + "; diverges at higher inflation"),
    ExpectedScore("etkf", 3.6, members=20, emulator="none", source=_HYBRID + "; a 10-member ETKF diverges"),
    ExpectedScore(
        "etkf",
        0.187,
        members=20,
        source=_TUNED + "; this plain symmetric ETKF: 0.188 at inflation 1.02 (32 runs of 10,000 cycles)",
    ),
    *_BASELINES,
)

PRESETS: dict[str, Preset] = {
    "sakov2008": Preset(
        name="sakov2008",
        source="Sakov & Oke (2008), Tellus A 60, 361-371; DAPPER mods/Lorenz96/sakov2008.py",
        description="40 vars, F=8, dt=0.05, all variables observed every step, R=I; ETKF N=20 inflation 1.02",
        expected=_SAKOV_SCORES,
    ),
    "pan2026": Preset(
        name="pan2026",
        source="Wei Pan et al., ECMWF 2026 talk on ML ensemble data assimilation (the seed testbed)",
        description=(
            "the hybrid-EDA seed testbed: the sakov2008 twin with a plain symmetric ETKF N=20, inflation only "
            "(no localisation, no random rotation); hybrid cycles keep 10 real members and emulate 10"
        ),
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
