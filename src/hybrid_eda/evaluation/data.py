"""What the variance evaluation needs from an EDA, reduced to per-point statistics ``[date, grid, field]``.

The baselines and scores never see members, only the M-member std ``s_M``, the N-member std ``s_N`` (the
target) and, on synthetic data, what is known there: ``sigma_b``, the seen members' mean error ``d = m_M - t``
(for the floor) and the front mask (the "sharp features" of the synthetic ``sigma_b``). One date of 26 fields
at O32 is ~1 MB, so a hundred dates fit in memory while the members (N times more) never have to.

Four ways in:

* :func:`from_members`: member arrays ``[date, ens, grid, field]`` already in memory (tests, stores);
* :func:`from_synthetic`: stream the generator (:class:`~hybrid_eda.synthetic.eda.SyntheticEDA`) field by field,
  exact float64, no GRIB;
* :func:`from_synthetic_folder`: the same for a folder written by ``hybrid-eda synthetic``: its
  ``manifest.json`` holds the full config and the generator is deterministic, so the folder's EDA is
  regenerated instead of decoding ``N x fields`` GRIB messages per date (the values differ from the GRIB
  ones only by the 16-bit packing, ~1e-5 of each field's range);
* :func:`from_stores`: an anemoi-datasets member store and its std store (built from the MARS recipes or their
  offline twins), read date by date; no truth, so no floor.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from hybrid_eda.evaluation.floor import check_sizes

__all__ = [
    "EDAStatistics",
    "config_from_manifest",
    "date_indices",
    "from_members",
    "from_stores",
    "from_synthetic",
    "from_synthetic_folder",
    "std_name",
]

LOGGER = logging.getLogger(__name__)

#: The ``[D, G, F]`` arrays of :class:`EDAStatistics` (``None`` where unknown).
_DATE_ARRAYS = ("s_m", "s_n", "mean_m", "sigma_b", "error_of_mean", "sharp")


@dataclass(frozen=True, eq=False)
class EDAStatistics:
    """Per-point statistics of an EDA on held-out or training dates.

    Attributes
    ----------
    variables : tuple of str
        ``{param}_{level}`` of the last axis.
    params, levels : tuple
        Parameter and model level of each field.
    groups : tuple of int
        Level group of each field (fields of one group share a level: pooling across variables uses it;
        single-level ``lnsp`` belongs to the lowest model level).
    latitudes, longitudes, area_weights : np.ndarray
        ``[G]`` degrees, degrees, quadrature weights (any positive scale).
    n, m : int
        Full and seen ensemble sizes.
    s_m, s_n : np.ndarray
        ``[D, G, F]`` sample std (``ddof=1``) of the ``M`` seen members and of all ``N``.
    mean_m : np.ndarray or None
        ``[D, G, F]`` mean of the ``M`` seen members (the flow an estimator may use: the synthetic fronts follow
        the temperature gradient of the truth, which the seen members' mean approximates).
    sigma_b, error_of_mean : np.ndarray or None
        ``[D, G, F]`` true background-error std and the seen members' mean minus the truth (synthetic only).
    sharp : np.ndarray or None
        ``[D, G, F]`` bool, points on the sharp features of ``sigma_b`` (synthetic fronts).
    dates : tuple of datetime, grid : str or None
    """

    variables: tuple[str, ...]
    params: tuple[str, ...]
    levels: tuple[int, ...]
    groups: tuple[int, ...]
    latitudes: np.ndarray
    longitudes: np.ndarray
    area_weights: np.ndarray
    n: int
    m: int
    s_m: np.ndarray
    s_n: np.ndarray
    mean_m: np.ndarray | None = None
    sigma_b: np.ndarray | None = None
    error_of_mean: np.ndarray | None = None
    sharp: np.ndarray | None = None
    dates: tuple[datetime, ...] = ()
    grid: str | None = None

    def __post_init__(self) -> None:
        shape = self.s_m.shape
        if len(shape) != 3 or self.s_n.shape != shape:
            raise ValueError(f"s_m and s_n must both be [date, grid, field], got {self.s_m.shape}, {self.s_n.shape}.")
        for name in ("mean_m", "sigma_b", "error_of_mean", "sharp"):
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {shape} like s_m.")
        if len(self.variables) != shape[2] or len(self.groups) != shape[2]:
            raise ValueError(f"{len(self.variables)} names and {len(self.groups)} groups for {shape[2]} fields.")
        if self.latitudes.shape != (shape[1],):
            raise ValueError(f"latitudes have shape {self.latitudes.shape}, expected ({shape[1]},) grid points.")

    @property
    def has_truth(self) -> bool:
        """Whether ``sigma_b`` and the mean error are known (synthetic data: the floor can be computed)."""
        return self.sigma_b is not None and self.error_of_mean is not None

    def take_dates(self, index: slice | Sequence[int] | np.ndarray) -> EDAStatistics:
        """The statistics of a subset of the dates."""
        picked = np.arange(self.s_m.shape[0])[index]
        arrays = {name: None if getattr(self, name) is None else getattr(self, name)[picked] for name in _DATE_ARRAYS}
        dates = tuple(self.dates[i] for i in picked) if self.dates else ()
        return dataclasses.replace(self, dates=dates, **arrays)

    def select_fields(self, variables: Sequence[str]) -> EDAStatistics:
        """The statistics of the fields ``variables`` (names of :attr:`variables`), in that order."""
        missing = [v for v in variables if v not in self.variables]
        if missing:
            raise ValueError(f"no field {', '.join(missing[:5])} here; choose among {', '.join(self.variables)}.")
        index = [self.variables.index(v) for v in variables]
        arrays = {
            name: None if getattr(self, name) is None else getattr(self, name)[..., index] for name in _DATE_ARRAYS
        }
        pick = {
            name: tuple(getattr(self, name)[i] for i in index) for name in ("variables", "params", "levels", "groups")
        }
        return dataclasses.replace(self, **pick, **arrays)


def _field_groups(params: Sequence[str], levels: Sequence[int], n_levels: int | None) -> tuple[int, ...]:
    from hybrid_eda.synthetic.variables import VARIABLES

    lowest = n_levels if n_levels is not None else max(levels)
    return tuple(
        lowest if p in VARIABLES and VARIABLES[p].single_level else int(k) for p, k in zip(params, levels, strict=True)
    )


def _split_name(name: str) -> tuple[str, int]:
    param, _, level = name.rpartition("_")
    if not param or not level.isdigit():
        return name, 0
    return param, int(level)


def _reduce(members: np.ndarray, m: int, truth: np.ndarray | None, dtype) -> dict[str, np.ndarray]:
    """``members [..., N, G, F]`` -> ``s_m``, ``s_n``, ``mean_m`` (and the mean error) ``[..., G, F]``."""
    seen = members[..., :m, :, :]
    mean = seen.mean(axis=-3)
    out = {
        "s_m": seen.std(axis=-3, ddof=1).astype(dtype),
        "s_n": members.std(axis=-3, ddof=1).astype(dtype),
        "mean_m": mean.astype(dtype),
    }
    if truth is not None:
        out["error_of_mean"] = (mean - truth).astype(dtype)
    return out


def from_members(
    members: np.ndarray,
    m: int,
    latitudes: np.ndarray,
    longitudes: np.ndarray,
    *,
    variables: Sequence[str] | None = None,
    truth: np.ndarray | None = None,
    sigma_b: np.ndarray | None = None,
    sharp: np.ndarray | None = None,
    area_weights: np.ndarray | None = None,
    grid: str | None = None,
    n_levels: int | None = None,
) -> EDAStatistics:
    """Statistics of member arrays ``members [D, N, G, F]``; the first ``m`` members are the seen ones.

    ``truth``, ``sigma_b`` and ``sharp`` are ``[D, G, F]`` (synthetic data) or ``None``.
    """
    members = np.asarray(members, dtype=np.float64)
    if members.ndim != 4:
        raise ValueError(f"members must be [date, ens, grid, field], got shape {members.shape}; add missing axes.")
    d, n, g, f = members.shape
    check_sizes(n, m)
    names = tuple(variables) if variables is not None else tuple(f"f{i}_1" for i in range(f))
    params, levels = zip(*(_split_name(v) for v in names), strict=True)
    stats = _reduce(members, m, None if truth is None else np.asarray(truth, dtype=np.float64), np.float64)
    return EDAStatistics(
        variables=names,
        params=tuple(params),
        levels=tuple(levels),
        groups=_field_groups(params, levels, n_levels),
        latitudes=np.asarray(latitudes, dtype=np.float64),
        longitudes=np.asarray(longitudes, dtype=np.float64),
        area_weights=np.ones(g) if area_weights is None else np.asarray(area_weights, dtype=np.float64),
        n=n,
        m=m,
        sigma_b=None if sigma_b is None else np.asarray(sigma_b, dtype=np.float64),
        sharp=None if sharp is None else np.asarray(sharp, dtype=bool),
        grid=grid,
        **stats,
    )


def from_synthetic(
    config,
    m: int,
    dates: Sequence[int] | None = None,
    *,
    dtype=np.float64,
    on_members: Callable[[np.ndarray, tuple[str, ...]], None] | None = None,
) -> EDAStatistics:
    """Stream the synthetic EDA of ``config`` (a :class:`~hybrid_eda.synthetic.config.SyntheticEDAConfig`).

    Parameters
    ----------
    config : SyntheticEDAConfig
        ``config.members`` is ``N``.
    m : int
        Seen members: the first ``m`` (member ``i`` does not depend on ``N``).
    dates : sequence of int, optional
        Date indices to keep (default all); the truth is integrated through every earlier date anyway.
    dtype : numpy dtype
        Storage of the ``[D, G, F]`` arrays (float32 halves the memory of long runs).
    on_members : callable, optional
        Called as ``on_members(members, variables)`` with the seen members ``[M, G, F]`` of every kept date, in
        order, and the names of their fields (e.g. to run the emulator on them while they stream past).

    Notes
    -----
    ``sharp`` is the generator's front mask ``> 0.5``: the narrow bands where ``sigma_b`` is raised by up to
    ``errors.front_factor`` (:meth:`~hybrid_eda.synthetic.errors.ErrorModel.front_mask`).
    """
    from hybrid_eda.synthetic.eda import SyntheticEDA
    from hybrid_eda.synthetic.errors import front_indicator
    from hybrid_eda.synthetic.variables import VARIABLES

    check_sizes(config.members, m)
    eda = SyntheticEDA(config)
    wanted = set(range(len(config.dates)) if dates is None else (int(i) for i in dates))
    if not wanted:
        raise ValueError("no dates selected; pass at least one date index.")
    per_date: list[dict[str, np.ndarray]] = []
    kept: list[datetime] = []
    names: list[str] = []
    started = time.perf_counter()
    for state in eda.states():
        if state.index not in wanted:
            if state.index > max(wanted):
                break
            continue
        fields: dict[str, list[np.ndarray]] = {key: [] for key in _DATE_ARRAYS}
        names = []
        seen: list[np.ndarray] = []
        for block in eda.fields(state):
            spec = VARIABLES[block.param]
            row = config.levels - 1 if spec.single_level else block.level - 1
            gradient = np.tensordot(eda.flow_weights[row], state.t_gradient, axes=(0, 0))  # [2, G]
            mask = eda.error_model.front_mask(front_indicator(gradient, eda.grid.area_weights))  # [G]
            stats = _reduce(block.backgrounds[:, :, None], m, block.truth[:, None], dtype)  # [G, 1] each
            for key, value in stats.items():
                fields[key].append(value[:, 0])
            fields["sigma_b"].append(block.sigma_b.astype(dtype))
            fields["sharp"].append(mask > 0.5)
            names.append(block.name)
            if on_members is not None:
                seen.append(block.backgrounds[:m])  # [M, G]
        if on_members is not None:
            on_members(np.stack(seen, axis=-1), tuple(names))  # [M, G, F]
        per_date.append({key: np.stack(value, axis=-1) for key, value in fields.items()})  # [G, F]
        kept.append(state.date)
        LOGGER.info("variance statistics of %s (%d fields)", state.date.isoformat(), len(names))
    LOGGER.info("%d dates in %.1f s", len(kept), time.perf_counter() - started)
    params, levels = zip(*(_split_name(v) for v in names), strict=True)
    return EDAStatistics(
        variables=tuple(names),
        params=tuple(params),
        levels=tuple(levels),
        groups=_field_groups(params, levels, config.levels),
        latitudes=np.asarray(eda.grid.latitudes, dtype=np.float64),
        longitudes=np.asarray(eda.grid.longitudes, dtype=np.float64),
        area_weights=np.asarray(eda.grid.area_weights, dtype=np.float64),
        n=config.members,
        m=m,
        dates=tuple(kept),
        grid=eda.grid.name,
        **{key: np.stack([d[key] for d in per_date]) for key in per_date[0]},  # [D, G, F]
    )


def config_from_manifest(manifest: dict):
    """The :class:`~hybrid_eda.synthetic.config.SyntheticEDAConfig` recorded in a synthetic EDA's manifest."""
    from hybrid_eda.synthetic.config import ErrorConfig, FlowConfig, ObservationConfig, SyntheticEDAConfig

    raw = dict(manifest["config"])
    sections = {"flow": FlowConfig, "errors": ErrorConfig, "observations": ObservationConfig}
    for name, kind in sections.items():
        if name in raw:
            raw[name] = kind(**raw[name])
    raw["variables"] = tuple(raw.get("variables", ()))
    return SyntheticEDAConfig(**raw)


def from_synthetic_folder(
    path: str | os.PathLike, m: int, dates: Sequence[int] | None = None, **kwargs
) -> EDAStatistics:
    """:func:`from_synthetic` for a folder written by ``hybrid-eda synthetic`` (regenerated from its manifest)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"{path} holds no manifest.json; write a synthetic EDA there with `hybrid-eda synthetic`.")
    return from_synthetic(config_from_manifest(json.loads(manifest.read_text())), m, dates, **kwargs)


def _open_store(path: str | os.PathLike, role: str):
    from anemoi.datasets import open_dataset

    from hybrid_eda.errors import UserInputError

    try:
        return open_dataset(str(path))
    except Exception as err:  # anemoi raises many kinds for a folder that is not a store
        raise UserInputError(
            f"cannot open the {role} {path} as an anemoi-datasets store ({type(err).__name__}: {err}); "
            "build it with `anemoi-datasets create RECIPE PATH` (recipes: `hybrid-eda recipes`)"
        ) from err


def _store_area_weights(ds, latitudes: np.ndarray, longitudes: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Quadrature weights and name of the store's Gaussian grid when we can build it, equal weights otherwise."""
    from hybrid_eda.synthetic.grids import make_grid

    name = getattr(ds, "resolution", None)
    try:
        grid = make_grid(str(name))
    except ValueError:
        grid = None
    if (
        grid is not None
        and grid.npoints == latitudes.size
        and np.allclose(grid.latitudes, latitudes, atol=1e-4)
        and np.allclose(np.mod(grid.longitudes, 360.0), np.mod(longitudes, 360.0), atol=1e-4)
    ):
        return np.asarray(grid.area_weights, dtype=np.float64), grid.name
    LOGGER.info("store grid %s is not one we can build: equal area weights", name)
    return np.ones(latitudes.size), None


def std_name(variable: str) -> str:
    """The std store's name of a member store's variable: ``t_137 -> t_std_137`` (the ensemble-statistics filter)."""
    param, level = _split_name(variable)
    return f"{param}_std_{level}" if variable != param else f"{variable}_std"


def date_indices(dates: Sequence[datetime], window: tuple[datetime, datetime] | None, what: str) -> np.ndarray:
    """Indices of the ``dates`` inside ``window = (first, last)`` (inclusive; ``None``: all of them).

    Raises
    ------
    UserInputError
        If no date falls inside the window (the message gives the dates there are).
    """
    from hybrid_eda.errors import UserInputError

    if window is None:
        return np.arange(len(dates))
    first, last = window
    picked = np.array([i for i, d in enumerate(dates) if first <= d <= last], dtype=int)
    if picked.size == 0:
        span = f"{dates[0].isoformat()} .. {dates[-1].isoformat()}" if len(dates) else "none"
        raise UserInputError(
            f"no date of {what} between {first.isoformat()} and {last.isoformat()} (it holds {span}); choose dates "
            "it holds"
        )
    return picked


def from_stores(
    members: str | os.PathLike,
    std: str | os.PathLike | None,
    m: int,
    *,
    on_members: Callable[[np.ndarray], None] | None = None,
    dtype=np.float64,
    max_block_bytes: float = 256 * 2**20,
    dates: tuple[datetime, datetime] | None = None,
    fields: Sequence[str] | None = None,
) -> EDAStatistics:
    """Statistics of an anemoi-datasets member store (``[date, variable, ensemble, grid]``) and its std store.

    ``s_M`` and the mean are those of the store's first ``m`` members; ``s_N`` is read from ``std`` (variables
    ``{param}_std_{level}``, as the ``ensemble-statistics`` filter writes them) or, without one, computed from all
    the store's members. No truth: the floor cannot be computed. ``on_members`` as in :func:`from_synthetic`.
    ``dates = (first, last)`` keeps the dates of that window (inclusive), e.g. the held-out months of a store
    built for a whole year. ``fields`` keeps the statistics of those variables only (``on_members`` still sees
    every field): at N80 x 137 levels x 6 variables one date of the three ``[G, F]`` float64 arrays is 0.6 GB.

    Raises
    ------
    UserInputError
        If a path is not a store, the member store has no ensemble dimension or fewer than ``m`` members, the
        two stores differ in grid, dates or variables, no date is in ``dates`` or a field is not in the store.
    """
    from hybrid_eda.errors import UserInputError

    ds = _open_store(members, "member store")
    n_dates, n_vars, n_ens, g = ds.shape
    if n_ens < 2:
        raise UserInputError(
            f"{members} has no ensemble dimension ({n_ens} member); give the member store (built from an "
            "eda-*-ml recipe), not a std store, as the members"
        )
    if m > n_ens:
        raise UserInputError(f"M = {m} but {members} holds only {n_ens} members; use --members {n_ens} or fewer")
    check_sizes(n_ens, m)
    names = tuple(ds.variables)
    if fields is not None:
        unknown = [f for f in fields if f not in names]
        if unknown or not fields:
            raise UserInputError(
                f"the member store {members} has no field {', '.join(unknown[:5]) or '(none given)'}; choose among "
                f"its variables, e.g. {', '.join(names[:4])}"
            )
    keep = np.arange(n_vars) if fields is None else np.array([names.index(f) for f in fields])  # [K] store indices
    column = np.full(n_vars, -1)
    column[keep] = np.arange(keep.size)  # store index -> column of the statistics (-1: not kept)
    latitudes, longitudes = np.asarray(ds.latitudes, np.float64), np.asarray(ds.longitudes, np.float64)
    target = None
    if std is not None:
        target = _open_store(std, "std store")
        if target.shape[3] != g or not (
            np.allclose(target.latitudes, latitudes, atol=1e-4)
            and np.allclose(target.longitudes, longitudes, atol=1e-4)
        ):
            raise UserInputError(
                f"the member store {members} ({getattr(ds, 'resolution', '?')}, {g} points) and the std store {std} "
                f"({getattr(target, 'resolution', '?')}, {target.shape[3]} points) are on different grids; build "
                "both from recipes of one grid"
            )
        if len(target.dates) != n_dates or np.any(np.asarray(target.dates) != np.asarray(ds.dates)):
            raise UserInputError(
                f"the member store {members} and the std store {std} hold different dates ({n_dates} from "
                f"{ds.dates[0]} and {len(target.dates)} from {target.dates[0]}); build both for the same dates"
            )
        missing = [std_name(v) for v in names if std_name(v) not in target.name_to_index]
        if missing:
            raise UserInputError(
                f"the std store {std} lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; build it "
                "from the std twin of the member store's recipe"
            )
        std_index = [target.name_to_index[std_name(v)] for v in names]
    all_dates = tuple(np.asarray(d).astype("datetime64[s]").item() for d in ds.dates)
    picked = date_indices(all_dates, dates, f"the member store {members}")
    read_members = n_ens if target is None else m
    block = max(1, int(max_block_bytes // (read_members * g * 4)))
    out = {key: np.empty((picked.size, g, keep.size), dtype) for key in ("s_m", "s_n", "mean_m")}
    started = time.perf_counter()
    for k, i in enumerate(picked):
        seen = np.empty((m, g, n_vars), np.float32) if on_members is not None else None
        for j0 in range(0, n_vars, block):
            j1 = min(n_vars, j0 + block)
            local = np.flatnonzero(column[j0:j1] >= 0)  # kept variables of this block
            if seen is None and local.size == 0:
                continue
            if seen is None:  # read only the kept variables
                values = np.asarray(ds[int(i), j0:j1, :read_members][local], dtype=np.float64)  # [v, E, G]
                local, dest = np.arange(local.size), column[j0 + local]
            else:
                values = np.asarray(ds[int(i), j0:j1, :read_members], dtype=np.float64)  # [v, E, G]
                dest = column[j0 + local]
                seen[..., j0:j1] = np.moveaxis(values[:, :m], 0, -1)
            part = values[local, :m]
            out["s_m"][k][:, dest] = part.std(axis=1, ddof=1).T
            out["mean_m"][k][:, dest] = part.mean(axis=1).T
            if target is None:
                out["s_n"][k][:, dest] = values[local].std(axis=1, ddof=1).T
        if target is not None:
            stored = np.asarray(target[int(i)], dtype=np.float64)  # [V_std, 1, G]
            out["s_n"][k] = stored[np.asarray(std_index)[keep], 0].T
        if on_members is not None:
            on_members(seen, names)
        LOGGER.info("store statistics of %s (%d/%d)", all_dates[i].isoformat(), k + 1, picked.size)
    LOGGER.info("%d dates of %s in %.1f s", picked.size, members, time.perf_counter() - started)
    if np.any(out["s_n"] <= 0):
        LOGGER.warning("s_N <= 0 at %d points (constant fields?)", int(np.sum(out["s_n"] <= 0)))
    area_weights, grid = _store_area_weights(ds, latitudes, longitudes)
    all_levels = [_split_name(v)[1] for v in names]
    names = tuple(names[j] for j in keep)
    params, levels = zip(*(_split_name(v) for v in names), strict=True)
    return EDAStatistics(
        variables=names,
        params=tuple(params),
        levels=tuple(levels),
        groups=_field_groups(params, levels, max(all_levels) if all_levels else None),
        latitudes=latitudes,
        longitudes=longitudes,
        area_weights=area_weights,
        n=n_ens,
        m=m,
        dates=tuple(all_dates[i] for i in picked),
        grid=grid or getattr(ds, "resolution", None),
        **out,
    )
