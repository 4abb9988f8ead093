"""Local grid files: anemoi finds every grid we use without downloading it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

# pyproj must load its PROJ library before eccodes does (see tests/test_recipes.py).
import pyproj  # noqa: F401  isort: skip
import numpy as np
import pytest

from hybrid_eda.data.grids import (
    DEFAULT_GRIDS,
    GRIDS_PATH_VARIABLES,
    LocalGridsCallback,
    ensure_grid_files,
    grid_file,
    use_local_grids,
    write_grid_file,
)

SIZES = {"o16": 1600, "o32": 5248, "o48": 10944, "o96": 40320, "n32": 6114, "n80": 35718, "n128": 88838}


def test_grid_files_hold_grib_point_order(tmp_path):
    """N32/N80 coordinates equal those eccodes computes for its own reduced Gaussian GRIB samples."""
    import eccodes

    for name, sample in (("n32", "reduced_gg_pl_32_grib2"), ("n80", "reduced_gg_pl_80_grib2")):
        with np.load(write_grid_file(name, tmp_path)) as data:
            handle = eccodes.codes_grib_new_from_samples(sample)
            try:
                lat, lon = (eccodes.codes_get_array(handle, k) for k in ("latitudes", "longitudes"))
            finally:
                eccodes.codes_release(handle)
            np.testing.assert_allclose(data["latitudes"], lat, atol=1e-10)
            np.testing.assert_allclose(data["longitudes"], lon, atol=1e-10)


def test_ensure_writes_every_default_grid_once_and_repairs_broken_files(tmp_path):
    directory = ensure_grid_files(directory=tmp_path)
    assert set(SIZES) == set(DEFAULT_GRIDS)
    for name, size in SIZES.items():
        with np.load(grid_file(name, directory)) as data:
            assert data["latitudes"].shape == data["longitudes"].shape == (size,)
        assert (directory / f"grid-{name.upper()}.npz").exists()  # anemoi-utils uses the name as written
    stamp = grid_file("o96", directory).stat().st_mtime_ns
    ensure_grid_files(["O96"], directory)
    assert grid_file("o96", directory).stat().st_mtime_ns == stamp  # valid files are kept
    grid_file("n80", directory).write_bytes(b"broken")
    ensure_grid_files(["n80"], directory)
    with np.load(grid_file("n80", directory)) as data:
        assert data["latitudes"].size == SIZES["n80"]


def test_use_local_grids_sets_both_anemoi_variables(tmp_path):
    environ: dict[str, str] = {}
    directory = use_local_grids(["o32"], tmp_path / "grids", environ=environ)
    assert environ == {variable: str(directory) for variable in GRIDS_PATH_VARIABLES}
    with pytest.raises(ValueError, match="unknown grid 'x12'"):
        use_local_grids(["x12"], tmp_path, environ={})


def test_anemoi_reads_the_local_grids_without_network(tmp_path):
    """anemoi-utils, anemoi-transform and anemoi-graphs find the grids; any download attempt fails the test."""
    script = textwrap.dedent(
        """
        import pyproj, requests, socket
        def no_network(*args, **kwargs):
            raise RuntimeError("network access attempted")
        requests.get = no_network
        socket.socket.connect = no_network
        from hybrid_eda.data.grids import use_local_grids
        use_local_grids(["n80", "o32", "o96", "o16"])
        from anemoi.utils.grids import grids
        from anemoi.transform.grids.named import lookup
        from anemoi.graphs.nodes import ReducedGaussianGridNodes
        print(grids("n80")["latitudes"].size, grids("N80")["longitudes"].size, grids("o32")["latitudes"].size,
              lookup("o96")["latitudes"].size, ReducedGaussianGridNodes("O16", "hidden").get_coordinates().shape[0])
        """
    )
    env = dict(os.environ, HYBRID_EDA_GRIDS_DIR=str(tmp_path / "grids"))
    env["ANEMOI_SETTINGS_UTILS__CACHE_DIRECTORY"] = str(tmp_path / "cache")  # no grid cached by earlier runs
    for variable in GRIDS_PATH_VARIABLES:
        env.pop(variable, None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["35718", "35718", "5248", "40320", "1600"]


def test_hydra_callback_points_anemoi_at_the_grids(tmp_path, monkeypatch):
    for variable in GRIDS_PATH_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    LocalGridsCallback(names=["o16"], directory=str(tmp_path)).on_job_start(config=None)
    assert all(os.environ[variable] == str(tmp_path.resolve()) for variable in GRIDS_PATH_VARIABLES)
    assert grid_file("O16", tmp_path).exists()
    from anemoi.utils import settings

    try:
        assert str(settings.SETTINGS.utils.grids_path) == str(tmp_path.resolve())  # the running process sees it
    finally:
        monkeypatch.undo()
        settings.reload_settings()


def test_grids_command_writes_files_and_prints_exports(tmp_path, capsys):
    from hybrid_eda.cli import main
    from hybrid_eda.data.grids import GRIDS_PATH_VARIABLES

    assert main(["grids", "--dir", str(tmp_path), "--names", "o32"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"export {variable}={tmp_path.resolve()}" for variable in GRIDS_PATH_VARIABLES]
    with np.load(tmp_path / "grid-o32.npz") as grid:
        assert grid["latitudes"].shape == grid["longitudes"].shape == (5248,)
