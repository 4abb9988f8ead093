"""What the variance evaluation needs from an EDA, reduced to per-point statistics ``[date, grid, field]``.

The baselines and scores never see members, only the M-member std ``s_M``, the N-member std ``s_N`` (the
target) and, on synthetic data, what is known there: ``sigma_b``, the seen members' mean error ``d = m_M - t``
(for the floor) and the front mask (the "sharp features" of the synthetic ``sigma_b``). One date of 26 fields
at O32 is ~1 MB, so a hundred dates fit in memory while the members (N times more) never have to.

Three ways in:

* :func:`from_members`: member arrays ``[date, ens, grid, field]`` already in memory (tests, stores);
* :func:`from_synthetic`: stream the generator (:class:`~hybrid_eda.synthetic.eda.SyntheticEDA`) field by field,
  exact float64, no GRIB;
* :func:`from_synthetic_folder`: the same for a folder written by ``hybrid-eda synthetic``: its
  ``manifest.json`` holds the full config and the generator is deterministic, so the folder's EDA is
  regenerated instead of decoding ``N x fields`` GRIB messages per date (the values differ from the GRIB
  ones only by the 16-bit packing, ~1e-5 of each field's range).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from hybrid_eda.evaluation.floor import check_sizes

__all__ = ["EDAStatistics", "config_from_manifest", "from_members", "from_synthetic", "from_synthetic_folder"]

LOGGER = logging.getLogger(__name__)


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
    sigma_b: np.ndarray | None = None
    error_of_mean: np.ndarray | None = None
    sharp: np.ndarray | None = None
    dates: tuple[datetime, ...] = ()
    grid: str | None = None

    def __post_init__(self) -> None:
        shape = self.s_m.shape
        if len(shape) != 3 or self.s_n.shape != shape:
            raise ValueError(f"s_m and s_n must both be [date, grid, field], got {self.s_m.shape}, {self.s_n.shape}.")
        for name in ("sigma_b", "error_of_mean", "sharp"):
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
        arrays = {
            name: None if getattr(self, name) is None else getattr(self, name)[picked]
            for name in ("s_m", "s_n", "sigma_b", "error_of_mean", "sharp")
        }
        dates = tuple(self.dates[i] for i in picked) if self.dates else ()
        return dataclasses.replace(self, dates=dates, **arrays)


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
    """``members [..., N, G, F]`` -> ``s_m``, ``s_n`` (and the mean error) ``[..., G, F]``."""
    seen = members[..., :m, :, :]
    out = {
        "s_m": seen.std(axis=-3, ddof=1).astype(dtype),
        "s_n": members.std(axis=-3, ddof=1).astype(dtype),
    }
    if truth is not None:
        out["error_of_mean"] = (seen.mean(axis=-3) - truth).astype(dtype)
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


def from_synthetic(config, m: int, dates: Sequence[int] | None = None, *, dtype=np.float64) -> EDAStatistics:
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
        fields: dict[str, list[np.ndarray]] = {"s_m": [], "s_n": [], "error_of_mean": [], "sigma_b": [], "sharp": []}
        names = []
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
