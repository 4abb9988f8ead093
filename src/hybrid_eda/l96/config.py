"""The typed, frozen configuration of a Lorenz-96 experiment and the one place its defaults are resolved.

    config = ExperimentConfig.from_preset("sakov2008", members=20, inflation=1.02, cycles=10_000, seed=3)
    config.members, config.window, config.rotate      # 20, 1, True: the ETKF's rules filled in

Every setting has one definition and one default, in :class:`~hybrid_eda.l96.presets.ExperimentSettings`;
:func:`resolve_settings` applies the method-dependent rules of :data:`hybrid_eda.l96.methods.METHODS`, and
:meth:`ExperimentConfig._check` refuses bad input with a ``ValueError`` that names the fix. Running a config is
:func:`hybrid_eda.l96.experiment.run_experiment`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from hybrid_eda.l96.cycle import check_memory, memory_parts
from hybrid_eda.l96.emulators import get_member_source
from hybrid_eda.l96.methods import method_spec
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.presets import TWIN_FIELDS, ExpectedScore, ExperimentSettings, Preset, get_preset
from hybrid_eda.l96.spread_relaxation import check_rtps
from hybrid_eda.l96.var4d_control import B_MODES

__all__ = ["SETTING_FIELDS", "ExperimentConfig", "resolve_settings"]

LOGGER = logging.getLogger(__name__)


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
b_mode, hybrid_weight, b_scale, n_real, init_spread, rotate, rtps
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
    rtps: float | None = None

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
        check_rtps(self.rtps)  # type: ignore[arg-type]
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
            reason = get_member_source(self.emulator).unsupported(self)
            if reason is not None:
                raise ValueError(reason)
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
        """Estimated peak memory of ``run_experiment(config)`` in bytes, by array (see ``cycle.memory_parts``)."""
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

    The one place where defaults depend on the method (:data:`~hybrid_eda.l96.methods.METHODS`):

    * ``window``: the preset's for a windowed method (4D-Var), 1 for the filters;
    * ``rotate``: the preset's for a rotatable method (the ETKF), off for the others;
    * ``spinup``: the preset's, at most a fifth of the cycles;
    * ``members``, ``inflation``, ``rtps``: 1, 1.0 and 0.0 for a deterministic method (OI, 3D-Var), whatever was
      given;
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
        values["members"], values["inflation"], values["rtps"] = 1, 1.0, 0.0
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
