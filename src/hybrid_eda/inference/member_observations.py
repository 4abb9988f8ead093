"""Observations on the grid from GRIB for the member generator's runner (``input: observations: {grib: ...}``).

::

    obs GRIB (one message per field, any member number; missing = bitmap)  ->  values [G, F], NaN unobserved

Fields are matched to the checkpoint's by GRIB identity (paramId, levtype, level), as the backgrounds are; the
observations of a field are the same for every member (the synthetic EDA writes one copy per member), so the first
message of a field at the date is used. A field the file does not hold is unobserved (all NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from hybrid_eda.inference.checkpoint_metadata import FieldId
from hybrid_eda.synthetic.grids import GaussianGrid

__all__ = ["grib_observations"]


def grib_observations(path: str | Path, fields: Sequence[FieldId], grid: GaussianGrid, date: datetime) -> np.ndarray:
    """``[G, F]`` observations of ``date`` from the GRIB file ``path`` in the order of ``fields`` (NaN unobserved).

    Raises
    ------
    ValueError
        No such file, a message on another grid, or no field of ``fields`` valid at ``date``.
    """
    from hybrid_eda._eccodes import eccodes

    if not Path(path).is_file():
        raise ValueError(f"no GRIB file {path} for input: observations (e.g. synthetic-eda/grib/obs_*.grib)")
    index = {(f.param_id, f.levtype, f.level): i for i, f in enumerate(fields)}
    out = np.full((grid.npoints, len(fields)), np.nan)
    found = np.zeros(len(fields), dtype=bool)
    with open(path, "rb") as stream:
        while (handle := eccodes.codes_grib_new_from_file(stream)) is not None:
            try:
                key = (eccodes.codes_get_long(handle, "paramId"), eccodes.codes_get_string(handle, "levtype"),
                       eccodes.codes_get_long(handle, "level"))  # fmt: skip
                if key not in index or found[index[key]]:
                    continue
                valid = datetime.strptime(
                    f"{eccodes.codes_get_long(handle, 'validityDate'):08d}"
                    f"{eccodes.codes_get_long(handle, 'validityTime'):04d}",
                    "%Y%m%d%H%M",
                )
                if valid != date:
                    continue
                values = np.asarray(eccodes.codes_get_values(handle), dtype=np.float64)
                if values.size != grid.npoints:
                    raise ValueError(f"{path} is on a grid of {values.size} points, the checkpoint on {grid.name} "
                                     f"({grid.npoints}); give observations on {grid.name}")  # fmt: skip
                if eccodes.codes_get_long(handle, "bitmapPresent"):
                    values[values == eccodes.codes_get_double(handle, "missingValue")] = np.nan
                out[:, index[key]] = values
                found[index[key]] = True
            finally:
                eccodes.codes_release(handle)
    if not found.any():
        raise ValueError(f"{path} holds no observation of the checkpoint's fields valid at {date:%Y-%m-%dT%H}")
    return out
