"""Every parameter of the synthetic global EDA, as frozen dataclasses checked on construction.

The defaults give a plausible regime (errors of ~0.5 K in mid-troposphere temperature, 450 km correlation
length, analysis errors ~30-50% smaller than background errors where observed); change them with
:func:`dataclasses.replace` (or ``hybrid-eda synthetic --set errors.front_factor=4``) to generate other regimes.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hybrid_eda.synthetic.grids import (
    OCTAHEDRAL_RANGE,
    REDUCED_GAUSSIAN_NUMBERS,
    octahedral_pl,
    supported_grids_text,
)
from hybrid_eda.synthetic.variables import VARIABLE_NAMES

__all__ = ["ErrorConfig", "FlowConfig", "ObservationConfig", "SyntheticEDAConfig", "config_with_overrides"]


def _positive(name: str, value: float, hint: str) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}; {hint}.")


@dataclass(frozen=True)
class FlowConfig:
    """The truth: smooth spherical-harmonic random fields drifting and evolving in time (see ``SpectralOU``).

    Parameters
    ----------
    vertical_modes : int
        Independent horizontal fields mixed with smooth vertical profiles per variable (vertical coherence).
    vertical_decay : float
        Weight ``(1 + j)^-decay`` of vertical mode ``j``: larger = deeper, more coherent structures.
    decorrelation_hours : float
        Memory of the largest scales; smaller scales forget faster (``l_tau``).
    l_tau : float
        Degree at which the memory has halved.
    superrotation_ms : float
        Eastward drift of every scale (m/s).
    rossby_waves : bool
        Add the westward Rossby-Haurwitz phase speed ``2 Omega / (l (l + 1))``.
    """

    vertical_modes: int = 4
    vertical_decay: float = 1.0
    decorrelation_hours: float = 72.0
    l_tau: float = 10.0
    superrotation_ms: float = 10.0
    rossby_waves: bool = True

    def __post_init__(self) -> None:
        if self.vertical_modes < 1:
            raise ValueError(f"flow.vertical_modes must be >= 1, got {self.vertical_modes}; use e.g. 4.")
        _positive("flow.decorrelation_hours", self.decorrelation_hours, "use e.g. 72 (three days)")
        _positive("flow.l_tau", self.l_tau, "use e.g. 10")


@dataclass(frozen=True)
class ErrorConfig:
    """The known background-error standard deviation ``sigma_b`` and the errors' correlations.

    ``log sigma_b = log S_v(p) + large-scale(lat) + log(front_factor) * front(x) + latent(x)`` where

    * ``S_v(p)`` is the variable's error profile (``variables.py``), relative to the truth for q and o3;
    * large-scale: ``hemispheric_contrast`` extra in the southern extratropics (fewer observations) and
      ``polar_boost * sin(lat)^4``;
    * front: a sharp logistic mask ``1 / (1 + exp(-(F - front_threshold) / front_width))`` of the normalised
      temperature-gradient magnitude ``F = |grad t'| / rms`` of the truth at that level (fronts, jets), so the
      error grows by up to ``front_factor`` in narrow flow-linked bands that smoothing cannot recover;
    * latent: an independent, slowly evolving large-scale field of std ``latent_amplitude`` (an observing
      system that changes, model error), *not* a function of the flow.

    Errors are ``sigma_b * e`` with ``e`` a unit-variance isotropic field of Gaussian correlation
    ``exp(-d^2 / 2 L^2)``, ``L = length_scale_km * length_factor(variable)``, and correlation
    ``exp(-|k - k'| / (L * vertical_length))`` between model levels ``k, k'`` (0 = uncorrelated levels).
    For q and o3, ``sigma_b <= relative_cap * truth`` (smooth cap) keeps members positive almost always.
    """

    length_scale_km: float = 450.0
    vertical_length: float = 0.03
    hemispheric_contrast: float = 0.4
    polar_boost: float = 0.3
    front_factor: float = 2.5
    front_threshold: float = 1.6
    front_width: float = 0.08
    latent_amplitude: float = 0.35
    latent_l0: float = 4.0
    latent_slope: float = 6.0
    latent_decorrelation_hours: float = 120.0
    latent_vertical_modes: int = 2
    relative_cap: float = 0.4

    def __post_init__(self) -> None:
        _positive("errors.length_scale_km", self.length_scale_km, "use e.g. 450")
        if self.vertical_length < 0:
            raise ValueError(
                f"errors.vertical_length must be >= 0, got {self.vertical_length}; 0 = independent levels."
            )
        _positive("errors.front_factor", self.front_factor, "use 1 for no fronts, e.g. 2.5 otherwise")
        _positive("errors.front_width", self.front_width, "use e.g. 0.08")
        if self.latent_amplitude < 0:
            raise ValueError(f"errors.latent_amplitude must be >= 0, got {self.latent_amplitude}; use e.g. 0.35.")
        _positive("errors.latent_decorrelation_hours", self.latent_decorrelation_hours, "use e.g. 120")
        _positive("errors.latent_l0", self.latent_l0, "use e.g. 4")
        if self.latent_vertical_modes < 1:
            raise ValueError(f"errors.latent_vertical_modes must be >= 1, got {self.latent_vertical_modes}.")
        _positive("errors.relative_cap", self.relative_cap, "use e.g. 0.4")


@dataclass(frozen=True)
class ObservationConfig:
    """Observations of the truth at grid points, with uneven coverage, assimilated level by level.

    Parameters
    ----------
    count : int
        Observation locations per date (profiles: the same locations at every level and variable), drawn
        without replacement with probability proportional to the coverage density.
    land_fraction : float
        Fraction of grid points on the static synthetic "land" (dense coverage).
    ocean_density : float
        Coverage density over "ocean" relative to land.
    southern_density : float
        Extra factor south of 30 S.
    error_ratio : float
        Observation-error std relative to the unmodulated background-error scale ``S_v(p)``.
    """

    count: int = 1200
    land_fraction: float = 0.3
    ocean_density: float = 0.15
    southern_density: float = 0.5
    error_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"observations.count must be >= 0, got {self.count}; use e.g. 1200 (0 = no analysis).")
        if not 0.0 < self.land_fraction < 1.0:
            raise ValueError(f"observations.land_fraction must be in (0, 1), got {self.land_fraction}; use e.g. 0.3.")
        _positive("observations.ocean_density", self.ocean_density, "use e.g. 0.15 (relative to land)")
        _positive("observations.southern_density", self.southern_density, "use e.g. 0.5")
        _positive("observations.error_ratio", self.error_ratio, "use e.g. 1.0")


_GRID_NAME = re.compile(r"^([NO])(\d+)$")


def _as_datetime(value: datetime | str, name: str) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an ISO date; use e.g. 2023-01-01T00 or 2023-01-01T06:00.") from None


@dataclass(frozen=True)
class SyntheticEDAConfig:
    """A synthetic global EDA: grid, levels, members, dates, seed and the physics of truth, errors and analysis.

    Parameters
    ----------
    grid : str
        ``"O32"``, ``"N32"``, ``"N80"``, ``"N128"``, ``"O96"``, ... (see ``grids.supported_grids_text``).
    levels : int
        Number of model levels ``L`` (levels ``1 .. L``, 1 at the top).
    members : int
        EDA size ``N`` (>= 2). Member ``i`` does not depend on ``N``: the first ``M`` members of an ``N``-member
        EDA are the ``M``-member EDA with the same seed.
    start, end : datetime or str
        First and last analysis date (ISO strings are accepted); dates are ``start + k * frequency_hours``.
    frequency_hours : int
        Hours between dates.
    seed : int
        Seed of every random draw (truth, observations, members).
    variables : tuple of str
        Subset of ``("vo", "d", "t", "lnsp", "q", "o3")`` to write (the truth is the same whatever the subset).
    background_step_hours : int
        Backgrounds are written as forecasts started ``background_step_hours`` before the date, with that step,
        so that their validity time is the date (0 = the date itself with step 0).
    bits_per_value : int
        GRIB simple-packing precision (16: ~1.5e-5 of each field's range; up to 32).
    threads : int
        Threads for the spherical-harmonic transforms.
    """

    grid: str = "O32"
    levels: int = 3
    members: int = 5
    start: datetime = datetime(2023, 1, 1, 0)
    end: datetime = datetime(2023, 1, 1, 18)
    frequency_hours: int = 6
    seed: int = 0
    variables: tuple[str, ...] = VARIABLE_NAMES
    background_step_hours: int = 6
    bits_per_value: int = 16
    threads: int = 1
    flow: FlowConfig = field(default_factory=FlowConfig)
    errors: ErrorConfig = field(default_factory=ErrorConfig)
    observations: ObservationConfig = field(default_factory=ObservationConfig)

    def __post_init__(self) -> None:
        grid = str(self.grid).strip().upper()
        match = _GRID_NAME.match(grid)
        n = int(match.group(2)) if match else -1
        known = match is not None and (
            (match.group(1) == "O" and OCTAHEDRAL_RANGE[0] <= n <= OCTAHEDRAL_RANGE[1])
            or (match.group(1) == "N" and n in REDUCED_GAUSSIAN_NUMBERS)
        )
        if not known:
            raise ValueError(f"unknown grid {self.grid!r}; supported grids: {supported_grids_text()}.")
        object.__setattr__(self, "grid", grid)
        if int(self.levels) < 1:
            raise ValueError(f"levels must be >= 1 (model levels 1..L), got {self.levels}; use e.g. 3 or 137.")
        if int(self.members) < 2:
            raise ValueError(
                f"members must be >= 2 for an ensemble, got {self.members}; use e.g. 5 for tests or 50 like ECMWF."
            )
        start, end = _as_datetime(self.start, "start"), _as_datetime(self.end, "end")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if end < start:
            raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}; swap them.")
        if int(self.frequency_hours) < 1:
            raise ValueError(f"frequency_hours must be >= 1, got {self.frequency_hours}; use e.g. 6.")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}.")
        variables = (self.variables,) if isinstance(self.variables, str) else tuple(self.variables)
        unknown = [v for v in variables if v not in VARIABLE_NAMES]
        if unknown or not variables or len(set(variables)) != len(variables):
            raise ValueError(
                f"variables must be distinct names among {', '.join(VARIABLE_NAMES)}, got {', '.join(variables)}."
            )
        object.__setattr__(self, "variables", variables)
        if self.background_step_hours < 0:
            raise ValueError(f"background_step_hours must be >= 0, got {self.background_step_hours}; use e.g. 6.")
        if not 8 <= int(self.bits_per_value) <= 32:
            raise ValueError(f"bits_per_value must be in 8..32, got {self.bits_per_value}; use 16 or 24.")
        if int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}.")
        npoints = self.npoints
        if self.observations.count > npoints // 2:
            raise ValueError(
                f"observations.count = {self.observations.count} is more than half the {npoints} points of "
                f"{grid}; use at most {npoints // 2} (e.g. {min(1200, npoints // 4)})."
            )

    @property
    def npoints(self) -> int:
        """Grid points ``G`` (without building the grid for octahedral ones)."""
        kind, n = self.grid[0], int(self.grid[1:])
        if kind == "O":
            return int(octahedral_pl(n).sum())
        from hybrid_eda.synthetic.grids import reduced_gaussian_pl

        return int(reduced_gaussian_pl(n).sum())

    @property
    def dates(self) -> tuple[datetime, ...]:
        """Analysis dates ``start, start + frequency, ... <= end``."""
        step = timedelta(hours=int(self.frequency_hours))
        count = int((self.end - self.start) / step) + 1
        return tuple(self.start + k * step for k in range(count))

    def date_index(self, date: datetime | str | int) -> int:
        """Position of ``date`` (a datetime, ISO string or index) among :attr:`dates`."""
        if isinstance(date, int):
            index = date
        else:
            when = _as_datetime(date, "date")
            dates = self.dates
            if when not in dates:
                raise ValueError(
                    f"date {when.isoformat()} is not one of the EDA dates {dates[0].isoformat()} .. "
                    f"{dates[-1].isoformat()} every {self.frequency_hours} h."
                )
            index = dates.index(when)
        if not 0 <= index < len(self.dates):
            raise ValueError(f"date index {index} out of range; the EDA has {len(self.dates)} dates.")
        return index

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (dates as ISO strings)."""
        out = dataclasses.asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        out["variables"] = list(self.variables)
        return out


def _convert(text: str, kind: Any) -> Any:
    if kind in (bool, "bool"):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if kind in (int, "int"):
        return int(text)
    if kind in (float, "float"):
        return float(text)
    return text


def config_with_overrides(config: SyntheticEDAConfig, overrides: list[str] | tuple[str, ...]) -> SyntheticEDAConfig:
    """Apply ``section.key=value`` overrides (``errors.front_factor=4``, ``observations.count=500``).

    Raises
    ------
    ValueError
        For malformed items or unknown keys; the message lists the valid keys.
    """
    sections = {"flow": FlowConfig, "errors": ErrorConfig, "observations": ObservationConfig}
    updates: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in sections:
            raise ValueError(
                f"override {item!r} must look like SECTION.KEY=VALUE with SECTION in {', '.join(sections)}."
            )
        hints = typing.get_type_hints(sections[section])
        if name not in hints:
            raise ValueError(f"unknown key {key!r}; valid keys of {section}: {', '.join(hints)}.")
        try:
            updates[section][name] = _convert(value.strip(), hints[name])
        except ValueError as err:
            raise ValueError(f"override {item!r}: {err}.") from None
    replaced = {s: dataclasses.replace(getattr(config, s), **u) for s, u in updates.items() if u}
    return dataclasses.replace(config, **replaced) if replaced else config
