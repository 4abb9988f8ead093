"""The six EDA variables: GRIB identities, units, and plausible magnitudes on model levels.

=========  =======  =============  ==========================================  ==================
shortName  paramId  units          truth (mean; anomaly std)                    sigma_b scale
=========  =======  =============  ==========================================  ==================
vo         138      s**-1          0; 1e-5 (top) to 7e-5 (jet level)             3e-6 .. 1.5e-5
d          155      s**-1          0; 2e-6 .. 1.5e-5                             1e-6 .. 6e-6
t          130      K              190-300 K (lat and height); 3-8 K             0.45 .. 3 K
lnsp       152      ~ (ln Pa)      ln(101325) - orography / 8 km; 0.012          8e-4 (~0.8 hPa)
q          133      kg kg**-1      0.0025-0.0175 at the surface, 3e-6 aloft       12% of q (5% aloft)
o3         203      kg kg**-1      5e-8 (surface) .. 1.6e-5 (10 hPa)             5-10% of o3
=========  =======  =============  ==========================================  ==================

``lnsp`` exists on model level 1 only (as in MARS). Model level ``k`` of ``L`` (1 = top, ``L`` = surface) has a
reference pressure spread like ECMWF's L137 whatever ``L`` is (0.01 hPa at the top to ~1013 hPa at the surface,
:func:`model_level_pressures`); the profiles are interpolated in log-pressure between the anchors below.
``t``, ``vo``, ``d``, ``lnsp`` are *additive* (truth = mean + amplitude x unit field); ``q`` and ``o3`` are
*multiplicative* (truth = reference x log-normal factor, always positive).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["VARIABLES", "VARIABLE_NAMES", "VariableSpec", "model_level_pressures", "profile"]

#: Reference surface pressure (Pa).
REFERENCE_SURFACE_PRESSURE = 101325.0

# (s, pressure hPa): s = (k - 1/2) / L is the normalised model level, 0 at the top, 1 at the surface.
_LEVEL_ANCHORS = ((0.0, 0.01), (0.15, 0.5), (0.3, 3.0), (0.45, 20.0), (0.6, 100.0), (0.7, 250.0), (0.8, 500.0),
                  (0.9, 800.0), (1.0, 1013.25))  # fmt: skip


def model_level_pressures(levels: int) -> np.ndarray:
    """Reference full-level pressures (Pa) of model levels ``1 .. levels``, top to surface: ``[L]``."""
    s = (np.arange(levels) + 0.5) / levels
    anchor_s, anchor_p = np.array(_LEVEL_ANCHORS).T
    return 100.0 * np.exp(np.interp(s, anchor_s, np.log(anchor_p)))


def profile(anchors: tuple[tuple[float, float], ...]) -> Callable[[np.ndarray], np.ndarray]:
    """A profile given as ``(pressure hPa, value)`` anchors, interpolated linearly in log-pressure (Pa in)."""
    pressures, values = np.array(sorted(anchors)).T
    log_p = np.log(pressures * 100.0)

    def evaluate(pressure_pa: np.ndarray) -> np.ndarray:
        return np.interp(np.log(np.asarray(pressure_pa, dtype=float)), log_p, values)

    return evaluate


@dataclass(frozen=True)
class VariableSpec:
    """What one variable is and how large it is.

    Parameters
    ----------
    name, param_id, units, long_name :
        GRIB/MARS identity (``shortName``, ``paramId``).
    single_level : bool
        Only on model level 1 (``lnsp``).
    multiplicative : bool
        Positive variable: truth = reference x ``exp(a f - a^2 / 2)``, sigma_b relative to the truth.
    amplitude : callable
        Pressure (Pa) -> anomaly std (additive, in ``units``) or log-amplitude ``a`` (multiplicative).
    error_scale : callable
        Pressure (Pa) -> background-error std before modulation (additive, in ``units``) or relative to the
        truth (multiplicative).
    flow_l0, flow_slope : float
        Shape of the truth's spectrum, ``C_l ~ (1 + (l / l0)^2)^(-slope / 2)``.
    length_factor : float
        Background-error correlation length relative to ``ErrorConfig.length_scale_km``.
    """

    name: str
    param_id: int
    units: str
    long_name: str
    single_level: bool
    multiplicative: bool
    amplitude: Callable[[np.ndarray], np.ndarray]
    error_scale: Callable[[np.ndarray], np.ndarray]
    flow_l0: float
    flow_slope: float
    length_factor: float

    def levels(self, n_levels: int) -> tuple[int, ...]:
        """Model levels (1-based) on which the variable exists."""
        return (1,) if self.single_level else tuple(range(1, n_levels + 1))


_T_MEAN = profile(((0.01, 190.0), (0.1, 215.0), (1.0, 265.0), (10.0, 230.0), (50.0, 212.0), (100.0, 205.0),
                   (250.0, 222.0), (500.0, 252.0), (850.0, 275.0), (1013.25, 287.0)))  # fmt: skip
# Equator-to-pole contrast: warm tropics in the troposphere, cold tropical tropopause.
_T_CONTRAST = profile(((0.01, 0.0), (1.0, 0.0), (10.0, -10.0), (100.0, -10.0), (250.0, 20.0), (500.0, 35.0),
                       (1013.25, 45.0)))  # fmt: skip
_O3_REFERENCE = profile(((0.01, 1.0e-6), (1.0, 8.0e-6), (10.0, 1.6e-5), (30.0, 1.2e-5), (100.0, 1.5e-6),
                         (300.0, 2.0e-7), (1013.25, 5.0e-8)))  # fmt: skip


def temperature_mean(pressure_pa: np.ndarray, latitude: np.ndarray) -> np.ndarray:
    """Mean temperature (K) at pressures ``[...]`` and latitudes (deg); broadcasts ``[L, 1]`` x ``[G]``."""
    coslat2 = np.cos(np.radians(latitude)) ** 2
    return _T_MEAN(pressure_pa) + _T_CONTRAST(pressure_pa) * (coslat2 - 2.0 / 3.0)


def humidity_reference(pressure_pa: np.ndarray, latitude: np.ndarray) -> np.ndarray:
    """Reference specific humidity (kg/kg): moist tropical surface, ``(p / ps)^3`` decay, 3e-6 floor aloft."""
    surface = 0.0025 + 0.015 * np.cos(np.radians(latitude)) ** 4
    return surface * (np.asarray(pressure_pa) / REFERENCE_SURFACE_PRESSURE) ** 3 + 3.0e-6


def ozone_reference(pressure_pa: np.ndarray, latitude: np.ndarray) -> np.ndarray:
    """Reference ozone mass mixing ratio (kg/kg), peaking near 10 hPa, 30% more at the poles."""
    return _O3_REFERENCE(pressure_pa) * (1.0 + 0.3 * np.sin(np.radians(latitude)) ** 2)


VARIABLES: dict[str, VariableSpec] = {
    spec.name: spec
    for spec in (
        VariableSpec(
            "vo", 138, "s**-1", "Vorticity (relative)", False, False,
            amplitude=profile(((0.01, 1e-5), (10.0, 1.5e-5), (100.0, 3e-5), (250.0, 7e-5), (500.0, 5e-5),
                               (1013.25, 4e-5))),
            error_scale=profile(((0.01, 3e-6), (10.0, 3e-6), (100.0, 6e-6), (250.0, 1.5e-5), (500.0, 1e-5),
                                 (1013.25, 1.2e-5))),
            flow_l0=10.0, flow_slope=3.0, length_factor=0.8,
        ),
        VariableSpec(
            "d", 155, "s**-1", "Divergence", False, False,
            amplitude=profile(((0.01, 2e-6), (100.0, 4e-6), (250.0, 1.2e-5), (500.0, 8e-6), (1013.25, 1.5e-5))),
            error_scale=profile(((0.01, 1e-6), (10.0, 1e-6), (100.0, 2e-6), (250.0, 6e-6), (500.0, 4e-6),
                                 (1013.25, 6e-6))),
            flow_l0=12.0, flow_slope=3.0, length_factor=0.7,
        ),
        VariableSpec(
            "t", 130, "K", "Temperature", False, False,
            amplitude=profile(((0.01, 8.0), (1.0, 6.0), (10.0, 5.0), (100.0, 3.0), (250.0, 3.0), (500.0, 3.5),
                               (1013.25, 5.0))),
            error_scale=profile(((0.01, 3.0), (1.0, 1.5), (10.0, 0.9), (100.0, 0.6), (250.0, 0.6), (500.0, 0.45),
                                 (1013.25, 0.8))),
            flow_l0=8.0, flow_slope=5.0, length_factor=1.0,
        ),
        VariableSpec(
            "lnsp", 152, "~", "Logarithm of surface pressure", True, False,
            amplitude=profile(((1013.25, 0.012),)),
            error_scale=profile(((1013.25, 8e-4),)),
            flow_l0=5.0, flow_slope=5.0, length_factor=1.4,
        ),
        VariableSpec(
            "q", 133, "kg kg**-1", "Specific humidity", False, True,
            amplitude=profile(((0.01, 0.2), (100.0, 0.3), (500.0, 0.5), (1013.25, 0.4))),
            error_scale=profile(((0.01, 0.05), (100.0, 0.05), (300.0, 0.12), (1013.25, 0.12))),
            flow_l0=8.0, flow_slope=3.5, length_factor=0.8,
        ),
        VariableSpec(
            "o3", 203, "kg kg**-1", "Ozone mass mixing ratio", False, True,
            amplitude=profile(((0.01, 0.15), (10.0, 0.2), (100.0, 0.3), (1013.25, 0.2))),
            error_scale=profile(((0.01, 0.05), (100.0, 0.05), (300.0, 0.1), (1013.25, 0.1))),
            flow_l0=6.0, flow_slope=4.5, length_factor=1.4,
        ),
    )
}  # fmt: skip

#: The variables in their canonical order.
VARIABLE_NAMES: tuple[str, ...] = tuple(VARIABLES)


def reference_field(name: str, pressure_pa: np.ndarray, latitude: np.ndarray, elevation_m: np.ndarray) -> np.ndarray:
    """Mean (additive variables) or reference (multiplicative ones) at ``pressure_pa [L, 1]`` and points ``[G]``.

    Returns ``[L, G]``. ``elevation_m [G]`` (the static synthetic orography) only enters ``lnsp``.
    """
    pressure_pa = np.asarray(pressure_pa, dtype=float)
    shape = np.broadcast_shapes(pressure_pa.shape, np.shape(latitude))
    if name == "t":
        return np.broadcast_to(temperature_mean(pressure_pa, latitude), shape)
    if name == "q":
        return np.broadcast_to(humidity_reference(pressure_pa, latitude), shape)
    if name == "o3":
        return np.broadcast_to(ozone_reference(pressure_pa, latitude), shape)
    if name == "lnsp":
        return np.broadcast_to(np.log(REFERENCE_SURFACE_PRESSURE) - np.asarray(elevation_m) / 8000.0, shape)
    return np.zeros(shape)  # vo, d
