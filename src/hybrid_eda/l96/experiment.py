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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from hybrid_eda.l96.archive import EDAArchive
from hybrid_eda.l96.base import Assimilator, FilterDivergenceError
from hybrid_eda.l96.cycle import CycleOutput, CycleSettings, HybridSetting, run_cycles
from hybrid_eda.l96.emulators import EMULATORS, get_emulator
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.presets import ExpectedScore, Preset, get_preset

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
]

LOGGER = logging.getLogger(__name__)

B_MODES = ("ensemble", "static", "hybrid")


# ------------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one Lorenz-96 experiment (or a batch of independent ones).

    Build it with :meth:`from_preset`, which fills every field the caller leaves out from the named preset.

    Parameters
    ----------
    preset : str
        Preset the twin experiment and the expected scores come from (``sakov2008``, ``pan2026``).
    method : str
        DA method, a key of :data:`METHODS` (``etkf``, ``enkf``, ``4dvar``, ``oi``, ``3dvar``).
    members : int
        Ensemble size N (forced to 1 for the deterministic ``oi`` and ``3dvar``).
    inflation : float
        Multiplicative inflation of the background anomalies (>= 1).
    cycles, spinup : int
        Cycles run, and the first ones left out of the scores (None: the preset's spin-up, at most a fifth
        of the cycles).
    seed : int
        Seed of every random stream (truth, observations, initial ensemble, method, emulator).
    batch : int
        Number of independent experiments advanced together in one vectorised call.
    n, forcing, dt : int, float, float
        Lorenz-96 state size, forcing and RK4 time step.
    obs_every, obs_std : int, float
        Observe every ``obs_every``-th variable with error std ``obs_std``.
    steps_per_obs : int
        Model steps between observation times.
    window : int
        Observation times per 4D-Var window (1 for the filters).
    b_mode, hybrid_weight, b_scale : str, float, float or None
        4D-Var background covariance (``ensemble``, ``static``, ``hybrid``), the ensemble weight of a hybrid B,
        and the scale of the climatological covariance used as static B (3D-Var and 4D-Var; None = 0.02).
    n_real, emulator : int or None, str or None
        Hybrid cycle: members ``0 .. n_real-1`` are real, the rest come from the emulator (None = full EDA).
    init_spread : float
        Standard deviation of the initial ensemble around the initial truth.
    rotate : bool or None
        Rotate the analysis anomalies by a random mean-preserving orthogonal matrix every cycle (DAPPER's
        ``rot=True``; ``ETKF(rotate=True)``). None: the preset's choice for the ETKF
        (on: the published numbers use it), off for the other methods.
    """

    preset: str = "sakov2008"
    method: str = "etkf"
    members: int = 20
    inflation: float = 1.02
    cycles: int = 10_000
    spinup: int | None = None
    seed: int = 0
    batch: int = 1
    n: int = 40
    forcing: float = 8.0
    dt: float = 0.05
    obs_every: int = 1
    obs_std: float = 1.0
    steps_per_obs: int = 1
    window: int = 1
    b_mode: str = "ensemble"
    hybrid_weight: float = 0.5
    b_scale: float | None = None
    n_real: int | None = None
    emulator: str | None = None
    init_spread: float = 1.0
    rotate: bool | None = None

    def __post_init__(self) -> None:
        preset = get_preset(self.preset)
        if self.spinup is None:
            object.__setattr__(self, "spinup", min(preset.spinup, self.cycles // 5))
        if self.rotate is None:
            object.__setattr__(self, "rotate", preset.rotate and self.method == "etkf")
        spec = method_spec(self.method)
        if spec.ensemble and self.members < spec.min_members(self):
            raise ValueError(
                f"{self.method} needs at least {spec.min_members(self)} members to estimate the background "
                f"covariance, got --members {self.members}; use e.g. --members 20 (N < 14 diverges at n=40 "
                "without localisation)."
            )
        if self.members < 1:
            raise ValueError(f"members must be at least 1, got {self.members}.")
        if not self.inflation >= 1.0:
            raise ValueError(
                f"inflation must be >= 1 (it multiplies the background anomalies; 1 = none), got {self.inflation}; "
                "use e.g. --inflation 1.02."
            )
        if self.cycles < 1:
            raise ValueError(f"cycles must be at least 1, got {self.cycles}; use e.g. --cycles 10000.")
        if not 0 <= self.spinup < self.cycles:  # type: ignore[operator]
            raise ValueError(
                f"spin-up must be between 0 and cycles - 1 = {self.cycles - 1}, got {self.spinup}; "
                "lower --spinup or run more --cycles."
            )
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1 (independent experiments), got {self.batch}.")
        if self.window < 1 or self.steps_per_obs < 1:
            raise ValueError(
                f"window and steps_per_obs must be positive, got window={self.window}, "
                f"steps_per_obs={self.steps_per_obs}."
            )
        if self.window > 1 and not spec.windowed:
            raise ValueError(
                f"--window applies to 4D-Var only; {self.method} assimilates one observation time per cycle "
                "(drop --window or use --method 4dvar)."
            )
        if self.b_mode not in B_MODES:
            raise ValueError(f"unknown --b-mode {self.b_mode!r}; use one of {', '.join(B_MODES)}.")
        if not 0.0 <= self.hybrid_weight <= 1.0:
            raise ValueError(f"hybrid_weight must lie in [0, 1], got {self.hybrid_weight}.")
        if self.b_scale is not None and not self.b_scale > 0:
            raise ValueError(f"b_scale must be positive, got {self.b_scale}; use e.g. 0.02.")
        if self.emulator is not None:
            get_emulator(self.emulator)
            if self.n_real is None:
                raise ValueError("a hybrid cycle needs --n-real, the number of real members (e.g. 10).")
            if not 1 <= self.n_real < self.members:
                raise ValueError(
                    f"--n-real must be between 1 and --members - 1 = {self.members - 1}, got {self.n_real}: "
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

    @classmethod
    def from_preset(cls, preset: str = "sakov2008", **overrides: Any) -> ExperimentConfig:
        """A config with the preset's defaults for every field not in ``overrides`` (``None`` = not given).

        Deterministic methods (``oi``, ``3dvar``) get one member and no inflation whatever was asked.
        """
        p = get_preset(preset)
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown experiment settings {sorted(unknown)}; known: {sorted(names)}.")
        given = {k: v for k, v in overrides.items() if v is not None}
        values: dict[str, Any] = {
            "preset": p.name,
            "method": p.method,
            "members": p.members,
            "inflation": p.inflation,
            "cycles": p.cycles,
            "n": p.n,
            "forcing": p.forcing,
            "dt": p.dt,
            "obs_every": p.obs_every,
            "obs_std": p.obs_std,
            "steps_per_obs": p.steps_per_obs,
        }
        values.update(given)
        spec = method_spec(values["method"])
        if "window" not in given:
            values["window"] = p.window if spec.windowed else 1
        if "b_mode" not in given and spec.windowed:
            values["b_mode"] = p.b_mode
        if not spec.ensemble:
            if given.get("members", 1) != 1 or given.get("inflation", 1.0) != 1.0:
                LOGGER.info("%s is deterministic: running one member without inflation.", spec.name)
            values["members"], values["inflation"] = 1, 1.0
            values.setdefault("rotate", False)
        if values.get("emulator") is not None and "n_real" not in given:
            values["n_real"] = p.n_real
        return cls(**values)

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
        """The preset's expected score for this setting, if the twin experiment is the preset's own."""
        p = self.get_preset()
        same_twin = (self.n, self.forcing, self.dt, self.obs_every, self.obs_std, self.steps_per_obs) == (
            p.n,
            p.forcing,
            p.dt,
            p.obs_every,
            p.obs_std,
            p.steps_per_obs,
        )
        default_window = p.window if method_spec(self.method).windowed else 1
        default_rotate = p.rotate and self.method == "etkf"
        if not same_twin or self.window != default_window or self.rotate != default_rotate:
            return None
        return p.expected_rmse(self.method, self.members, self.inflation, self.emulator)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------------------
# method registry


@functools.lru_cache(maxsize=8)
def climatology(model: Lorenz96):  # noqa: ANN201 - returns filters.Climatology
    """Climatological mean and covariance of ``model`` from a fixed-seed free run (cached per model)."""
    from hybrid_eda.l96.filters import Climatology

    return Climatology.from_free_run(model, np.random.default_rng(20080101))


def _static_b(config: ExperimentConfig, model: Lorenz96) -> np.ndarray:
    return (config.b_scale if config.b_scale is not None else 0.02) * climatology(model).cov


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

    scale = config.b_scale if config.b_scale is not None else 0.02
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


def run_experiment(config: ExperimentConfig, archive: bool = False, progress: bool = False) -> ExperimentResult:
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

    Raises
    ------
    FilterDivergenceError
        When the state became non-finite; the message names the cycle and what to try.
    """
    spec = method_spec(config.method)
    members, hybrid = config.members, None
    if config.emulator is not None:
        emulator = get_emulator(config.emulator)
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
    output = run_cycles(config.model(), config.observations(), method, settings, hybrid=hybrid)
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


@dataclass
class HybridResult:
    """The full EDA and the hybrid cycle of the same experiment (same truth, observations and seed)."""

    full: ExperimentResult
    hybrid: ExperimentResult

    def summary(self) -> dict[str, Any]:
        from hybrid_eda.l96.report import hybrid_summary

        return hybrid_summary(self)


def run_hybrid(config: ExperimentConfig, progress: bool = False) -> HybridResult:
    """Run the full N-member EDA and the hybrid cycle ``config.emulator`` with the same seed."""
    if config.emulator is None:
        raise ValueError("run_hybrid needs one emulator (config.emulator); use run_table for all of them.")
    full = run_experiment(config.full(), progress=progress)
    return HybridResult(full=full, hybrid=run_experiment(config, progress=progress))


@dataclass
class TableRow:
    """One emulator in the table: its best run over the inflations tried, and every inflation's score."""

    emulator: str
    best: ExperimentResult | None
    by_inflation: dict[float, float]
    errors: dict[float, str]

    @property
    def best_inflation(self) -> float | None:
        return None if self.best is None else self.best.config.inflation


def run_table(
    config: ExperimentConfig,
    emulators: Sequence[str] | None = None,
    inflations: Sequence[float] | None = None,
    progress: bool = False,
) -> list[TableRow]:
    """All emulators side by side, each at its best inflation; the first row is the full EDA.

    Parameters
    ----------
    config : ExperimentConfig
        The hybrid setting (``n_real``, method, members, cycles, seed); ``emulator`` is ignored.
    emulators : sequence of str, optional
        Emulator names (default: all built-in ones).
    inflations : sequence of float, optional
        Inflations to try per emulator (default: ``config.inflation`` only); the lowest analysis RMSE wins.
        A run whose state became non-finite is recorded as an error for that inflation.
    """
    names = list(emulators) if emulators is not None else list(EMULATORS)
    infls = sorted({float(i) for i in (inflations or [config.inflation])})
    n_real = config.n_real if config.n_real is not None else config.get_preset().n_real
    rows = []
    for name in ["full", *names]:
        by_inflation: dict[float, float] = {}
        errors: dict[float, str] = {}
        best: ExperimentResult | None = None
        for infl in infls:
            if name == "full":
                cfg = replace(config, emulator=None, n_real=None, inflation=infl)
            else:
                cfg = replace(config, emulator=name, n_real=n_real, inflation=infl)
            try:
                res = run_experiment(cfg, progress=progress)
            except FilterDivergenceError as err:
                errors[infl] = str(err)
                continue
            by_inflation[infl] = res.score("analysis_rmse")
            if best is None or by_inflation[infl] < best.score("analysis_rmse"):
                best = res
        rows.append(TableRow(emulator=name, best=best, by_inflation=by_inflation, errors=errors))
    return rows
