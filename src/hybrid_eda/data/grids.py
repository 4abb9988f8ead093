"""Grid files for anemoi, computed locally so that anemoi never downloads a grid.

anemoi looks grids up by name (``"o96"``, ``"n80"``): ``anemoi.utils.grids.grids`` (used by anemoi-graphs'
``ReducedGaussianGridNodes``) and ``anemoi.transform.grids.named.lookup`` (anemoi-datasets' synthetic datasets,
anemoi-models' spectral helpers) download ``grid-<name>.npz`` from ``get.ecmwf.int`` unless a local folder holds
it. This module writes those files from the grid definitions of :mod:`hybrid_eda.synthetic.grids` (Gaussian
latitudes, ``pl`` arrays from eccodes' GRIB samples; same point order as GRIB) and points anemoi at them::

    from hybrid_eda.data.grids import use_local_grids
    use_local_grids()            # writes ~/.cache/hybrid-eda/grids/grid-{o16,...,n128}.npz once, sets the paths

in a training config, through the Hydra callback :class:`LocalGridsCallback`::

    hydra:
      callbacks:
        local_grids:
          _target_: hybrid_eda.data.grids.LocalGridsCallback

or, for command-line tools, ``export ANEMOI_SETTINGS_UTILS__GRIDS_PATH=<folder>`` (anemoi-utils) and
``export ANEMOI_CONFIG_UTILS_GRIDS_PATH=<folder>`` (anemoi-transform) after :func:`ensure_grid_files`.

Each file holds ``latitudes`` and ``longitudes`` (degrees, float64, ``[G]``), as anemoi's own grid files do.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterable, MutableMapping
from pathlib import Path

import numpy as np
from hydra.experimental.callback import Callback

from hybrid_eda.errors import UserInputError
from hybrid_eda.outputs import check_output_dir
from hybrid_eda.synthetic.grids import make_grid

__all__ = [
    "DEFAULT_GRIDS",
    "GRIDS_DIR_ENV",
    "GRIDS_PATH_VARIABLES",
    "LocalGridsCallback",
    "default_grids_dir",
    "ensure_grid_files",
    "grid_file",
    "grid_name_of_size",
    "use_local_grids",
    "write_grid_file",
]

LOGGER = logging.getLogger(__name__)

#: Grids written by default: the test grids (O32/N32), the demo grids (N80, N128, O96) and hidden meshes (O16, O48).
DEFAULT_GRIDS = ("o16", "o32", "o48", "o96", "n32", "n80", "n128")
#: Environment variable naming the folder of the grid files (default ``~/.cache/hybrid-eda/grids``).
GRIDS_DIR_ENV = "HYBRID_EDA_GRIDS_DIR"
#: Variables that point anemoi at a local grids folder: anemoi-utils settings, anemoi-utils config (anemoi-transform).
GRIDS_PATH_VARIABLES = ("ANEMOI_SETTINGS_UTILS__GRIDS_PATH", "ANEMOI_CONFIG_UTILS_GRIDS_PATH")


def default_grids_dir(environ: MutableMapping[str, str] | None = None) -> Path:
    """``$HYBRID_EDA_GRIDS_DIR``, or ``~/.cache/hybrid-eda/grids``."""
    env = os.environ if environ is None else environ
    return Path(env.get(GRIDS_DIR_ENV) or Path.home() / ".cache" / "hybrid-eda" / "grids").expanduser()


def grid_file(name: str, directory: str | Path) -> Path:
    """Path of the grid file of ``name`` in ``directory`` (anemoi's naming: ``grid-<name>.npz``, lower case)."""
    return Path(directory) / f"grid-{make_grid(name).name.lower()}.npz"


def write_grid_file(name: str, directory: str | Path) -> Path:
    """Compute grid ``name`` and write ``grid-<name>.npz`` (plus an upper-case alias) atomically in ``directory``.

    anemoi-utils builds the local file name from the grid name as written in a config, so ``N80`` and ``n80``
    both need a file; the upper-case one is a symbolic link to the lower-case one.
    """
    grid = make_grid(name)
    directory = _check_grids_dir(Path(directory))
    directory.mkdir(parents=True, exist_ok=True)
    path = grid_file(grid.name, directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.stem}-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, latitudes=np.asarray(grid.latitudes), longitudes=np.asarray(grid.longitudes))
        os.replace(tmp, path)  # atomic: concurrent writers (several ranks) never leave a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    alias = directory / f"grid-{grid.name}.npz"
    if alias != path and not alias.exists():
        try:
            alias.symlink_to(path.name)
        except FileExistsError:  # another process made it meanwhile
            pass
        except OSError:  # file systems without symbolic links
            alias.write_bytes(path.read_bytes())
    LOGGER.debug("wrote %s (%d points)", path, grid.npoints)
    return path


def grid_name_of_size(npoints: int, names: Iterable[str] = DEFAULT_GRIDS) -> str:
    """The grid of ``names`` with ``npoints`` points (e.g. 5248 -> ``"O32"``), for error messages."""
    for name in names:
        grid = make_grid(name)
        if grid.npoints == npoints:
            return grid.name
    return "a grid other than " + "/".join(n.upper() for n in names)


def _check_grids_dir(directory: Path) -> Path:
    """A folder the grid files can be written to, or an error naming the fix."""
    try:
        return check_output_dir(directory)
    except UserInputError as err:
        raise UserInputError(
            f"grid files: {err}; give another folder with `hybrid-eda grids --dir DIR` or ${GRIDS_DIR_ENV}"
        ) from None


def _is_valid(path: Path, npoints: int) -> bool:
    try:
        with np.load(path) as data:
            return data["latitudes"].shape == (npoints,) and data["longitudes"].shape == (npoints,)
    except (OSError, KeyError, ValueError):
        return False


def ensure_grid_files(names: Iterable[str] = DEFAULT_GRIDS, directory: str | Path | None = None) -> Path:
    """Write the grid files of ``names`` that are missing or broken in ``directory``; return the directory."""
    directory = default_grids_dir() if directory is None else Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        _check_grids_dir(directory)  # raises: a file where the folder should be
    for name in names:
        grid = make_grid(name)
        path = grid_file(grid.name, directory)
        if not _is_valid(path, grid.npoints) or not (directory / f"grid-{grid.name}.npz").exists():
            write_grid_file(grid.name, directory)
    return directory


def use_local_grids(
    names: Iterable[str] = DEFAULT_GRIDS,
    directory: str | Path | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> Path:
    """Write the grid files (if needed) and point anemoi at them, so that no grid is downloaded.

    Sets :data:`GRIDS_PATH_VARIABLES` in ``environ`` (default ``os.environ``, inherited by subprocesses such as
    ``anemoi-training`` or data-loader workers) and, if anemoi-utils is already imported, reloads its settings so the
    running process sees the new path too.

    Returns
    -------
    Path
        The folder holding the grid files.
    """
    directory = ensure_grid_files(names, directory).resolve()
    env = os.environ if environ is None else environ
    for variable in GRIDS_PATH_VARIABLES:
        env[variable] = str(directory)
    if environ is None:
        _refresh_anemoi_settings()
    LOGGER.info("anemoi reads grids from %s (no download)", directory)
    return directory


def _refresh_anemoi_settings() -> None:
    """Make already-imported anemoi-utils modules see the new environment (both read it once and cache it)."""
    settings = sys.modules.get("anemoi.utils.settings")
    if settings is not None:
        settings.reload_settings()
    config = sys.modules.get("anemoi.utils.config")
    if config is not None:
        with config.CONFIG_LOCK:
            config.CONFIG.clear()


class LocalGridsCallback(Callback):
    """Hydra callback: :func:`use_local_grids` before the job (e.g. ``anemoi-training train``) builds any graph.

    Parameters
    ----------
    names : list of str, optional
        Grids to provide (default :data:`DEFAULT_GRIDS`).
    directory : str, optional
        Folder of the grid files (default :func:`default_grids_dir`).
    """

    def __init__(self, names: Iterable[str] | None = None, directory: str | None = None) -> None:
        self.names = tuple(DEFAULT_GRIDS if names is None else names)
        self.directory = directory

    def on_run_start(self, config: object, **kwargs: object) -> None:
        use_local_grids(self.names, self.directory)

    def on_multirun_start(self, config: object, **kwargs: object) -> None:
        use_local_grids(self.names, self.directory)

    def on_job_start(self, config: object, **kwargs: object) -> None:
        use_local_grids(self.names, self.directory)
