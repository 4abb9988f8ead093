"""M member fields for the variance emulator, from GRIB files or an anemoi dataset, in the checkpoint's field order.

GRIB: any files of ensemble members on model levels, e.g. the backgrounds ``hybrid-eda synthetic`` writes (MARS
``stream=elda type=fc number=1..N levtype=ml``) or a MARS retrieval of an EDA. A message is one member field:
it is matched to the checkpoint's fields by ``paramId``, ``levtype`` and ``level``, to a member by
``perturbationNumber`` (MARS ``number``), to a date by its valid time (``validityDate``/``validityTime``);
messages of other parameters or levels are skipped. ``select`` narrows the messages by any other key (``type: fc``,
``stream: elda``) when the files hold several kinds.

Dataset: a member store (``eda-members.zarr``: ``[date, variable, member, grid]``) opened with
``anemoi.datasets.open_dataset``; ``number`` (1-based, as in anemoi-datasets and MARS) picks the members.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.inference.checkpoint_metadata import FieldId
from hybrid_eda.inference.variance_checkpoint import MIN_MEMBERS
from hybrid_eda.synthetic.grids import GaussianGrid

__all__ = ["MemberFields", "check_member_count", "dataset_members", "expand_path", "grib_members", "input_members"]

LOGGER = logging.getLogger(__name__)

_DATE_PATTERN = re.compile(r"\{date:strftime\(([^)]*)\)\}")


@dataclass(frozen=True)
class MemberFields:
    """The members of one date: ``values [M, G, F]`` (F in the checkpoint's field order), their numbers."""

    date: datetime
    numbers: tuple[int, ...]
    values: np.ndarray


def expand_path(pattern: str, date: datetime | None = None, **names: str) -> str:
    """``pattern`` with ``{date:strftime(%Y%m%d%H)}`` (anemoi-datasets' syntax) and ``{name}`` filled in."""
    if date is not None:
        pattern = _DATE_PATTERN.sub(lambda m: date.strftime(m.group(1)), pattern)
    elif _DATE_PATTERN.search(pattern):
        raise ValueError(f"the path {pattern} depends on the date; set `date:` in the config")
    for key, value in names.items():
        pattern = pattern.replace("{" + key + "}", value)
    return pattern


def check_member_count(count: int, numbers: Sequence[int], where: str) -> None:
    """The emulator needs a sample std: at least :data:`MIN_MEMBERS` members."""
    if count < MIN_MEMBERS:
        raise ValueError(
            f"{where} holds {count} member(s) (numbers {list(numbers)}); the variance emulator needs at least "
            f"{MIN_MEMBERS} (it pools the M members' sample std): give M >= {MIN_MEMBERS} members, "
            "e.g. number: [1, 2, 3, 4, 5]"
        )


def _grid_error(where: str, found: str, grid: GaussianGrid) -> ValueError:
    return ValueError(
        f"{where} is on {found}, the checkpoint on {grid.name} ({grid.npoints} points); give member fields on "
        f"{grid.name} (regrid them, or use a checkpoint trained on that grid)"
    )


def _missing_error(where: str, missing: list[FieldId], held: Iterable[str], extra: str = "") -> ValueError:
    shown = ", ".join(str(f) for f in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    held = sorted(set(held))
    return ValueError(
        f"{where} lacks {len(missing)} of the checkpoint's fields: {shown}{extra}; it holds "
        f"{', '.join(held[:12]) or 'none'}{' ...' if len(held) > 12 else ''}"
    )


def _names(held: set[tuple[int, str, int]]) -> list[str]:
    return [f"paramId {param_id} {levtype} {level}" for param_id, levtype, level in sorted(held)]


def grib_members(
    paths: Sequence[str | Path],
    fields: Sequence[FieldId],
    grid: GaussianGrid,
    *,
    numbers: Sequence[int] | None = None,
    dates: Sequence[datetime] | None = None,
    select: dict[str, Any] | None = None,
) -> list[MemberFields]:
    """Member fields from GRIB files, one :class:`MemberFields` per valid date (sorted; only ``dates`` if given).

    Raises
    ------
    ValueError
        For a file on another grid, a field without an ensemble number, two messages of one member field, a
        missing field, date or member, or fewer than two members.
    """
    from hybrid_eda._eccodes import eccodes

    where = ", ".join(str(p) for p in paths)
    index = {(f.param_id, f.levtype, f.level): i for i, f in enumerate(fields)}
    wanted_numbers = None if numbers is None else {int(n) for n in numbers}
    wanted_dates = None if dates is None else set(dates)
    select = {key: str(value) for key, value in (select or {}).items()}
    found: dict[datetime, dict[int, np.ndarray]] = {}  # date -> number -> [F, G]
    seen: dict[datetime, dict[int, np.ndarray]] = {}  # date -> number -> [F] bool
    held, other_dates = set(), set()
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"no GRIB file {path}; give the member files (e.g. synthetic-eda/grib/bg_*.grib)")
        checked = False  # the first member field of each file is checked against the grid in full
        with open(path, "rb") as stream:
            while (handle := eccodes.codes_grib_new_from_file(stream)) is not None:
                try:
                    if any(eccodes.codes_get_string(handle, k) != v for k, v in select.items()):
                        continue
                    key = (eccodes.codes_get_long(handle, "paramId"), eccodes.codes_get_string(handle, "levtype"),
                           eccodes.codes_get_long(handle, "level"))  # fmt: skip
                    held.add(key)
                    if key not in index:
                        continue
                    valid = datetime.strptime(
                        f"{eccodes.codes_get_long(handle, 'validityDate'):08d}"
                        f"{eccodes.codes_get_long(handle, 'validityTime'):04d}",
                        "%Y%m%d%H%M",
                    )
                    if wanted_dates is not None and valid not in wanted_dates:
                        other_dates.add(valid)
                        continue
                    if not eccodes.codes_is_defined(handle, "perturbationNumber"):
                        raise ValueError(
                            f"{path} holds {fields[index[key]]} at {valid:%Y-%m-%d %H:%M} without an ensemble number "
                            f"(type={eccodes.codes_get_string(handle, 'type')}); give ensemble members, or narrow "
                            "the messages with select: {type: fc}"
                        )
                    number = eccodes.codes_get_long(handle, "perturbationNumber")
                    if wanted_numbers is not None and number not in wanted_numbers:
                        continue
                    size = eccodes.codes_get_size(handle, "values")
                    if size != grid.npoints or (not checked and eccodes.codes_get_long(handle, "N") != grid.n):
                        kind = eccodes.codes_get_string(handle, "gridType")
                        raise _grid_error(path, f"a {kind} grid of {size} points", grid)
                    values = found.setdefault(valid, {}).setdefault(
                        number, np.empty((len(fields), grid.npoints), dtype=np.float32)
                    )  # [F, G]: one contiguous row per message
                    done = seen.setdefault(valid, {}).setdefault(number, np.zeros(len(fields), dtype=bool))
                    if done[index[key]]:
                        raise ValueError(
                            f"{where} holds {fields[index[key]]} of member {number} at {valid:%Y-%m-%d %H:%M} twice; "
                            "narrow the messages with select: (e.g. {type: fc} for backgrounds, {type: an})"
                        )
                    values[index[key]] = eccodes.codes_get_values(handle)
                    checked = True
                    done[index[key]] = True
                finally:
                    eccodes.codes_release(handle)
    if not found:
        if wanted_dates is not None and other_dates:
            listed = ", ".join(f"{d:%Y-%m-%dT%H}" for d in sorted(other_dates)[:6])
            raise ValueError(f"{where} holds no member fields valid at the requested date(s); it holds {listed}")
        missing = list(fields)
        raise _missing_error(where, missing, _names(held), extra=" (no member field of the checkpoint at all)")
    if wanted_dates is not None and (absent := sorted(wanted_dates - set(found))):
        raise ValueError(f"{where} holds no member fields valid at {', '.join(f'{d:%Y-%m-%dT%H}' for d in absent)}")
    result = []
    for valid in sorted(found):
        members = sorted(found[valid])
        if wanted_numbers is not None and (absent := sorted(wanted_numbers - set(members))):
            raise ValueError(f"{where} holds no member number {absent} at {valid:%Y-%m-%dT%H}; it holds {members}")
        for number in members:
            done = seen[valid][number]
            if not done.all():
                missing = [f for f, ok in zip(fields, done, strict=True) if not ok]
                raise _missing_error(f"{where} (member {number}, {valid:%Y-%m-%dT%H})", missing, _names(held))
        check_member_count(len(members), members, f"{where} at {valid:%Y-%m-%dT%H}")
        values = np.stack([found[valid].pop(n) for n in members]).transpose(0, 2, 1)  # [M, G, F] view of [M, F, G]
        result.append(MemberFields(date=valid, numbers=tuple(members), values=values))
    return result


def dataset_members(
    spec: str | dict[str, Any],
    fields: Sequence[FieldId],
    grid: GaussianGrid,
    *,
    numbers: Sequence[int] | None = None,
    dates: Sequence[datetime] | None = None,
) -> list[MemberFields]:
    """Member fields from an anemoi dataset (a path, or an ``open_dataset`` config), one entry per date.

    ``dates`` defaults to every date of the (possibly ``start``/``end``-selected) dataset.

    Raises
    ------
    ValueError
        For a dataset without an ensemble dimension, on another grid, lacking fields or dates, or with fewer
        than two members selected.
    """
    from anemoi.datasets import open_dataset

    config = dict(spec) if isinstance(spec, dict) else {"dataset": spec}
    source = config.pop("dataset", None) or config.pop("path", None)
    if source is None:
        raise ValueError("input: dataset: needs the store, e.g. dataset: eda-members.zarr")
    if isinstance(source, str | Path) and Path(source).exists():
        source = str(Path(source).resolve())
    if numbers is not None:
        config["number"] = [int(n) for n in numbers]
    ds = open_dataset({"dataset": source, **config})
    where = f"dataset {source}"
    ensemble = ds.shape[2]
    if ensemble == 1 and numbers is None:
        raise ValueError(
            f"{where} has no ensemble dimension (1 member per date, shape {ds.shape}): is it a std store "
            "(eda-std.zarr)? give the member store (eda-members.zarr)"
        )
    chosen = list(numbers) if numbers is not None else list(range(1, ensemble + 1))
    check_member_count(ensemble, chosen, where)
    names = list(ds.variables)
    missing = [f for f in fields if f.name not in names]
    if missing:
        raise _missing_error(where, missing, names)
    lat, lon = np.asarray(ds.latitudes), np.asarray(ds.longitudes)
    if lat.size != grid.npoints:
        from hybrid_eda.data.grids import grid_name_of_size

        raise _grid_error(where, f"{grid_name_of_size(lat.size)} ({lat.size} points)", grid)
    lon_diff = (lon - grid.longitudes + 180.0) % 360.0 - 180.0
    if not np.allclose(lat, grid.latitudes, atol=1e-5) or np.abs(lon_diff).max() > 1e-5:
        raise _grid_error(where, f"other points than the checkpoint's {grid.name}", grid)
    stored = [datetime.fromisoformat(str(d.astype("datetime64[s]"))) for d in ds.dates]
    wanted = list(stored) if dates is None else list(dates)
    if absent := [d for d in wanted if d not in stored]:
        raise ValueError(
            f"{where} has no date {', '.join(f'{d:%Y-%m-%dT%H}' for d in absent)}; it holds "
            f"{stored[0]:%Y-%m-%dT%H} .. {stored[-1]:%Y-%m-%dT%H}"
        )
    columns = [names.index(f.name) for f in fields]
    result = []
    for date in wanted:
        sample = np.asarray(ds[stored.index(date)])[columns]  # [F, M, G]
        values = np.ascontiguousarray(np.transpose(sample, (1, 2, 0)), dtype=np.float32)  # [M, G, F]
        result.append(MemberFields(date=date, numbers=tuple(chosen), values=values))
    return result


def input_members(
    kind: str,
    options: Any,
    grid: GaussianGrid,
    *,
    grib_fields: Sequence[FieldId],
    dataset_fields: Sequence[FieldId],
    reference_date: datetime | None,
    where: str = "input",
) -> list[MemberFields]:
    """The member fields of one runner input (``grib:`` or ``dataset:``), per date (``reference_date`` or all).

    ``options`` is the input's value: for ``dataset``, a path or ``{dataset: ..., number: [...], ...}`` (anemoi's
    ``open_dataset`` keys); for ``grib``, a path pattern, a list of them, or ``{path, number, select}``. Fields are
    matched by GRIB keys (``grib_fields``) or by the store's variable names (``dataset_fields``). ``where`` names
    the input in errors.
    """
    dates = None if reference_date is None else [reference_date]
    if kind == "dataset":
        spec = dict(options) if isinstance(options, dict) else {"dataset": options}
        numbers = spec.pop("number", None)
        return dataset_members(spec, dataset_fields, grid, numbers=numbers, dates=dates)
    options = {"path": options} if isinstance(options, str | list) else dict(options)
    unknown = set(options) - {"path", "number", "select"}
    if unknown or "path" not in options:
        raise ValueError(f"{where}: grib: takes path, number, select; got {sorted(options)}")
    patterns = options["path"] if isinstance(options["path"], list) else [options["path"]]
    paths = [expand_path(str(p), reference_date) for p in patterns]
    return grib_members(paths, grib_fields, grid, numbers=options.get("number"), dates=dates,
                        select=options.get("select"))  # fmt: skip
