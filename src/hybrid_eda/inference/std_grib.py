"""GRIB2 encoding of the emulated N-member std: the mean of its distribution and chosen quantiles.

The keys are those of the synthetic EDA's exact background-error std (:data:`hybrid_eda.synthetic.gribio.SIGMA_B`,
the es-like parameter): GRIB2 on the checkpoint's reduced/octahedral Gaussian grid, MARS local definition 1
(``class=od stream=elda expver=0001``), the member field's own ``paramId``/``shortName``, model levels
(``typeOfLevel=hybrid``, MARS ``levtype=ml``, ``level``), ``dataDate``/``dataTime`` = the members' valid date,
step 0, simple packing. What tells the statistics apart:

==========  ======  ===========================  =============================================================
statistic   type    productDefinitionTemplate    extra keys
==========  ======  ===========================  =============================================================
mean        es      0 (deterministic)            none: exactly the keys of sigma_b_*.grib
quantile q  pd      86 (quantile forecast)       ``quantileValue / totalNumberOfQuantiles = q`` (0.05 -> 5/100,
                                                 0.025 -> 25/1000); earthkit: ``sel(quantileValue=5)``
==========  ======  ===========================  =============================================================

``type=pd`` (MARS "probability distribution") keeps the quantiles out of a ``type=es`` retrieval of the mean;
GRIB2's quantile template is the standard place for the quantile itself.
"""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction

import numpy as np

from hybrid_eda._eccodes import eccodes
from hybrid_eda.inference.checkpoint_metadata import FieldId
from hybrid_eda.synthetic.gribio import SIGMA_B, GribEncoder, MessageKind
from hybrid_eda.synthetic.grids import GaussianGrid

__all__ = ["QUANTILE", "QUANTILE_TEMPLATE", "StdGribEncoder", "quantile_keys"]

#: MARS identity of the quantile messages (the mean is :data:`~hybrid_eda.synthetic.gribio.SIGMA_B`).
QUANTILE = MessageKind(SIGMA_B.stream, "pd", ensemble=False)
#: GRIB2 product definition template 4.86: quantile forecasts at a level, at a point in time.
QUANTILE_TEMPLATE = 86
_MAX_QUANTILES = 10_000  # totalNumberOfQuantiles is 16 bits


def quantile_keys(q: float) -> tuple[int, int]:
    """``(quantileValue, totalNumberOfQuantiles)`` with ``quantileValue / total = q``, total 100, 1000 or 10000.

    Raises
    ------
    ValueError
        If ``q`` is not in (0, 1) or needs more than four decimals.
    """
    if not 0.0 < float(q) < 1.0:
        raise ValueError(f"quantiles must lie strictly between 0 and 1, got {q}")
    for total in (100, 1000, _MAX_QUANTILES):
        value = Fraction(str(q)) * total
        if value.denominator == 1:
            return int(value), total
    raise ValueError(f"quantile {q} needs more than four decimals; GRIB stores it as a fraction of at most 10000")


class StdGribEncoder:
    """Encode emulated std fields into GRIB2 bytes (one template per statistic, reused for every field).

    Parameters
    ----------
    grid : GaussianGrid
    bits_per_value : int
        Simple-packing precision (the decoding error is below ``range / (2^bits - 1)`` of each field).
    keys : dict, optional
        GRIB keys set on every message last (e.g. ``{"expver": "test"}``).
    """

    def __init__(self, grid: GaussianGrid, bits_per_value: int = 16, keys: dict | None = None) -> None:
        self.grid = grid
        self.bits_per_value = int(bits_per_value)
        self.keys = dict(keys or {})
        self._handles: dict[float | None, int] = {}

    def _handle(self, quantile: float | None) -> int:
        if quantile in self._handles:
            return self._handles[quantile]
        with GribEncoder(self.grid, members=1, bits_per_value=self.bits_per_value) as encoder:
            kind = SIGMA_B if quantile is None else QUANTILE
            message = encoder.encode(np.zeros(self.grid.npoints), kind=kind, param_id=130, level=1,
                                     valid=datetime(2000, 1, 1))  # fmt: skip
        handle = eccodes.codes_new_from_message(message)
        if quantile is not None:
            value, total = quantile_keys(quantile)
            eccodes.codes_set(handle, "productDefinitionTemplateNumber", QUANTILE_TEMPLATE)
            eccodes.codes_set(handle, "typeOfLevel", "hybrid")  # a new template starts from its own defaults
            eccodes.codes_set(handle, "totalNumberOfQuantiles", total)
            eccodes.codes_set(handle, "quantileValue", value)
        for key, setting in self.keys.items():
            eccodes.codes_set(handle, key, setting)
        self._handles[quantile] = handle
        return handle

    def encode(self, values: np.ndarray, *, field: FieldId, valid: datetime, quantile: float | None = None) -> bytes:
        """One message of ``values [G]``: the mean (``quantile=None``) or quantile ``quantile`` of ``field``."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.grid.npoints,):
            raise ValueError(f"expected {self.grid.npoints} values on {self.grid.name}, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError(f"non-finite emulated std for {field} at {valid.isoformat()}")
        if field.levtype != "ml":
            raise ValueError(f"{field}: only model-level fields (levtype ml) are written, not levtype {field.levtype}")
        handle = self._handle(quantile)
        eccodes.codes_set(handle, "paramId", field.param_id)
        eccodes.codes_set(handle, "level", field.level)
        eccodes.codes_set(handle, "dataDate", int(valid.strftime("%Y%m%d")))
        eccodes.codes_set(handle, "dataTime", int(valid.strftime("%H%M")))
        eccodes.codes_set(handle, "bitsPerValue", self.bits_per_value)  # a constant field had set it to 0
        eccodes.codes_set_values(handle, values)
        return eccodes.codes_get_message(handle)

    def close(self) -> None:
        """Release the eccodes handles."""
        for handle in self._handles.values():
            eccodes.codes_release(handle)
        self._handles.clear()

    def __enter__(self) -> StdGribEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
