"""What anemoi's metadata says of a checkpoint of one of our models with its own runner: open, check, read fields.

Shared by the runners' checkpoint readers (:mod:`.variance_checkpoint`, :mod:`.member_checkpoint`), which add
their model's own fields:

==================  ===================================================================================
what                where in ``anemoi-metadata/anemoi.json`` (and the supporting arrays)
==================  ===================================================================================
the model           ``config.model.model._target_``, checked against :attr:`ModelKind.targets` before
                    the pickled model is unpickled (:func:`open_checkpoint`)
GRIB identity       ``dataset.<name>.variables_metadata[variable]``: ``grib.paramId``/``shortName``,
                    ``mars.levelist``/``levtype`` (:func:`field_id`)
grid                supporting arrays ``<name>/latitudes``, ``longitudes``: rebuilt as the
                    reduced/octahedral Gaussian grid they are (:func:`dataset_grid`, :func:`grid_from_points`)
==================  ===================================================================================
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.synthetic.grids import GaussianGrid, make_grid, octahedral_pl

__all__ = [
    "FieldId",
    "ModelKind",
    "OpenedCheckpoint",
    "dataset_grid",
    "field_id",
    "grid_from_points",
    "open_checkpoint",
]

_NAME = re.compile(r"^(?P<param>.+)_(?P<level>\d+)$")


@dataclass(frozen=True)
class FieldId:
    """GRIB identity of one member field (and of its emulated std): ``t_137`` is ``t``, paramId 130, ml 137."""

    name: str
    param: str
    param_id: int
    level: int
    levtype: str = "ml"

    def __str__(self) -> str:
        return f"{self.param} (paramId {self.param_id}) {self.levtype} level {self.level}"


@dataclass(frozen=True)
class ModelKind:
    """A model with its own anemoi-inference runner, as the checkpoint checks name it.

    ``what`` in words (``"member generator"``), ``config`` the prefix of its training configs and output folders
    (``member_generator``: ``--config-name=member_generator_*``, runner ``member-generator``), ``targets`` the
    ``model.model._target_`` values it is trained as, ``other_runners`` where the other models' checkpoints go.
    """

    what: str
    config: str
    targets: tuple[str, ...]
    other_runners: str

    @property
    def runner(self) -> str:
        return self.config.replace("_", "-")


@dataclass(frozen=True)
class OpenedCheckpoint:
    """An inference checkpoint whose model is of the expected kind: its metadata, supporting arrays and model config."""

    path: Path
    metadata: dict[str, Any]
    arrays: dict[str, Any]
    model: dict[str, Any]  # config.model.model


def open_checkpoint(checkpoint: str | Path, kind: ModelKind) -> OpenedCheckpoint:
    """The metadata of ``checkpoint`` (a file, or a run folder: its newest ``inference-last.ckpt``) of a ``kind``.

    Nothing is unpickled: the model's class is read from the training config recorded in the metadata.

    Raises
    ------
    ValueError
        No file or folder there; not an anemoi inference checkpoint (e.g. ``last.ckpt``, the training checkpoint);
        a checkpoint of another model.
    """
    from anemoi.utils.checkpoints import load_metadata

    from hybrid_eda.inference.config import find_checkpoint

    if not Path(checkpoint).exists():
        raise ValueError(
            f"no checkpoint at {checkpoint}; give the inference-last.ckpt of a {kind.what} run, or its output folder "
            f"(output/{kind.config}_synthetic after anemoi-training train --config-name={kind.config}_synthetic)"
        )
    path = find_checkpoint(Path(checkpoint))
    try:
        metadata, arrays = load_metadata(str(path), supporting_arrays=True)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path} is not an anemoi inference checkpoint ({err}); give the inference-last.ckpt of a {kind.what} "
            "run (not last.ckpt, the training checkpoint)"
        ) from err
    model = ((metadata.get("config") or {}).get("model") or {}).get("model") or {}
    target = model.get("_target_", "?")
    if target not in kind.targets:
        raise ValueError(
            f"{path} is a checkpoint of {target}, not of the {kind.what} ({', '.join(kind.targets)}); the "
            f"{kind.runner} runner needs one trained with --config-name={kind.config}_* ({kind.other_runners})"
        )
    return OpenedCheckpoint(path=path, metadata=metadata, arrays=arrays, model=model)


def dataset_grid(path: Path, points: dict[str, Any], name: str) -> GaussianGrid:
    """The Gaussian grid of dataset ``name`` from its supporting arrays ``points`` (``latitudes``, ``longitudes``).

    Raises
    ------
    ValueError
        If the checkpoint ``path`` has no such arrays, or they are not a supported Gaussian grid.
    """
    if "latitudes" not in points or "longitudes" not in points:
        raise ValueError(f"{path} has no latitudes/longitudes of dataset '{name}' among its supporting arrays")
    return grid_from_points(points["latitudes"], points["longitudes"])


def grid_from_points(latitudes: np.ndarray, longitudes: np.ndarray) -> GaussianGrid:
    """The reduced or octahedral Gaussian grid whose points (ring by ring, north to south) these are.

    Raises
    ------
    ValueError
        If the points are not those of an ``O<n>`` or a supported ``N<n>`` grid.
    """
    lat = np.asarray(latitudes, dtype=np.float64)
    breaks = np.flatnonzero(np.abs(np.diff(lat)) > 1e-9) + 1  # first point of every ring but the first
    pl = np.diff(np.concatenate([[0], breaks, [lat.size]]))
    n = pl.size // 2
    octahedral = pl.size == 2 * n and n > 0 and np.array_equal(pl, octahedral_pl(n))
    try:
        grid = make_grid(f"{'O' if octahedral else 'N'}{n}")
    except ValueError as err:
        raise ValueError(f"the checkpoint's {lat.size} grid points are not a reduced Gaussian grid ({err})") from err
    lon_diff = (np.asarray(longitudes, dtype=np.float64) - grid.longitudes + 180.0) % 360.0 - 180.0
    if grid.npoints != lat.size or not np.allclose(grid.latitudes, lat, atol=1e-5) or np.abs(lon_diff).max() > 1e-5:
        raise ValueError(f"the checkpoint's {lat.size} grid points are not those of {grid.name} in GRIB order")
    return grid


def field_id(name: str, entry: dict[str, Any] | None) -> FieldId:
    """The GRIB identity of ``name`` from its ``variables_metadata`` entry (else from the name, ``param_level``)."""
    entry = entry or {}
    grib, mars = entry.get("grib", {}), entry.get("mars", {})
    match = _NAME.match(name)
    param = grib.get("shortName") or mars.get("param") or (match.group("param") if match else name)
    level = mars.get("levelist", match.group("level") if match else None)
    param_id = grib.get("paramId")
    if param_id is None or level is None:
        raise ValueError(
            f"the checkpoint's metadata has no GRIB paramId/level for {name}; train on a member store built from "
            "GRIB (recipes/eda-*-ml*.yaml) so that anemoi records them"
        )
    return FieldId(name=name, param=str(param), param_id=int(param_id), level=int(level),
                   levtype=str(mars.get("levtype", "ml")))  # fmt: skip
