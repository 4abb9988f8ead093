"""What the variance emulator's runner needs from a checkpoint, read from anemoi's own metadata.

An ``inference-*.ckpt`` written by ``anemoi-training`` for ``--config-name=variance_emulator_*`` already holds
everything (nothing is added at training time):

==================  ===================================================================================
what                where in ``anemoi-metadata/anemoi.json`` (and the supporting arrays)
==================  ===================================================================================
the model           ``config.model.model._target_`` (``hybrid_eda.models.VarianceEmulator``), checked
                    before the pickled model is unpickled
variables           the predictor's ``variables`` (``t_137``, ...), one output field each
GRIB identity       ``dataset.<members>.variables_metadata[name]``: ``grib.paramId``/``shortName``,
                    ``mars.levelist``/``levtype`` (from the GRIB the member store was built from)
grid                supporting arrays ``<members>/latitudes``, ``longitudes``: rebuilt here as the
                    reduced/octahedral Gaussian grid they are (ring sizes from the latitude runs)
M of training       ``config.dataloader.members_per_sample``
family              the loaded predictor's ``family`` (``lognormal`` or ``normal``)
==================  ===================================================================================
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.synthetic.grids import GaussianGrid, make_grid, octahedral_pl

__all__ = ["MIN_MEMBERS", "FieldId", "VarianceCheckpoint", "grid_from_points", "read_variance_checkpoint"]

LOGGER = logging.getLogger(__name__)

#: The emulator's set pooling needs a sample std, so at least two members.
MIN_MEMBERS = 2
_MODEL_TARGET = "hybrid_eda.models.VarianceEmulator"
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
class VarianceCheckpoint:
    """An inference checkpoint of the variance emulator and what its metadata says.

    ``predictor`` is the loaded :class:`~hybrid_eda.models.VariancePredictor`; ``fields`` are its variables in its
    own field order, ``grid`` the Gaussian grid of the member store it was trained on.
    """

    path: Path
    predictor: Any
    fields: tuple[FieldId, ...]
    grid: GaussianGrid
    training_members: int | None
    run_id: str | None

    @property
    def family(self) -> str:
        return self.predictor.family


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


def _find(path: Path) -> Path:
    """``path`` itself, or the newest ``inference-last.ckpt`` below the run folder ``path``."""
    from hybrid_eda.inference.config import find_checkpoint

    if not path.exists():
        raise ValueError(
            f"no checkpoint at {path}; give the inference-last.ckpt of a variance emulator run, or its output folder "
            "(output/variance_emulator_synthetic after anemoi-training train --config-name=variance_emulator_synthetic)"
        )
    return find_checkpoint(path)


def _metadata(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from anemoi.utils.checkpoints import load_metadata

    try:
        metadata, arrays = load_metadata(str(path), supporting_arrays=True)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path} is not an anemoi inference checkpoint ({err}); give the inference-last.ckpt of a "
            "variance emulator run (anemoi-training train --config-name=variance_emulator_synthetic)"
        ) from err
    return metadata, arrays


def _field(name: str, entry: dict[str, Any] | None) -> FieldId:
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


def read_variance_checkpoint(checkpoint: str | Path) -> VarianceCheckpoint:
    """Check, load and describe a variance emulator checkpoint (a file, or a run folder: its newest one).

    Raises
    ------
    ValueError
        If it is not an anemoi inference checkpoint, is the checkpoint of another model (e.g. ``l96_forecaster``),
        or lacks the metadata the runner needs.
    """
    from hybrid_eda.models import load_variance_predictor

    path = _find(Path(checkpoint))
    metadata, arrays = _metadata(path)
    config = metadata.get("config") or {}
    model = (config.get("model") or {}).get("model") or {}
    target = model.get("_target_", "?")
    if target != _MODEL_TARGET:
        raise ValueError(
            f"{path} is a checkpoint of {target}, not of the variance emulator ({_MODEL_TARGET}); the "
            "variance-emulator runner needs one trained with --config-name=variance_emulator_* (use runner: default "
            "for other models)"
        )
    predictor = load_variance_predictor(path)
    members = model.get("input_dataset", "members")
    described = (metadata.get("dataset") or {}).get(members) or {}
    variables_metadata = described.get("variables_metadata") or {}
    fields = tuple(_field(name, variables_metadata.get(name)) for name in predictor.variables)
    points = arrays.get(members) or {}
    if "latitudes" not in points or "longitudes" not in points:
        raise ValueError(f"{path} has no latitudes/longitudes of dataset '{members}' among its supporting arrays")
    grid = grid_from_points(points["latitudes"], points["longitudes"])
    trained_m = (config.get("dataloader") or {}).get("members_per_sample")
    LOGGER.info("variance emulator %s: %d fields on %s, %s, trained on M=%s", path, len(fields), grid.name,
                predictor.family, trained_m)  # fmt: skip
    return VarianceCheckpoint(path=path, predictor=predictor, fields=fields, grid=grid,
                              training_members=None if trained_m is None else int(trained_m),
                              run_id=metadata.get("run_id"))  # fmt: skip
