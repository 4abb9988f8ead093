"""GRIB2 encoding of synthetic EDA fields, laid out like MARS retrievals.

Every message is GRIB2 on a ``reduced_gg`` grid (eccodes reports ``isOctahedral=1`` for ``O<n>`` grids), model
levels (``typeOfLevel=hybrid``, MARS ``levtype=ml``, ``levelist``; no PV array), simple packing with
``bits_per_value`` bits (the decoding error is half a packing step, below ``range / (2^bits - 1)`` of each
field's own range: 1.5e-5 of the range with 16 bits, 6e-8 with 24; see :func:`packing_tolerance`), and a MARS
local definition (``localDefinitionNumber=1``: ``class``, ``stream``, ``type``, ``expver``) so earthkit-data and
anemoi-datasets see the MARS keys.

==================  ======  =====  ====================  ========================================
kind                stream  type   product template      date / time / step
==================  ======  =====  ====================  ========================================
background member   elda    fc     1 (ensemble member)   date - step, step = background_step_hours
analysis member     elda    an     1 (ensemble member)   date, step 0
truth               oper    an     0 (deterministic)     date, step 0
sigma_b (exact)     elda    es     0 (deterministic)     date, step 0
observations        elda    gai    1 (ensemble member)   date, step 0; missing values where unobserved
==================  ======  =====  ====================  ========================================

Ensemble members carry ``perturbationNumber`` (MARS ``number``) 1..N and ``numberOfForecastsInEnsemble`` N.

**Observations** are point values on the grid, so they are written as gridded fields with a bitmap: the observed
points carry the (unperturbed) observation ``y``, every other point is missing (``bitmapPresent=1``,
``missingValue`` :data:`MISSING_VALUE`), which earthkit-data and anemoi-datasets read as NaN. MARS type ``gai``
("gridded analysis input") is the GRIB2-encodable type closest to "observations": ``ob`` (and ``ai``, ``ofb``)
exist for BUFR only and eccodes silently encodes them as ``an``. They are the same for every member; each file
holds one copy per member number 1..N so that anemoi-datasets can join them with the members on the ensemble axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

import numpy as np

from hybrid_eda._eccodes import eccodes
from hybrid_eda.synthetic.grids import GaussianGrid

__all__ = [
    "ANALYSIS",
    "BACKGROUND",
    "MISSING_VALUE",
    "OBSERVATIONS",
    "SIGMA_B",
    "TRUTH",
    "GribEncoder",
    "MessageKind",
    "packing_tolerance",
]

#: MARS ``class`` and ``expver`` of every message.
MARS_CLASS, MARS_EXPVER = "od", "0001"

#: ``missingValue`` of the messages with a bitmap (observations): outside the range of every synthetic variable.
MISSING_VALUE = 9999.0


@dataclass(frozen=True)
class MessageKind:
    """MARS identity of one family of messages."""

    stream: str
    mars_type: str
    ensemble: bool
    forecast: bool = False
    missing: bool = False  # a bitmap: NaN values are encoded as missing


BACKGROUND = MessageKind("elda", "fc", ensemble=True, forecast=True)
ANALYSIS = MessageKind("elda", "an", ensemble=True)
OBSERVATIONS = MessageKind("elda", "gai", ensemble=True, missing=True)
TRUTH = MessageKind("oper", "an", ensemble=False)
SIGMA_B = MessageKind("elda", "es", ensemble=False)


def _template(grid: GaussianGrid, kind: MessageKind, members: int) -> int:
    """An eccodes handle with the grid, level type, local definition and product template of ``kind``."""
    sample = f"reduced_gg_pl_{grid.n}_grib2" if not grid.octahedral else "reduced_gg_pl_32_grib2"
    try:
        handle = eccodes.codes_grib_new_from_samples(sample)
    except eccodes.CodesInternalError:  # no sample with this N: start from N32 and set the geometry
        handle = eccodes.codes_grib_new_from_samples("reduced_gg_pl_32_grib2")
    eccodes.codes_set(handle, "setLocalDefinition", 1)
    eccodes.codes_set(handle, "localDefinitionNumber", 1)
    for key, value in (
        ("class", MARS_CLASS),
        ("stream", kind.stream),
        ("type", kind.mars_type),
        ("expver", MARS_EXPVER),
    ):
        eccodes.codes_set(handle, key, value)
    eccodes.codes_set(handle, "productDefinitionTemplateNumber", 1 if kind.ensemble else 0)
    if kind.ensemble:
        eccodes.codes_set(handle, "numberOfForecastsInEnsemble", members)
    eccodes.codes_set(handle, "typeOfLevel", "hybrid")
    # Geometry (the sample may be another N): rings, points per ring, first/last latitude and last longitude.
    eccodes.codes_set(handle, "N", grid.n)
    eccodes.codes_set(handle, "Nj", 2 * grid.n)
    eccodes.codes_set_long_array(handle, "pl", grid.pl.astype(np.int64))
    eccodes.codes_set(handle, "latitudeOfFirstGridPointInDegrees", float(grid.ring_latitudes[0]))
    eccodes.codes_set(handle, "latitudeOfLastGridPointInDegrees", float(grid.ring_latitudes[-1]))
    eccodes.codes_set(handle, "longitudeOfFirstGridPointInDegrees", 0.0)
    eccodes.codes_set(handle, "longitudeOfLastGridPointInDegrees", 360.0 - 360.0 / float(grid.pl.max()))
    eccodes.codes_set(handle, "stepUnits", 1)
    if kind.missing:
        eccodes.codes_set(handle, "bitmapPresent", 1)
        eccodes.codes_set(handle, "missingValue", MISSING_VALUE)
    return handle


class GribEncoder:
    """Encode one field at a time into GRIB2 bytes (templates are built once and reused).

    Parameters
    ----------
    grid : GaussianGrid
    members : int
        ``numberOfForecastsInEnsemble``.
    bits_per_value : int
        Simple-packing precision.
    """

    def __init__(self, grid: GaussianGrid, members: int, bits_per_value: int = 16) -> None:
        self.grid = grid
        self.members = members
        self.bits_per_value = bits_per_value
        self._handles: dict[MessageKind, int] = {}

    def _handle(self, kind: MessageKind) -> int:
        if kind not in self._handles:
            self._handles[kind] = _template(self.grid, kind, self.members)
        return self._handles[kind]

    def encode(
        self,
        values: np.ndarray,
        *,
        kind: MessageKind,
        param_id: int,
        level: int,
        valid: datetime,
        step_hours: int = 0,
        number: int | None = None,
    ) -> bytes:
        """One GRIB2 message of ``values [G]`` valid at ``valid`` (the base time is ``valid - step_hours``).

        With ``kind.missing`` NaN values are encoded as missing (bitmap); otherwise every value must be finite.
        """
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.grid.npoints,):
            raise ValueError(f"expected {self.grid.npoints} values on {self.grid.name}, got shape {values.shape}.")
        where = f"paramId {param_id} level {level} at {valid.isoformat()}"
        if kind.missing:
            if np.isinf(values).any() or (values == MISSING_VALUE).any():
                raise ValueError(f"infinite values or the missing value {MISSING_VALUE} in {where}.")
            values = np.where(np.isnan(values), MISSING_VALUE, values)
        elif not np.isfinite(values).all():
            raise ValueError(f"non-finite values in {where}.")
        handle = self._handle(kind)
        step = step_hours if kind.forecast else 0
        base = valid - timedelta(hours=step)
        eccodes.codes_set(handle, "paramId", int(param_id))
        eccodes.codes_set(handle, "level", int(level))
        eccodes.codes_set(handle, "dataDate", int(base.strftime("%Y%m%d")))
        eccodes.codes_set(handle, "dataTime", int(base.strftime("%H%M")))
        eccodes.codes_set(handle, "forecastTime", int(step))
        if kind.ensemble:
            if number is None:
                raise ValueError("ensemble messages need a member number (1..N).")
            eccodes.codes_set(handle, "perturbationNumber", int(number))
        eccodes.codes_set(handle, "bitsPerValue", self.bits_per_value)
        eccodes.codes_set_values(handle, values)
        return eccodes.codes_get_message(handle)

    def write(self, stream: BinaryIO, values: np.ndarray, **keys) -> None:
        """Encode ``values`` (see :meth:`encode`) and append the message to ``stream``."""
        stream.write(self.encode(values, **keys))

    def close(self) -> None:
        """Release the eccodes handles."""
        for handle in self._handles.values():
            eccodes.codes_release(handle)
        self._handles.clear()

    def __enter__(self) -> GribEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def packing_tolerance(values: np.ndarray, bits_per_value: int) -> float:
    """Largest decoding error of simple packing for ``values``.

    eccodes packs ``(v - R) / 2^E`` as ``bits``-bit integers with the smallest binary scale ``E`` for which the
    field's range fits, so half a step ``2^(E-1)`` is below ``range / (2^bits - 1)``; the reference value ``R``
    is chosen to be exact in float32. A few double-precision ulps are added for the arithmetic.
    """
    span = float(np.max(values) - np.min(values))
    return span / (2**bits_per_value - 1) + 1e-12 * float(np.max(np.abs(values)))
