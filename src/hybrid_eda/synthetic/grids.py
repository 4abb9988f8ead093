"""Reduced and octahedral Gaussian grids, computed locally (no download).

A Gaussian grid ``N<n>`` / ``O<n>`` has ``2 n`` latitude rings at the Gaussian latitudes: the arcsines of the
roots of the Legendre polynomial ``P_{2n}`` (``numpy.polynomial.legendre.leggauss``), ordered north to south as
in GRIB. Ring ``i`` holds ``pl[i]`` equally spaced points starting at longitude 0:

* octahedral ``O<n>``: ``pl = 20 + 4 i`` for ``i = 0 .. n-1`` from the pole to the equator, mirrored
  (O32 = 5,248 points, O96 = 40,320);
* reduced Gaussian ``N<n>``: ECMWF's ``pl`` arrays, read from the GRIB samples embedded in eccodes
  (``reduced_gg_pl_<n>_grib2``; N32 = 6,114 points, N80 = 35,718, N128 = 88,838).

Points are ordered ring by ring, north to south, west to east: the order of the values in a GRIB message and
of the ``grid`` axis everywhere in this package.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "GaussianGrid",
    "OCTAHEDRAL_RANGE",
    "REDUCED_GAUSSIAN_NUMBERS",
    "gaussian_latitudes",
    "make_grid",
    "octahedral_pl",
    "reduced_gaussian_pl",
    "supported_grids_text",
]

#: Gaussian numbers ``n`` whose reduced Gaussian ``pl`` array ships with eccodes as a GRIB sample.
REDUCED_GAUSSIAN_NUMBERS = (32, 48, 80, 96, 128, 160, 200, 256, 320, 400, 512, 640, 1280)
#: Smallest and largest octahedral Gaussian number accepted (``O<n>``).
OCTAHEDRAL_RANGE = (4, 1280)

_NAME = re.compile(r"^\s*([NnOo])(\d+)\s*$")


def supported_grids_text() -> str:
    """One line naming every supported grid, for error messages and ``--help``."""
    lo, hi = OCTAHEDRAL_RANGE
    reduced = ", ".join(f"N{n}" for n in REDUCED_GAUSSIAN_NUMBERS)
    return f"octahedral O<n> with {lo} <= n <= {hi} (e.g. O32, O96) or reduced Gaussian {reduced}"


def gaussian_latitudes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian latitudes and quadrature weights of a grid with ``2 n`` rings, north to south.

    Returns
    -------
    latitudes : np.ndarray
        ``[2n]`` degrees, decreasing from near +90 to near -90.
    weights : np.ndarray
        ``[2n]`` Gauss-Legendre weights in ``mu = sin(latitude)``; they sum to 2.
    """
    mu, w = np.polynomial.legendre.leggauss(2 * n)  # ascending mu: south to north
    return np.degrees(np.arcsin(mu[::-1])), w[::-1].copy()


def octahedral_pl(n: int) -> np.ndarray:
    """Points per ring of the octahedral grid ``O<n>``: ``20 + 4 i`` to the equator, then mirrored. ``[2n]``."""
    half = 20 + 4 * np.arange(n, dtype=np.int64)
    return np.concatenate([half, half[::-1]])


@functools.cache
def _reduced_pl_cached(n: int) -> tuple[int, ...]:
    from hybrid_eda._eccodes import eccodes  # local import: eccodes loads a C library

    handle = eccodes.codes_grib_new_from_samples(f"reduced_gg_pl_{n}_grib2")
    try:
        return tuple(int(v) for v in eccodes.codes_get_array(handle, "pl"))
    finally:
        eccodes.codes_release(handle)


def reduced_gaussian_pl(n: int) -> np.ndarray:
    """Points per ring of ECMWF's reduced Gaussian grid ``N<n>``, from the eccodes GRIB sample. ``[2n]``."""
    if n not in REDUCED_GAUSSIAN_NUMBERS:
        raise ValueError(
            f"no eccodes sample for reduced Gaussian grid N{n}; supported grids: {supported_grids_text()}."
        )
    return np.asarray(_reduced_pl_cached(n), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class GaussianGrid:
    """A reduced (``N<n>``) or octahedral (``O<n>``) Gaussian grid.

    Parameters
    ----------
    name : str
        Canonical name, e.g. ``"O32"``.
    n : int
        Gaussian number: rings between a pole and the equator.
    octahedral : bool
        Whether ``pl`` is the octahedral ``20 + 4 i`` sequence.
    pl : np.ndarray
        ``[2n]`` points per ring, north to south.
    """

    name: str
    n: int
    octahedral: bool
    pl: np.ndarray
    ring_latitudes: np.ndarray = field(init=False, repr=False)
    ring_weights: np.ndarray = field(init=False, repr=False)
    ringstart: np.ndarray = field(init=False, repr=False)
    latitudes: np.ndarray = field(init=False, repr=False)
    longitudes: np.ndarray = field(init=False, repr=False)
    area_weights: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pl = np.asarray(self.pl, dtype=np.int64)
        if pl.shape != (2 * self.n,) or (pl < 1).any():
            raise ValueError(f"pl must hold 2n = {2 * self.n} positive ring sizes, got shape {pl.shape}.")
        lat, w = gaussian_latitudes(self.n)
        ringstart = np.concatenate([[0], np.cumsum(pl)[:-1]])
        ring = np.repeat(np.arange(2 * self.n), pl)  # [G] ring of every point
        offset = np.arange(int(pl.sum())) - ringstart[ring]  # [G] index within its ring
        lon = 360.0 * offset / pl[ring]
        area = (w * 2.0 * np.pi / pl)[ring]  # [G] quadrature weights; they sum to 4 pi
        for name, value in (
            ("pl", pl),
            ("ring_latitudes", lat),
            ("ring_weights", w),
            ("ringstart", ringstart),
            ("latitudes", lat[ring]),
            ("longitudes", lon),
            ("area_weights", area),
        ):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def npoints(self) -> int:
        """Number of grid points ``G``."""
        return int(self.pl.sum())

    @property
    def colatitudes(self) -> np.ndarray:
        """``[2n]`` ring colatitudes in radians, increasing from the north pole (ducc0's ``theta``)."""
        return np.radians(90.0 - self.ring_latitudes)

    def area_mean(self, values: np.ndarray) -> np.ndarray:
        """Area-weighted mean over the last axis ``[..., G] -> [...]`` (Gaussian quadrature)."""
        return np.tensordot(values, self.area_weights, axes=([-1], [0])) / (4.0 * np.pi)


def make_grid(name: str) -> GaussianGrid:
    """Build the grid called ``name`` (``"O32"``, ``"N80"``, ...; case-insensitive).

    Raises
    ------
    ValueError
        If the name is not an octahedral or supported reduced Gaussian grid; the message lists the supported ones.
    """
    match = _NAME.match(str(name))
    if match is None:
        raise ValueError(f"unknown grid {name!r}; supported grids: {supported_grids_text()}.")
    kind, n = match.group(1).upper(), int(match.group(2))
    if kind == "O":
        lo, hi = OCTAHEDRAL_RANGE
        if not lo <= n <= hi:
            raise ValueError(
                f"unknown grid {name!r}: octahedral n out of range; supported grids: {supported_grids_text()}."
            )
        return GaussianGrid(name=f"O{n}", n=n, octahedral=True, pl=octahedral_pl(n))
    if n not in REDUCED_GAUSSIAN_NUMBERS:
        raise ValueError(f"unknown grid {name!r}; supported grids: {supported_grids_text()}.")
    return GaussianGrid(name=f"N{n}", n=n, octahedral=False, pl=reduced_gaussian_pl(n))
