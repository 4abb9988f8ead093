"""The synthetic EDA's observations as GRIB on the grid: ``grib/obs_{YYYYMMDDHH}.grib`` beside the members.

The writer stores each date's observations as ``truth/obs_{YYYYMMDDHH}.npz`` (``obs_index [p]``, ``latitudes``,
``longitudes [p]``, ``variables [F]`` named ``{param}_{level}``, ``values [F, p]``, ``std [F, p]``). For an
anemoi-datasets recipe they are also written as GRIB fields on the EDA's grid (:data:`gribio.OBSERVATIONS`: stream
``elda``, type ``gai``, model level ``levelist``, one copy per member number 1..N; the observed value ``y`` at the
observed points, missing, read as NaN, elsewhere)::

    values[F, p] at obs_index[p]  ->  field [G] per variable and level, NaN where unobserved  ->  N messages

Messages come variable by variable, level by level, member by member, like the other GRIB files. In a recipe::

    grib: {path: synthetic-eda/grib/obs_{date:strftime(%Y%m%d%H)}.grib, param: [t], levtype: ml}

and ``build: {allow_nans: true}`` (see ``recipes/synthetic-eda-generator-obs.yaml``). An EDA written before these
files existed gets them from its npz with :func:`add_observation_grib` (``hybrid-eda synthetic-obs-grib DIR``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hybrid_eda.synthetic.gribio import OBSERVATIONS, GribEncoder
from hybrid_eda.synthetic.grids import make_grid
from hybrid_eda.synthetic.variables import VARIABLES

__all__ = [
    "OBSERVATION_GRIB",
    "OBSERVATION_MARS",
    "add_observation_grib",
    "observation_fields",
    "observation_grib_path",
    "split_field_name",
    "write_observation_messages",
]

#: File name pattern of the observation GRIB, relative to the EDA folder (anemoi-datasets' date syntax).
OBSERVATION_GRIB = "grib/obs_{date:strftime(%Y%m%d%H)}.grib"
_NPZ = "truth/obs_{date:strftime(%Y%m%d%H)}.npz"
#: The observation messages' MARS keys, as the manifest lists them.
OBSERVATION_MARS = {"stream": OBSERVATIONS.stream, "type": OBSERVATIONS.mars_type, "step": 0, "number": "1..N",
                    "missing": "bitmap (NaN) where unobserved"}  # fmt: skip


def observation_grib_path(date: datetime) -> str:
    """``grib/obs_{YYYYMMDDHH}.grib`` of ``date`` (relative to the EDA folder)."""
    return OBSERVATION_GRIB.replace("{date:strftime(%Y%m%d%H)}", date.strftime("%Y%m%d%H"))


def split_field_name(name: str) -> tuple[str, int]:
    """``("t", 3)`` of the npz field name ``t_3``."""
    param, _, level = str(name).rpartition("_")
    if param not in VARIABLES or not level.isdigit():
        raise ValueError(f"observation field '{name}' is not '{{param}}_{{level}}' with param in {sorted(VARIABLES)}")
    return param, int(level)


def observation_fields(
    names: np.ndarray, values: np.ndarray, obs_index: np.ndarray, npoints: int
) -> Iterator[tuple[str, int, np.ndarray]]:
    """``(param, level, field [G])`` per observed field: ``values [F, p]`` at ``obs_index [p]``, NaN elsewhere."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(names), len(obs_index)):
        raise ValueError(f"values must be [F, p] = [{len(names)}, {len(obs_index)}], got {list(values.shape)}")
    for name, row in zip(names, values, strict=True):
        param, level = split_field_name(name)
        field = np.full(npoints, np.nan)
        field[obs_index] = row
        yield param, level, field


def write_observation_messages(
    encoder: GribEncoder,
    stream: BinaryIO,
    *,
    names: np.ndarray,
    values: np.ndarray,
    obs_index: np.ndarray,
    date: datetime,
) -> int:
    """Append one date's observations to ``stream`` (one message per field and member 1..N); returns the count."""
    count = 0
    for param, level, field in observation_fields(names, values, obs_index, encoder.grid.npoints):
        for number in range(1, encoder.members + 1):
            encoder.write(stream, field, kind=OBSERVATIONS, param_id=VARIABLES[param].param_id, level=level,
                          valid=date, number=number)  # fmt: skip
            count += 1
    return count


def add_observation_grib(
    eda_dir: str | os.PathLike, *, out_dir: str | os.PathLike | None = None, overwrite: bool = False
) -> tuple[Path, ...]:
    """Write ``grib/obs_{YYYYMMDDHH}.grib`` of every date of the synthetic EDA in ``eda_dir`` from its npz.

    Parameters
    ----------
    eda_dir : path
        A folder written by :func:`hybrid_eda.synthetic.writer.write_synthetic_eda` (``manifest.json``,
        ``truth/obs_*.npz``).
    out_dir : path, optional
        Where to write ``grib/obs_*.grib`` (default ``eda_dir``), e.g. a copy of a read-only EDA whose other files
        are links. Its ``manifest.json`` (if it is ``eda_dir``'s or a copy) gets the files and the pattern.
    overwrite : bool
        Replace observation GRIB files that exist.

    Returns
    -------
    tuple of Path
        The files written, one per date.

    Raises
    ------
    ValueError
        If ``eda_dir`` holds no synthetic EDA or an observation file is missing, or a GRIB file exists and
        ``overwrite`` is false.
    """
    root = Path(eda_dir)
    out = Path(out_dir) if out_dir is not None else root
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{root} holds no synthetic EDA (no manifest.json); write one with `hybrid-eda synthetic`.")
    manifest = json.loads(manifest_path.read_text())
    dates = [datetime.fromisoformat(d) for d in manifest["dates"]]
    targets = [out / observation_grib_path(d) for d in dates]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} exists ({len(existing)} observation GRIB files); pass overwrite to replace.")
    grid = make_grid(manifest["grid"]["name"])
    (out / "grib").mkdir(parents=True, exist_ok=True)
    bits = int(manifest["packing"]["bitsPerValue"])
    with GribEncoder(grid, int(manifest["members"]), bits) as encoder:
        for date, target in zip(dates, targets, strict=True):
            source = root / _NPZ.replace("{date:strftime(%Y%m%d%H)}", date.strftime("%Y%m%d%H"))
            if not source.is_file():
                raise ValueError(f"{source} is missing: the observations of {date.isoformat()} cannot be written.")
            with np.load(source) as obs:
                names, values, index = obs["variables"], obs["values"], obs["obs_index"]
            part = target.with_name(target.name + ".part")
            with open(part, "wb") as stream:
                write_observation_messages(encoder, stream, names=names, values=values, obs_index=index, date=date)
            os.replace(part, target)
    out_manifest = out / "manifest.json"
    if out_manifest.is_file() or out == root:
        data = json.loads(out_manifest.read_text()) if out_manifest.is_file() else manifest
        data.setdefault("patterns", {})["observation_grib"] = OBSERVATION_GRIB
        data.setdefault("files", {})["observation_grib"] = [observation_grib_path(d) for d in dates]
        data.setdefault("mars", {})["observations"] = OBSERVATION_MARS
        tmp = out / "manifest.json.part"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, out_manifest)  # replaces a link to a read-only manifest with a file
    return tuple(targets)
