"""Gaussian grids computed locally: sizes, latitudes, longitudes, and clear errors for unknown grids."""

from __future__ import annotations

import eccodes
import numpy as np
import pytest

from hybrid_eda.synthetic.grids import gaussian_latitudes, make_grid, octahedral_pl


@pytest.mark.parametrize(
    ("name", "npoints", "octahedral"),
    [("O32", 5248, True), ("N32", 6114, False), ("N80", 35718, False), ("O96", 40320, True), ("N128", 88838, False)],
)
def test_grid_sizes(name, npoints, octahedral):
    grid = make_grid(name)
    assert grid.npoints == npoints
    assert grid.octahedral is octahedral
    assert grid.latitudes.shape == grid.longitudes.shape == (npoints,)
    assert np.isclose(grid.area_weights.sum(), 4 * np.pi)


def test_octahedral_pl_is_20_plus_4i_mirrored():
    pl = octahedral_pl(32)
    assert pl[0] == 20 and pl[31] == 20 + 4 * 31 and pl[32] == pl[31] and pl[-1] == 20
    assert np.array_equal(pl, pl[::-1])


def test_gaussian_latitudes_are_legendre_roots():
    lat, w = gaussian_latitudes(32)
    assert lat.shape == (64,) and np.all(np.diff(lat) < 0)
    assert np.allclose(lat, -lat[::-1])  # symmetric about the equator
    assert np.isclose(w.sum(), 2.0)
    # P_64(sin(lat)) vanishes at every Gaussian latitude
    p64 = np.polynomial.legendre.Legendre.basis(64)
    assert np.abs(p64(np.sin(np.radians(lat)))).max() < 1e-12
    # first latitude as in ECMWF's GRIB sample of N32
    assert abs(lat[0] - 87.863799) < 1e-6


@pytest.mark.parametrize("name", ["N32", "O32"])
def test_points_match_eccodes_geometry(name):
    """Latitudes/longitudes equal those eccodes computes from the pl array (what earthkit and anemoi read)."""
    grid = make_grid(name)
    handle = eccodes.codes_grib_new_from_samples("reduced_gg_pl_32_grib2")
    try:
        eccodes.codes_set_long_array(handle, "pl", grid.pl)
        eccodes.codes_set(handle, "longitudeOfLastGridPointInDegrees", 360.0 - 360.0 / grid.pl.max())
        eccodes.codes_set_values(handle, np.zeros(grid.npoints))
        lat = eccodes.codes_get_array(handle, "latitudes")
        lon = eccodes.codes_get_array(handle, "longitudes")
        assert eccodes.codes_get(handle, "isOctahedral") == int(grid.octahedral)
    finally:
        eccodes.codes_release(handle)
    assert np.abs(lat - grid.latitudes).max() < 1e-9
    assert np.abs(lon - grid.longitudes).max() < 1e-9


def test_n32_pl_comes_from_eccodes_sample():
    grid = make_grid("n32")  # case-insensitive
    assert grid.name == "N32"
    assert grid.pl[:5].tolist() == [20, 27, 36, 40, 45]


@pytest.mark.parametrize("bad", ["X32", "N33", "O2", "O", "octahedral"])
def test_unknown_grid_lists_supported(bad):
    with pytest.raises(ValueError, match="unknown grid") as info:
        make_grid(bad)
    assert "N80" in str(info.value) and "O<n>" in str(info.value)
