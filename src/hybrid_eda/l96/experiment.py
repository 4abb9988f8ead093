"""A Lorenz-96 experiment: a typed frozen configuration, a registry of DA methods and :func:`run_experiment`.

    config = ExperimentConfig.from_preset("sakov2008", members=20, inflation=1.02, cycles=10_000, seed=3)
    result = run_experiment(config)             # full EDA
    result.summary()["analysis_rmse"]           # ~0.18

    hybrid = run_hybrid(replace(config, n_real=10, emulator="gaussian"))   # full and hybrid, same truth

Methods are built by factories in :data:`METHODS` (never ``if name == ...`` chains); emulators come from
:data:`hybrid_eda.l96.emulators.EMULATORS`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from hybrid_eda.l96.archive import EDAArchive
from hybrid_eda.l96.base import Assimilator, FilterDivergenceError
from hybrid_eda.l96.cycle import (
    CycleOutput,
    CycleSettings,
    HybridSetting,
    check_memory,
    memory_parts,
    run_cycles,
)
from hybrid_eda.l96.emulators import BOUNDS, EMULATORS, get_member_source
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.presets import TWIN_FIELDS, ExpectedScore, ExperimentSettings, Preset, get_preset
from hybrid_eda.l96.seed_stats import SeedDistribution

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "HybridResult",
    "MethodSpec",
    "METHODS",
    "TableRow",
    "run_experiment",
    "run_hybrid",
    "run_table",
    "seed_distribution",
]

LOGGER = logging.getLogger(__name__)

B_MODES = ("ensemble", "static", "hybrid")


# ------------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one Lorenz-96 experiment (or a batch of independent ones).

    Every setting has one definition and one default, in :class:`~hybrid_eda.l96.presets.ExperimentSettings`
    (a preset is a named set of them). Here each setting field defaults to ``None``, "the preset's", and
    :func:`resolve_settings` fills them in once, with the method-dependent rules (a filter's window is 1, only
    the ETKF rotates, OI and 3D-Var run one member without inflation). After construction every setting is set,
    and ``ExperimentConfig(preset=p, **settings) == ExperimentConfig.from_preset(p, **settings)``.

    Parameters
    ----------
    preset : str
        Preset the twin experiment, the defaults and the expected scores come from (``sakov2008``, ``pan2026``).
    seed : int
        Seed ``s`` of experiment 0 (>= 0). Experiment ``k`` of the batch draws all its random streams (truth,
        observations, initial ensemble, method, emulator) from ``SeedSequence(s + k)``, so it is, bit for bit,
        the single run with seed ``s + k`` whatever the batch size (:mod:`hybrid_eda.l96.seeding`).
    batch : int
        Number B of independent experiments (seeds ``s .. s + B - 1``) advanced together in one vectorised call.
    emulator : str or None
        Hybrid cycle: members ``0 .. n_real-1`` are real, the rest come from this emulator (None = full EDA).
    method, members, inflation, cycles, spinup, n, forcing, dt, obs_every, obs_std, steps_per_obs, window, \
b_mode, hybrid_weight, b_scale, n_real, init_spread, rotate
        The settings of :class:`~hybrid_eda.l96.presets.ExperimentSettings`; ``None``: the preset's
        (``n_real``: the preset's in a hybrid cycle, None for the full EDA).
    """

    preset: str = "sakov2008"
    method: str | None = None
    members: int | None = None
    inflation: float | None = None
    cycles: int | None = None
    spinup: int | None = None
    seed: int = 0
    batch: int = 1
    n: int | None = None
    forcing: float | None = None
    dt: float | None = None
    obs_every: int | None = None
    obs_std: float | None = None
    steps_per_obs: int | None = None
    window: int | None = None
    b_mode: str | None = None
    hybrid_weight: float | None = None
    b_scale: float | None = None
    n_real: int | None = None
    emulator: str | None = None
    init_spread: float | None = None
    rotate: bool | None = None

    def __post_init__(self) -> None:
        given = {name: getattr(self, name) for name in SETTING_FIELDS}
        resolved = resolve_settings(get_preset(self.preset), given, hybrid=self.emulator is not None)
        for name, value in resolved.items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        """Every user-facing check of the settings, each a ``ValueError`` naming the fix."""
        _check_numbers(self)
        spec = method_spec(self.method)  # type: ignore[arg-type]
        members, cycles, spinup = int(self.members), int(self.cycles), int(self.spinup)  # type: ignore[arg-type]
        if spec.ensemble and members < spec.min_members(self):
            raise ValueError(
                f"{self.method} needs at least {spec.min_members(self)} members to estimate the background "
                f"covariance, got --members {self.members}; use e.g. --members 20 (N < 14 diverges at n=40 "
                "without localisation)."
            )
        if members < 1:
            raise ValueError(f"members must be at least 1, got {self.members}.")
        if not self.inflation >= 1.0:  # type: ignore[operator]
            raise ValueError(
                f"inflation must be >= 1 (it multiplies the background anomalies; 1 = none), got {self.inflation}; "
                "use e.g. --inflation 1.02."
            )
        if cycles < 1:
            raise ValueError(f"cycles must be at least 1, got {self.cycles}; use e.g. --cycles 10000.")
        if not 0 <= spinup < cycles:
            raise ValueError(
                f"spin-up must be between 0 and cycles - 1 = {cycles - 1}, got {self.spinup}; "
                "lower --spinup or run more --cycles."
            )
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1 (independent experiments), got {self.batch}.")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}; use e.g. --seed 0.")
        if self.window < 1 or self.steps_per_obs < 1:  # type: ignore[operator]
            raise ValueError(
                f"window and steps_per_obs must be positive, got window={self.window}, "
                f"steps_per_obs={self.steps_per_obs}."
            )
        if self.window > 1 and not spec.windowed:  # type: ignore[operator]
            raise ValueError(
                f"--window applies to 4D-Var only; {self.method} assimilates one observation time per cycle "
                "(drop --window or use --method 4dvar)."
            )
        if self.b_mode not in B_MODES:
            raise ValueError(f"unknown --b-mode {self.b_mode!r}; use one of {', '.join(B_MODES)}.")
        if not 0.0 <= self.hybrid_weight <= 1.0:  # type: ignore[operator]
            raise ValueError(f"hybrid_weight must lie in [0, 1], got {self.hybrid_weight}.")
        if not self.b_scale > 0:  # type: ignore[operator]
            raise ValueError(f"b_scale must be positive, got {self.b_scale}; use e.g. 0.02.")
        if not self.init_spread > 0:  # type: ignore[operator]
            raise ValueError(f"init_spread must be positive, got {self.init_spread}; use e.g. --init-spread 1.0.")
        if self.emulator is not None:
            get_member_source(self.emulator)
            if not 1 <= self.n_real < members:  # type: ignore[operator]
                raise ValueError(
                    f"--n-real must be between 1 and --members - 1 = {members - 1}, got {self.n_real}: "
                    "a hybrid keeps some real members and emulates the rest; lower --n-real or raise --members."
                )
            if not spec.ensemble:
                raise ValueError(f"hybrid cycles need an ensemble method (etkf, enkf, 4dvar), not {self.method}.")
        if self.rotate and not spec.rotatable:
            raise ValueError(
                "--rotate applies random mean-preserving rotations to the ETKF's square-root transform (DAPPER's "
                f"EnKF('Sqrt', rot=True)); {self.method} has no such transform: use --no-rotate."
            )
        # Model and observation checks give their own clear messages.
        self.model()
        self.observations()
        check_memory(self.memory_parts(), "this experiment")

    @classmethod
    def from_preset(cls, preset: str = "sakov2008", **overrides: Any) -> ExperimentConfig:
        """A config with the preset's defaults for every field not in ``overrides`` (``None`` = not given).

        The same as ``ExperimentConfig(preset=preset, **overrides)``; an unknown setting is a ``TypeError``
        listing the known ones. Deterministic methods (``oi``, ``3dvar``) get one member and no inflation
        whatever was asked.
        """
        names = {f.name for f in fields(cls)} - {"preset"}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown experiment settings {sorted(unknown)}; known: {sorted(names)}.")
        return cls(preset=preset, **{k: v for k, v in overrides.items() if v is not None})

    def memory_parts(self, archive: bool = False) -> dict[str, int]:
        """Estimated peak memory of :func:`run_experiment` in bytes, by array (see ``cycle.memory_parts``)."""
        return memory_parts(
            batch=self.batch,
            members=int(self.members),  # type: ignore[arg-type]
            n=int(self.n),  # type: ignore[arg-type]
            p=self.observations().p,
            window=int(self.window),  # type: ignore[arg-type]
            cycles=int(self.cycles),  # type: ignore[arg-type]
            keep_members=archive,
        )

    # derived objects -------------------------------------------------------------------------------------

    def model(self) -> Lorenz96:
        return Lorenz96(n=self.n, forcing=self.forcing, dt=self.dt)

    def observations(self) -> ObservationOperator:
        return ObservationOperator(n=self.n, every=self.obs_every, obs_std=self.obs_std)

    def get_preset(self) -> Preset:
        return get_preset(self.preset)

    @property
    def is_hybrid(self) -> bool:
        return self.emulator is not None

    def full(self) -> ExperimentConfig:
        """The same experiment without emulation (the full N-member EDA)."""
        return replace(self, emulator=None, n_real=None)

    def expected(self) -> ExpectedScore | None:
        """The preset's expected score for this setting, if every other setting is the preset's default.

        The score is looked up by method, members, inflation and emulator; it holds only when the twin
        experiment and the method's other settings (window, rotation, B, N_s) are the preset's for that method.
        """
        p = self.get_preset()
        default = ExperimentConfig(preset=self.preset, method=self.method, emulator=self.emulator)
        same = TWIN_FIELDS + ("window", "rotate", "b_mode", "hybrid_weight", "b_scale", "n_real")
        if any(getattr(self, name) != getattr(default, name) for name in same):
            return None
        return p.expected_rmse(self.method, self.members, self.inflation, self.emulator)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The experiment settings of :class:`ExperimentConfig`: those of the presets.
SETTING_FIELDS = tuple(f.name for f in fields(ExperimentSettings))
#: Settings that must be finite real numbers (``--inflation inf`` or ``--dt nan`` are refused up front).
_FLOAT_FIELDS = tuple(f.name for f in fields(ExperimentSettings) if f.type in ("float", float))
_INT_FIELDS = tuple(f.name for f in fields(ExperimentSettings) if f.type in ("int", int)) + ("seed", "batch")


def resolve_settings(preset: Preset, given: Mapping[str, Any], hybrid: bool = False) -> dict[str, Any]:
    """Every experiment setting: the ``given`` value where not ``None``, else the preset's, by the method's rules.

    The one place where defaults depend on the method (:data:`METHODS`):

    * ``window``: the preset's for a windowed method (4D-Var), 1 for the filters;
    * ``rotate``: the preset's for a rotatable method (the ETKF), off for the others;
    * ``spinup``: the preset's, at most a fifth of the cycles;
    * ``members``, ``inflation``: 1 and 1.0 for a deterministic method (OI, 3D-Var), whatever was given;
    * ``n_real``: the preset's in a hybrid cycle, ``None`` for the full EDA.
    """
    values = {name: given[name] if given.get(name) is not None else getattr(preset, name) for name in SETTING_FIELDS}
    spec = method_spec(values["method"])
    if given.get("window") is None and not spec.windowed:
        values["window"] = 1
    if given.get("rotate") is None:
        values["rotate"] = preset.rotate and spec.rotatable
    if given.get("spinup") is None and isinstance(values["cycles"], int):
        values["spinup"] = min(preset.spinup, values["cycles"] // 5)
    if not spec.ensemble:
        if values["members"] != 1 and given.get("members") is not None or given.get("inflation") not in (None, 1.0):
            LOGGER.info("%s is deterministic: running one member without inflation.", spec.name)
        values["members"], values["inflation"] = 1, 1.0
    if not hybrid and given.get("n_real") is None:
        values["n_real"] = None
    return values


def _check_numbers(config: ExperimentConfig) -> None:
    """Float settings must be finite numbers, integer settings whole numbers (``ValueError`` naming the flag)."""
    preset = config.get_preset()
    for name in _FLOAT_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"--{name.replace('_', '-')} must be a number, got {value!r}.")
        if not math.isfinite(value):
            raise ValueError(
                f"--{name.replace('_', '-')} must be a finite number, got {value!r}; "
                f"use e.g. --{name.replace('_', '-')} {getattr(preset, name)} (the {preset.name} preset's)."
            )
    for name in _INT_FIELDS:
        value = getattr(config, name)
        if value is None and name == "n_real":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"--{name.replace('_', '-')} must be a whole number, got {value!r}.")


# ------------------------------------------------------------------------------------------------------------
# method registry


@functools.lru_cache(maxsize=8)
def climatology(model: Lorenz96):  # noqa: ANN201 - returns filters.Climatology
    """Climatological mean and covariance of ``model`` from a fixed-seed free run (cached per model)."""
    from hybrid_eda.l96.filters import Climatology

    return Climatology.from_free_run(model, np.random.default_rng(20080101))


def _static_b(config: ExperimentConfig, model: Lorenz96) -> np.ndarray:
    return float(config.b_scale) * climatology(model).cov  # type: ignore[arg-type]


def _etkf(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.filters import ETKF

    return ETKF(model, obs, inflation=config.inflation, rotate=bool(config.rotate))


def _enkf(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.filters import EnKF

    return EnKF(model, obs, inflation=config.inflation)


def _oi(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.filters import OptimalInterpolation

    return OptimalInterpolation(model, obs, climatology(model))


def _var3d(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.filters import Var3D

    scale = float(config.b_scale)  # type: ignore[arg-type]
    return Var3D(model, obs, climatology(model), b_scale=scale)


def _var4d(config: ExperimentConfig, model: Lorenz96, obs: ObservationOperator) -> Assimilator:
    from hybrid_eda.l96.var4d import Var4DEDA

    return Var4DEDA(
        model,
        obs,
        window=config.window,
        steps_per_obs=config.steps_per_obs,
        inflation=config.inflation,
        b_mode=config.b_mode,
        static_b=None if config.b_mode == "ensemble" else _static_b(config, model),
        hybrid_weight=config.hybrid_weight,
    )


@dataclass(frozen=True)
class MethodSpec:
    """A DA method in the registry.

    Attributes
    ----------
    name : str
        Command-line name.
    description : str
        One line for help texts.
    factory : callable
        ``(config, model, obs) -> Assimilator``.
    ensemble : bool
        Whether the method uses an ensemble (members, inflation); ``False`` runs one deterministic state.
    windowed : bool
        Whether the method assimilates a window of several observation times (``--window``).
    rotatable : bool
        Whether the method takes random rotations of its square-root transform (``--rotate``).
    """

    name: str
    description: str
    factory: Callable[[ExperimentConfig, Lorenz96, ObservationOperator], Assimilator]
    ensemble: bool = True
    windowed: bool = False
    rotatable: bool = False

    def min_members(self, config: ExperimentConfig) -> int:
        """Smallest usable ensemble (a static-B 4D-Var runs with one member)."""
        if not self.ensemble:
            return 1
        return 1 if self.windowed and config.b_mode == "static" else 2

    def build(self, config: ExperimentConfig) -> Assimilator:
        method = self.factory(config, config.model(), config.observations())
        if not self.windowed:
            method.steps_per_obs = config.steps_per_obs
        return method


#: Registry of the DA methods, by command-line name.
METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "etkf", "ETKF, symmetric square root, multiplicative inflation, no localisation", _etkf, rotatable=True
        ),
        MethodSpec("enkf", "stochastic EnKF with perturbed observations", _enkf),
        MethodSpec("4dvar", "4D-Var EDA: perturbed-observation 4D-Var per member", _var4d, windowed=True),
        MethodSpec("oi", "optimal interpolation (climatological prior, deterministic)", _oi, ensemble=False),
        MethodSpec("3dvar", "cycled 3D-Var, B = b_scale x climatological covariance", _var3d, ensemble=False),
    )
}


def method_spec(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available methods: {', '.join(METHODS)}.") from None


# ------------------------------------------------------------------------------------------------------------
# running


@dataclass
class ExperimentResult:
    """One experiment's configuration, cycling output and (optionally) EDA archive.

    Attributes
    ----------
    config : ExperimentConfig
        What was run.
    output : CycleOutput
        Scores (one dict per experiment of the batch), per-cycle series and timings.
    archive : EDAArchive or None
        Every cycle's members, truth and observations when asked for (``archive=True``).
    method : str
        ``repr`` of the method object.
    """

    config: ExperimentConfig
    output: CycleOutput
    archive: EDAArchive | None = None
    method: str = ""

    @property
    def cycles_per_second(self) -> float:
        return self.config.cycles / max(self.output.wall_seconds, 1e-12)

    def score(self, key: str) -> float:
        """Batch mean of a time-mean score, e.g. ``score("analysis_rmse")``."""
        return float(np.mean([e[key] for e in self.output.experiments]))

    def summary(self) -> dict[str, Any]:
        """The JSON summary (scores, spin-up, settings, timings, versions)."""
        from hybrid_eda.l96.report import run_summary

        return run_summary(self)


def run_experiment(
    config: ExperimentConfig, archive: bool = False, progress: bool = False, *, mask_diverged: bool = False
) -> ExperimentResult:
    """Run one experiment (or a batch) and score it.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment; with ``emulator`` set, the hybrid cycle (``none`` runs an ``n_real``-member EDA).
    archive : bool
        Keep every cycle's background and analysis members, the truth and the observations as an
        :class:`~hybrid_eda.l96.archive.EDAArchive` (``result.archive``; batch 1 only).
    progress : bool
        Show a progress bar when stderr is a terminal.
    mask_diverged : bool
        An experiment of the batch that blows up is recorded as lost (``inf`` scores, ``diverged_at_cycle``)
        instead of stopping the batch (the distributions over seeds of :func:`run_hybrid`, :func:`run_table`).

    Raises
    ------
    FilterDivergenceError
        When the state became non-finite (unless ``mask_diverged``); the message names the cycle and what to try.
    """
    spec = method_spec(config.method)
    members, hybrid = config.members, None
    if config.emulator is not None:
        emulator = get_member_source(config.emulator)
        if emulator.reduces_ensemble:
            members = int(config.n_real)  # type: ignore[arg-type]
        else:
            hybrid = HybridSetting(n_real=int(config.n_real), emulator=emulator)  # type: ignore[arg-type]
    if archive and config.batch != 1:
        raise ValueError("an EDA archive keeps a single experiment; drop --batch or --archive.")
    method = spec.build(config)
    settings = CycleSettings(
        cycles=config.cycles,
        spinup=config.spinup,
        members=members,
        batch=config.batch,
        seed=config.seed,
        init_spread=config.init_spread,
        keep_members=archive,
        progress=progress,
    )
    LOGGER.debug("cycling %s for %d cycles (%s)", method, config.cycles, config)
    output = run_cycles(
        config.model(), config.observations(), method, settings, hybrid=hybrid, mask_diverged=mask_diverged
    )
    result = ExperimentResult(config=config, output=output, method=repr(method))
    if archive:
        result.archive = _archive(result)
    return result


def _archive(result: ExperimentResult) -> EDAArchive:
    config, out = result.config, result.output
    cycle_steps = config.window * config.steps_per_obs
    settings = result.config.to_dict() | {"method_repr": result.method}
    return EDAArchive(
        truth=out.truth,  # type: ignore[arg-type]
        observations=out.observations,  # type: ignore[arg-type]
        obs_index=config.observations().index,
        background=out.background,  # type: ignore[arg-type]
        analysis=out.analysis,  # type: ignore[arg-type]
        settings=settings,
        cycle_hours=max(1, round(6 * cycle_steps * config.dt / 0.05)),
    )


def seed_distribution(result: ExperimentResult, key: str = "analysis_rmse") -> SeedDistribution:
    """A time-mean score of every experiment (seed) of a batch: median, band and the fraction that lost track."""
    return SeedDistribution.of([e[key] for e in result.output.experiments])


@dataclass
class HybridResult:
    """The full EDA and the hybrid cycle of the same seeds (same truths and observations), a batch each."""

    full: ExperimentResult
    hybrid: ExperimentResult

    def summary(self) -> dict[str, Any]:
        from hybrid_eda.l96.report import hybrid_summary

        return hybrid_summary(self)


def run_hybrid(config: ExperimentConfig, progress: bool = False) -> HybridResult:
    """Run the full N-member EDA and the hybrid cycle ``config.emulator`` on the same seeds.

    ``config.batch`` seeds ``seed .. seed + batch - 1`` run as one batch each; a seed that blows up counts as
    lost track instead of stopping the batch. Both outputs carry ``analysis_seconds``: the time of the N
    analyses (minimisations, for 4D-Var) of the full EDA and of the N_s real ones of the hybrid.
    """
    if config.emulator is None:
        raise ValueError("run_hybrid needs one emulator (config.emulator); use run_table for all of them.")
    full = run_experiment(config.full(), progress=progress, mask_diverged=True)
    return HybridResult(full=full, hybrid=run_experiment(config, progress=progress, mask_diverged=True))


#: What each kind of table row is, as tables and JSON label it.
ROW_KINDS = {"full": "full EDA", "none": "N_s-member EDA", "emulator": "emulator", "bound": "upper bound"}


@dataclass
class TableRow:
    """One row of the table: its best inflation (fewest seeds lost, then lowest median), every inflation's distribution.

    Attributes
    ----------
    emulator : str
        ``full`` (the N-member EDA), an emulator name, or an upper bound (``oracle``).
    kind : str
        A value of :data:`ROW_KINDS`: ``full EDA``, ``N_s-member EDA``, ``emulator`` or ``upper bound``.
    best : ExperimentResult or None
        The batch at the best inflation (None when every inflation failed).
    by_inflation : dict
        Inflation -> :class:`~hybrid_eda.l96.seed_stats.SeedDistribution` of the analysis RMSE.
    errors : dict
        Inflation -> message, for inflations whose whole batch failed (e.g. an unstable truth run).
    """

    emulator: str
    kind: str
    best: ExperimentResult | None
    by_inflation: dict[float, SeedDistribution]
    errors: dict[float, str]

    @property
    def best_inflation(self) -> float | None:
        return None if self.best is None else self.best.config.inflation

    @property
    def distribution(self) -> SeedDistribution | None:
        return None if self.best is None else self.by_inflation[self.best.config.inflation]


def _row_kind(name: str) -> str:
    if name == "full":
        return ROW_KINDS["full"]
    if name in BOUNDS:
        return ROW_KINDS["bound"]
    return ROW_KINDS["none"] if get_member_source(name).reduces_ensemble else ROW_KINDS["emulator"]


def _rank(d: SeedDistribution, inflation: float) -> tuple[float, float, float, float]:
    """Best inflation: fewest seeds lost, then lowest median, then lowest 90th percentile, then least inflation.

    Lost seeds come first: an inflation at which some seeds lose track is not a tuning anyone would run, even when
    the others score a slightly lower median (the full 20-member EDA of ``pan2026`` has its lowest median at 1.02,
    0.188, with 3 of 32 seeds lost; at 1.03 it scores 0.193 with none lost).
    """
    return (d.lost_fraction, d.median, d.high, inflation)


def run_table(
    config: ExperimentConfig,
    emulators: Sequence[str] | None = None,
    inflations: Sequence[float] | None = None,
    progress: bool = False,
) -> list[TableRow]:
    """The full EDA, every emulator and the upper bound side by side, each at its best inflation.

    Parameters
    ----------
    config : ExperimentConfig
        The hybrid setting (``n_real``, method, members, cycles); ``batch`` seeds ``seed .. seed + batch - 1``
        run per row and inflation; ``emulator`` is ignored.
    emulators : sequence of str, optional
        Emulator and bound names (default: every built-in emulator, then the ``oracle`` upper bound).
    inflations : sequence of float, optional
        The inflation grid tried per row (default: ``config.inflation`` only); the fewest seeds lost, then the
        lowest median over seeds, wins. A seed that blows up counts as lost track (``inf``); an inflation whose
        whole batch failed is recorded under ``errors``.
    """
    names = list(emulators) if emulators is not None else [*EMULATORS, *BOUNDS]
    infls = sorted({float(i) for i in (inflations or [config.inflation])})
    n_real = config.n_real if config.n_real is not None else config.get_preset().n_real
    rows = []
    for name in ["full", *names]:
        by_inflation: dict[float, SeedDistribution] = {}
        errors: dict[float, str] = {}
        best: ExperimentResult | None = None
        for infl in infls:
            if name == "full":
                cfg = replace(config, emulator=None, n_real=None, inflation=infl)
            else:
                cfg = replace(config, emulator=name, n_real=n_real, inflation=infl)
            try:
                res = run_experiment(cfg, progress=progress, mask_diverged=True)
            except FilterDivergenceError as err:
                errors[infl] = str(err)
                continue
            by_inflation[infl] = seed_distribution(res)
            if best is None or _rank(by_inflation[infl], infl) < _rank(
                by_inflation[best.config.inflation], best.config.inflation
            ):
                best = res
        rows.append(TableRow(emulator=name, kind=_row_kind(name), best=best, by_inflation=by_inflation, errors=errors))
    return rows
