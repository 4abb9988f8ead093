"""N-member ensemble statistics computed once, while a store is built.

The variance emulator learns the spread of the full EDA (N members) from a few of its members (M of N). Reading
N = 50 members per training sample at N80 x 137 levels x 6 variables (686 fields: lnsp has one level) is about
4.9 GB a date in float32, so the target
(the N-member sample standard deviation, ddof=1) is computed once, when the target store is built, by the
anemoi-transform filter ``ensemble-statistics`` defined here::

    input:
      pipe:
        - join:                       # any source that yields all N members (mars, grib, ...)
            - mars: {..., number: 1/to/50, param: [vo, d, t, q, o3], levelist: 1/to/137}
            - mars: {..., number: 1/to/50, param: lnsp, levelist: 1}
        - ensemble-statistics:
            statistics: [std]         # any of std, var, mean, logstd
            members: 50               # optional: fail unless every field has exactly 50 members

The filter groups the incoming fields by everything but their member ``number`` (date, param, level, ...), then reads
one member at a time and updates Welford's running mean and sum of squared deviations, so at most one field per
member group is in memory however many members there are (fields from GRIB files and MARS retrievals are read
lazily). It returns one field per statistic and group, without a ``number`` (so the target store has an ensemble
dimension of 1), with ``param`` renamed by ``param_format`` (default ``"{param}_{statistic}"``): the variable
``t_137`` of the member store becomes ``t_std_137`` in the target store.

Bad input stops the build with an error that names the field and the date: fields without a member number (no
ensemble dimension), fewer than two members, member counts that differ between fields or from ``members``, a
member given twice, fields of different sizes, NaNs (unless ``nan_policy: propagate``), and zero spread (unless
``zero_spread: floor`` with a positive ``std_floor``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anemoi.transform.fields import new_field_from_numpy, new_fieldlist_from_list
from anemoi.transform.filter import Filter

__all__ = ["STATISTICS", "EnsembleStatistics", "EnsembleStatisticsConfig", "WelfordAccumulator"]

LOGGER = logging.getLogger(__name__)

#: Statistics the filter can write, with the MARS ``type`` given to their fields
#: (``es``: ensemble standard deviation, ``em``: ensemble mean; the others have no MARS type of their own).
STATISTICS: dict[str, str] = {"std": "es", "var": "es", "logstd": "es", "mean": "em"}

#: Metadata that identify a field apart from its member ``number``: fields equal in all of them are one group.
_GROUP_KEYS = (
    "valid_datetime",
    "param",
    "levtype",
    "levelist",
    "date",
    "time",
    "step",
    "type",
    "stream",
    "class",
    "expver",
    "domain",
)
_ZERO_SPREAD_POLICIES = ("error", "floor")
_NAN_POLICIES = ("error", "propagate")


class WelfordAccumulator:
    """Running mean and sum of squared deviations of a stream of equally shaped arrays (Welford, 1962).

    After ``n`` updates with ``x_1 .. x_n``: ``mean = sum(x_i) / n`` and ``m2 = sum((x_i - mean)**2)``, so the
    sample variance is ``m2 / (n - ddof)``. The update ``mean += (x - mean) / n; m2 += (x - mean_old) * (x - mean)``
    is numerically stable (no cancellation of large sums of squares) and accumulates in float64.

    Parameters
    ----------
    shape : tuple of int
        Shape of every array added, e.g. ``(grid,)``.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = 0
        self.mean = np.zeros(shape, dtype=np.float64)  # [*shape]
        self.m2 = np.zeros(shape, dtype=np.float64)  # [*shape]

    def add(self, values: np.ndarray) -> None:
        """Add one member ``values`` (same shape as the accumulator)."""
        if values.shape != self.mean.shape:
            raise ValueError(f"expected an array of shape {self.mean.shape}, got {values.shape}")
        self.count += 1
        delta = values - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (values - self.mean)

    def variance(self, ddof: int = 1) -> np.ndarray:
        """Sample variance ``m2 / (count - ddof)``."""
        if self.count <= ddof:
            raise ValueError(f"a variance with ddof={ddof} needs at least {ddof + 1} members, got {self.count}")
        return self.m2 / (self.count - ddof)


@dataclass(frozen=True)
class EnsembleStatisticsConfig:
    """Settings of the ``ensemble-statistics`` filter (the keys of its recipe entry).

    Attributes
    ----------
    statistics : tuple of str
        Statistics to write, any of ``std`` (sample standard deviation), ``var`` (sample variance), ``mean`` and
        ``logstd`` (natural log of ``std``).
    ddof : int
        Delta degrees of freedom of ``std``/``var``/``logstd``: 1 gives the unbiased sample variance.
    members : int or None
        Expected number of members N of every field; ``None`` accepts any number as long as every field has the same.
    param_format : str
        Name of the output ``param``; ``{param}`` is the input param and ``{statistic}`` the statistic.
    zero_spread : str
        ``error`` stops the build where all members agree at some grid point; ``floor`` replaces spreads below
        ``std_floor`` (per variable: a float, or a dict from input param to float) by ``std_floor``.
    std_floor : float or dict or None
        Smallest standard deviation kept with ``zero_spread: floor``.
    nan_policy : str
        ``error`` stops the build at the first NaN member value; ``propagate`` gives NaN statistics there (the recipe
        must then set ``build.allow_nans``).
    """

    statistics: tuple[str, ...] = ("std",)
    ddof: int = 1
    members: int | None = None
    param_format: str = "{param}_{statistic}"
    zero_spread: str = "error"
    std_floor: float | dict[str, float] | None = None
    nan_policy: str = "error"
    _floors: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stats = (self.statistics,) if isinstance(self.statistics, str) else tuple(self.statistics)
        object.__setattr__(self, "statistics", stats)
        unknown = [s for s in stats if s not in STATISTICS]
        if unknown or not stats:
            raise ValueError(
                f"ensemble-statistics: unknown statistics {unknown or stats}; choose from {sorted(STATISTICS)}, "
                "e.g. statistics: [std]"
            )
        if len(set(stats)) != len(stats):
            raise ValueError(f"ensemble-statistics: statistics {list(stats)} lists one twice; list each once")
        if not isinstance(self.ddof, int) or self.ddof < 0:
            raise ValueError(f"ensemble-statistics: ddof must be a non-negative integer, got {self.ddof!r}")
        if self.members is not None and (not isinstance(self.members, int) or self.members < self.ddof + 1):
            raise ValueError(
                f"ensemble-statistics: members must be an integer >= {self.ddof + 1} (ddof + 1), got {self.members!r}"
            )
        if "{statistic}" not in self.param_format and len(stats) > 1:
            raise ValueError(
                f"ensemble-statistics: param_format {self.param_format!r} has no '{{statistic}}', so the "
                f"statistics {list(stats)} would get the same name; use e.g. '{{param}}_{{statistic}}'"
            )
        if self.zero_spread not in _ZERO_SPREAD_POLICIES:
            raise ValueError(
                f"ensemble-statistics: zero_spread must be one of {_ZERO_SPREAD_POLICIES}, got {self.zero_spread!r}"
            )
        if self.nan_policy not in _NAN_POLICIES:
            raise ValueError(f"ensemble-statistics: nan_policy must be one of {_NAN_POLICIES}, got {self.nan_policy!r}")
        if self.zero_spread == "floor":
            floors = self.std_floor if isinstance(self.std_floor, dict) else {"*": self.std_floor}
            bad = {k: v for k, v in floors.items() if not isinstance(v, (int, float)) or not v > 0}
            if self.std_floor is None or bad:
                raise ValueError(
                    "ensemble-statistics: zero_spread: floor needs a positive std_floor (a number, or a mapping "
                    f"from param to number), got {self.std_floor!r}"
                )
            object.__setattr__(self, "_floors", {k: float(v) for k, v in floors.items()})
        elif self.std_floor is not None:
            raise ValueError("ensemble-statistics: std_floor is only used with zero_spread: floor; set both or neither")

    def floor_for(self, param: str) -> float | None:
        """The ``std_floor`` of ``param`` (``None`` when spreads are not floored)."""
        if not self._floors:
            return None
        if param in self._floors:
            return self._floors[param]
        if "*" in self._floors:
            return self._floors["*"]
        raise ValueError(
            f"ensemble-statistics: std_floor has no entry for param {param!r}; add it (or a single number for all)"
        )


@dataclass
class _Group:
    """The members of one field: same date, param, level, ... and different ``number``."""

    label: str
    param: str
    members: list[tuple[int, int]]  # (number, index in the input field list)


class EnsembleStatistics(Filter):
    """anemoi-transform filter ``ensemble-statistics``: N-member statistics as single-member fields.

    See the module docstring for the recipe syntax. Keyword arguments are those of
    :class:`EnsembleStatisticsConfig`.
    """

    def __init__(self, **config: Any) -> None:
        known = {k for k in EnsembleStatisticsConfig.__dataclass_fields__ if not k.startswith("_")}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"ensemble-statistics: unknown option(s) {unknown}; known options are {sorted(known)}")
        self.config = EnsembleStatisticsConfig(**config)

    def __repr__(self) -> str:
        return f"EnsembleStatistics({self.config})"

    def forward(self, data: Any) -> Any:
        """Replace the members in ``data`` (an earthkit FieldList) by their statistics."""
        groups = self._group(data)
        result = []
        for group in groups:
            result.extend(self._statistics_of(group, data))
        LOGGER.info(
            "ensemble-statistics: %d fields of %d members -> %d fields %s",
            len(groups),
            len(groups[0].members),
            len(result),
            list(self.config.statistics),
        )
        return new_fieldlist_from_list(result)

    # -- grouping and checks (metadata only, no values read) ------------------------------------------------------
    def _group(self, data: Iterable[Any]) -> list[_Group]:
        groups: dict[tuple, _Group] = {}
        for index, fld in enumerate(data):
            values = dict(zip(_GROUP_KEYS, fld.metadata(*_GROUP_KEYS, default=None), strict=True))
            number = fld.metadata("number", default=None)
            param = str(values["param"])
            label = _describe(param, values)
            if number is None:
                raise ValueError(
                    f"ensemble-statistics: field {label} has no member number, so the input has no ensemble "
                    "dimension; give the source all N members (e.g. number: 1/to/50 in a mars request)"
                )
            key = tuple(str(v) for v in values.values())
            group = groups.setdefault(key, _Group(label=label, param=param, members=[]))
            group.members.append((int(number), index))
        if not groups:
            raise ValueError("ensemble-statistics: the source gave no fields; check its dates, paths and selection")
        for group in groups.values():
            numbers = [n for n, _ in group.members]
            duplicated = sorted({n for n in numbers if numbers.count(n) > 1})
            if duplicated:
                raise ValueError(
                    f"ensemble-statistics: field {group.label} has member(s) {duplicated} more than once; "
                    "check that the source does not read the same file or request twice"
                )
            group.members.sort()
        return self._check_counts(list(groups.values()))

    def _check_counts(self, groups: list[_Group]) -> list[_Group]:
        cfg = self.config
        counts = {len(g.members) for g in groups}
        expected = cfg.members if cfg.members is not None else max(counts)
        for group in groups:
            count = len(group.members)
            if count < cfg.ddof + 1:
                raise ValueError(
                    f"ensemble-statistics: field {group.label} has {count} member(s); a spread needs at least "
                    f"{cfg.ddof + 1}. Give the source all N members (e.g. number: 1/to/50)"
                )
            if count != expected:
                raise ValueError(
                    f"ensemble-statistics: field {group.label} has {count} members "
                    f"({_numbers(group)}) but {expected} were expected"
                    + (" (members: in the recipe)" if cfg.members is not None else " (as for other fields)")
                    + "; a member is missing from the input"
                )
        return groups

    # -- statistics of one group (reads one member at a time) ----------------------------------------------------
    def _statistics_of(self, group: _Group, data: Any) -> list[Any]:
        cfg = self.config
        first = data[group.members[0][1]]
        acc: WelfordAccumulator | None = None
        for number, index in group.members:
            values = np.asarray(data[index].to_numpy(flatten=True), dtype=np.float64)  # [grid]
            if acc is None:
                acc = WelfordAccumulator(values.shape)
            elif values.shape != acc.mean.shape:
                raise ValueError(
                    f"ensemble-statistics: member {number} of field {group.label} has {values.size} grid points, "
                    f"member {group.members[0][0]} has {acc.mean.size}; all members must be on the same grid"
                )
            if cfg.nan_policy == "error" and not np.all(np.isfinite(values)):
                bad = int(np.count_nonzero(~np.isfinite(values)))
                raise ValueError(
                    f"ensemble-statistics: member {number} of field {group.label} has {bad} NaN/inf value(s) of "
                    f"{values.size}; fix the input, or set nan_policy: propagate (and build.allow_nans) to keep them"
                )
            acc.add(values)
        assert acc is not None  # groups have >= ddof + 1 members (checked above)
        outputs = {}
        if any(s in cfg.statistics for s in ("std", "var", "logstd")):
            std = self._checked_std(group, acc)  # [grid]
            outputs.update(std=std, var=std**2, logstd=np.log(std))
        outputs["mean"] = acc.mean
        return [
            new_field_from_numpy(
                outputs[stat].astype(np.float32),
                template=first,
                param=cfg.param_format.format(param=group.param, statistic=stat),
                number=None,
                type=STATISTICS[stat],
            )
            for stat in cfg.statistics
        ]

    def _checked_std(self, group: _Group, acc: WelfordAccumulator) -> np.ndarray:
        cfg = self.config
        with np.errstate(invalid="ignore"):
            std = np.sqrt(np.maximum(acc.variance(cfg.ddof), 0.0))  # [grid]
        floor = cfg.floor_for(group.param)
        if floor is not None:
            return np.where(std < floor, floor, std)  # NaN (propagated) stays NaN
        zero = std == 0.0
        if np.any(zero):
            count = int(np.count_nonzero(zero))
            where = "everywhere" if count == std.size else f"at {count} of {std.size} grid points"
            raise ValueError(
                f"ensemble-statistics: the {len(group.members)} members of field {group.label} are identical {where} "
                "(zero spread), so std is 0 and log std is -inf. Check the input (the same member read twice?), or "
                "set zero_spread: floor with std_floor: <smallest std> in the ensemble-statistics filter"
            )
        return std


def _describe(param: str, values: dict[str, Any]) -> str:
    level = values.get("levelist")
    where = param + (f" level {level}" if level is not None and not _is_nan(level) else "")
    levtype = values.get("levtype")
    return f"'{where}'" + (f" ({levtype})" if levtype else "") + f" at {values.get('valid_datetime')}"


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _numbers(group: _Group) -> str:
    numbers = [n for n, _ in group.members]
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"numbers {numbers[0]}..{numbers[-1]}"
    return f"numbers {numbers}"
