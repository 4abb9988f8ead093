"""Build ensemble stores with anemoi-datasets' own steps, in memory that does not grow with the number of members.

anemoi-datasets 0.5.47 keeps whole date rows of a store in memory (a row is ``variables x members x grid x 4``
bytes: 4.9 GB for the N80 x 137-level x 50-member EDA store):

* ``load`` writes every date through a ``WriteBehindBuffer`` that caches one row (``buffering._Buffer`` reads the
  row from zarr before it is filled) and builds the next row's cache before it writes and drops the previous one:
  two rows at each date change, plus one more read of row 0 when the buffer is created (``array[0].size``);
* ``finalise`` (or ``load --parts``) computes the dataset statistics from a ``ReadAheadBuffer`` that holds the
  current row and reads the next one ahead; ``_CollectorBase.update`` converts the row to float64 (two rows) and
  builds a NaN mask of it (half a row), and ``_ConstantsCollector`` keeps a copy of each variable's first date
  (one row) and its NaN mask (a quarter row): about five rows, 24.5 GB at N = 50.

:class:`MemberStreamingCreator` is anemoi's own gridded creator (same recipe, same ``init`` / ``load --parts`` /
``finalise`` steps, same zarr layout and metadata) with those two places streamed by ensemble chunks (one member
per chunk in our recipes, ``output: chunking: {dates: 1, ensembles: 1}``):

* :func:`write_cube` fills one ensemble chunk of one date (all variables and grid points) from the GRIB fields and
  writes it as whole zarr chunks, so ``load`` holds one member row (98 MB at N80 x 137 levels) besides earthkit's
  metadata of the group's fields (~0.6 GB for the 137,200 fields of 4 dates x 686 x 50), and sorts the fields
  into a cube once instead of twice (~3 minutes each for those fields);
* :func:`stream_statistics` feeds anemoi's own ``_Collector`` one ensemble chunk at a time (the same parallel
  mean / M2 update, merged over members instead of over a whole row: equal to float64 rounding) and checks
  "constant in time" from SHA-256 digests of each variable's members instead of a copy of the first date.

Tendency statistics (``statistics: tendencies:``) need consecutive whole rows and are not streamed: such recipes
stop with an error (build them with ``anemoi-datasets``). Run it with ``hybrid-eda store create|init|load|finalise``
(:mod:`hybrid_eda.data.store_cli`) or :func:`run_steps`; the result is read by ``open_dataset`` like any store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import hybrid_eda.data.anemoi_compat  # noqa: F401  isort: skip  (stops unless anemoi-datasets is the pinned 0.5.47)
from anemoi.datasets.create.gridded.creator import SimpleGriddedCreator
from anemoi.datasets.create.statistics import StatisticsCollector, _Collector, _ConstantsCollector
from anemoi.transform.variables import Variable
from earthkit.data.indexing.cube import Cubelet
from gribapi.errors import GribInternalError

from hybrid_eda.data.store_checks import check_store_path, explain_grib_error, read_recipe

__all__ = [
    "CREATE_STEPS",
    "MemberStreamingCreator",
    "make_creator",
    "run_steps",
    "stream_statistics",
    "write_cube",
]

LOGGER = logging.getLogger(__name__)

#: What ``anemoi-datasets create`` runs, in order (``commands/create.py``, serial mode); the additions and ``patch``
#: steps do nothing for gridded stores but are kept so that a store ends in the same state.
CREATE_STEPS = (
    "init",
    "load",
    "finalise",
    "init_additions",
    "load_additions",
    "finalise_additions",
    "patch",
    "cleanup",
    "verify",
)


# -- load: one ensemble chunk of one date at a time ------------------------------------------------------------------
def write_cube(cube: Any, array: Any, indexes: Sequence[int]) -> None:
    """Write an earthkit field cube ``[dates, variables, members]`` into ``array`` one ensemble chunk at a time.

    Parameters
    ----------
    cube : earthkit.data.indexing.cube.FieldCube
        Fields ordered by (date, variable, member), as anemoi's gridded result builds them (``flatten_values``).
    array : zarr.Array
        The store's ``data`` array ``[dates, variables, ensembles, grid]``, chunked by date.
    indexes : sequence of int
        Position in ``array`` of each date of the cube.

    Notes
    -----
    A block covers whole zarr chunks (one date, ``array.chunks[2]`` members, every variable and grid point), so
    zarr never reads a chunk back to update it; memory holds one block (plus one field being decoded).
    """
    n_dates, n_variables, n_members = cube.user_shape
    if (n_variables, n_members) != tuple(array.shape[1:3]) or len(indexes) != n_dates:
        raise ValueError(
            f"the fields form a cube of {cube.user_shape} (dates, variables, members) but the store holds "
            f"{array.shape[1:3]} (variables, members) for {len(indexes)} dates; re-run init with this recipe"
        )
    step = int(array.chunks[2])
    block = np.empty((1, n_variables, min(step, n_members), array.shape[3]), dtype=array.dtype)  # [1, var, e, grid]
    start = time.perf_counter()
    for d in range(n_dates):
        row = int(indexes[d])
        for m0 in range(0, n_members, step):
            m1 = min(m0 + step, n_members)
            for v in range(n_variables):
                for m in range(m0, m1):
                    values = Cubelet(cube, (d, v, m)).to_numpy().reshape(-1)  # [grid]
                    if values.size != block.shape[-1]:
                        raise _grid_mismatch(cube, (d, v, m), values.size, block.shape[-1])
                    block[0, v, m - m0] = values
            array[row : row + 1, :, m0:m1, :] = block[:, :, : m1 - m0]
        LOGGER.info("wrote date %d (row %d): %d members in %.1f s", d, row, n_members, time.perf_counter() - start)


def _grid_mismatch(cube: Any, where: tuple[int, int, int], npoints: int, expected: int) -> ValueError:
    """The error for a field on another grid than the store (e.g. members on O32 joined with fields on N32)."""
    from hybrid_eda.data.grids import grid_name_of_size

    coords = cube.user_coords
    names = [list(values)[i] for values, i in zip(coords.values(), where, strict=False)]
    label = ", ".join(f"{key} {name}" for key, name in zip(coords, names, strict=False)) or f"field {where}"
    return ValueError(
        f"the recipe mixes grids: {label} has {npoints} points ({grid_name_of_size(npoints)}) but the store's grid "
        f"has {expected} ({grid_name_of_size(expected)}, from the first field); build every source of one store, "
        "and the member and std stores trained together, from GRIB files on the same grid"
    )


# -- finalise: statistics one ensemble chunk at a time -------------------------------------------------------------
class StreamedConstantsCollector(_ConstantsCollector):
    """anemoi's constant-in-time check of one variable, from a digest of each date instead of a copy of the first.

    ``_hash`` is the SHA-256 of the variable's first non-missing date (all members, bitwise) and stays set when
    pickled (``load --parts`` writes partial statistics), so anemoi's ``_ConstantsCollector.merge`` compares groups
    as it does for its own collectors. Values compare bitwise (upstream compares with ``==``, NaN equal to NaN):
    the two differ only for ``-0.0`` against ``0.0`` or NaNs with different payloads.
    """

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()


class _DigestRow:
    """Running SHA-256 digests of every still-constant variable for one date, fed one ensemble block at a time."""

    def __init__(self, collectors: list[StreamedConstantsCollector]) -> None:
        self.candidates = [c for c in collectors if c._is_constant]
        self.hashers = [hashlib.sha256() for _ in self.candidates]
        self.all_nan = [True] * len(self.candidates)

    def add(self, block: np.ndarray) -> None:
        """Add the members of ``block`` (``[1, var, e, grid]``, members in store order)."""
        for k, collector in enumerate(self.candidates):
            values = np.ascontiguousarray(block[0, collector._index])  # [e, grid]
            self.hashers[k].update(values)
            if self.all_nan[k]:
                self.all_nan[k] = bool(np.isnan(values).all())

    def close(self) -> None:
        """Compare the date with the first: a date whose values are all NaN is missing and skipped (as upstream)."""
        for k, collector in enumerate(self.candidates):
            if self.all_nan[k]:
                continue
            digest = self.hashers[k].hexdigest()
            if collector._hash is None:
                collector._hash = digest
            elif digest != collector._hash:
                collector._is_constant = False


def stream_statistics(array: Any, rows: Iterable[int], collector: StatisticsCollector) -> StatisticsCollector:
    """Fill ``collector`` with the statistics of ``array[rows]``, reading one ensemble chunk of one date at a time.

    Parameters
    ----------
    array : zarr.Array
        The store's ``data`` array ``[dates, variables, ensembles, grid]``.
    rows : iterable of int
        Dates (positions on axis 0) that enter the statistics, i.e. already filtered by the statistics period.
    collector : anemoi.datasets.create.statistics.StatisticsCollector
        A fresh collector without tendencies; its per-variable collector and constant checks are replaced.

    Returns
    -------
    StatisticsCollector
        ``collector``, as anemoi's ``collect`` would leave it after the same rows (to float64 rounding).
    """
    if collector._tendencies:
        raise ValueError(
            "tendency statistics need whole consecutive dates and are not streamed by member; remove "
            "`statistics: tendencies:` from the recipe or build this store with anemoi-datasets"
        )
    names = list(collector._variables_names)
    if len(names) != array.shape[1]:
        raise ValueError(f"the store has {array.shape[1]} variables but its metadata names {len(names)}")
    base = _Collector(names)
    constants = [StreamedConstantsCollector(i, names, name) for i, name in enumerate(names)]
    step = int(array.chunks[2])
    n_members = array.shape[2]
    start = time.perf_counter()
    for row in rows:
        digests = _DigestRow(constants)
        for m0 in range(0, n_members, step):
            block = array[row : row + 1, :, m0 : m0 + step, :]  # [1, var, e, grid], float32
            base.update(block)  # pooled over the members and grid points of the block, per variable
            digests.add(block)
            del block
        digests.close()
        LOGGER.info("statistics of row %d: %d members in %.1f s", row, n_members, time.perf_counter() - start)
    collector._collector = base
    collector._constants_collectors = {c._name: c for c in constants}
    return collector


class MemberStreamingCreator(SimpleGriddedCreator):
    """anemoi-datasets' gridded creator that loads and computes statistics one ensemble chunk at a time.

    Drop-in for ``SimpleGriddedCreator`` (what ``anemoi-datasets`` uses for ``layout: gridded``): the same recipe,
    steps and store; only ``load_result`` (writing) and ``_compute_partial_statistics`` (reading for statistics)
    differ, see the module docstring.
    """

    def load_result(self, result: Any, dataset: Any) -> None:
        """Write the fields of one group of dates into the store (upstream's checks, streamed writing)."""
        dates = [np.datetime64(d) for d in result.group_of_dates]
        # Sorting the fields into a cube takes minutes for 137,200 fields. Upstream sorts twice (get_cube() here,
        # then again in build_coords() for typed_variables below); build_coords() keeps its cube, so reuse it.
        result.build_coords()
        cube = getattr(result, "_cube", None)
        if cube is None:
            cube = result.get_cube()
        # cube: [dates, variables, members] of fields
        in_data = [np.datetime64(d) for d in cube.user_coords["valid_datetime"]]
        if in_data != dates:
            missing = sorted(set(dates) - set(in_data))
            extra = sorted(set(in_data) - set(dates))
            raise ValueError(
                f"the source gave dates other than the requested ones: missing {[str(d) for d in missing]}, "
                f"extra {[str(d) for d in extra]}; check the source's dates and files"
            )
        store_dates = np.asarray(dataset.dates, dtype="datetime64[s]")
        indexes = np.flatnonzero(np.isin(store_dates, np.asarray(in_data, dtype="datetime64[s]")))
        LOGGER.info("loading %s dates x %s variables x %s members", *cube.user_shape)
        write_cube(cube, dataset.data, indexes)
        Variable.check_compatibility(dataset.typed_variables, result.typed_variables)

    def _compute_partial_statistics(self, dataset: Any, start: int, end: int) -> StatisticsCollector:
        dates = dataset.dates
        collector = StatisticsCollector(
            variables_names=self.variables_names,
            filter=self.recipe.statistics.statistics_filter(dates),
            tendencies=self._tendencies_to_compute(dataset),
        )
        rows = collector._filter(np.arange(start, end), dates[start:end])  # the statistics period, as upstream
        return stream_statistics(dataset.data, [int(r) for r in rows], collector)


# -- steps ---------------------------------------------------------------------------------------------------------
def make_creator(path: str | Path, recipe: str | Path | None = None, **kwargs: Any) -> MemberStreamingCreator:
    """A :class:`MemberStreamingCreator` for ``path``, from a recipe file (``init``) or the store's own recipe.

    Mirrors ``anemoi.datasets.create.creator.Creator.from_recipe``: sets the recipe's ``build.env`` variables and
    accepts the same keyword arguments (``overwrite``, ``parts``, ``work_dir``, ...).
    """
    from anemoi.datasets.create.recipe import loader_recipe_from_yaml, loader_recipe_from_zarr

    if recipe is None:
        if not Path(path, ".zarray").exists() and not Path(path, ".zgroup").exists():
            raise FileNotFoundError(f"no store at {path}; create it first with the init step (init RECIPE {path})")
        loaded = loader_recipe_from_zarr(str(path))
    else:
        read_recipe(recipe)  # a clear error for a missing file, bad YAML or a YAML that is not a mapping
        loaded = loader_recipe_from_yaml(str(recipe))
    if loaded.output.layout != "gridded":
        raise ValueError(
            f"only gridded stores are streamed by member; this recipe has layout {loaded.output.layout!r} "
            "(build it with anemoi-datasets)"
        )
    for key, value in loaded.build.env.items():
        os.environ[key] = str(value)
    return MemberStreamingCreator(path=str(path), recipe=loaded, **kwargs)


def run_steps(
    steps: Sequence[str],
    path: str | Path,
    recipe: str | Path | None = None,
    *,
    overwrite: bool = False,
    parts: str | None = None,
) -> None:
    """Run anemoi-datasets steps (``init``, ``load``, ``finalise``, ...) with :class:`MemberStreamingCreator`.

    Each step gets a fresh creator, as ``anemoi-datasets <step>`` would, from ``recipe`` when given (as
    ``anemoi-datasets create`` does for all its steps), else from the recipe stored in the store by ``init``.
    ``steps=CREATE_STEPS`` is ``anemoi-datasets create``.
    """
    from anemoi.datasets.create.tasks import TaskDispatcher

    unknown = [s for s in steps if s not in CREATE_STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; choose from {list(CREATE_STEPS)}")
    if "init" in steps and recipe is None:
        raise ValueError("the init step needs the recipe (a YAML file)")
    recipe_dict = read_recipe(recipe) if recipe is not None else None
    new_store = False
    if "init" in steps:
        check_store_path(path, overwrite)  # before anemoi-datasets, which would remove whatever is at `path`
        new_store = not Path(path).exists()
    for step in steps:
        kwargs: dict[str, Any] = {"overwrite": overwrite} if step == "init" else {}
        if step == "load" and parts:
            kwargs["parts"] = parts
        creator = make_creator(path, recipe, **kwargs)
        start = time.perf_counter()
        try:
            getattr(TaskDispatcher(creator), f"task_{step}")()
        except BaseException as err:
            # A store this call began and whose init failed holds nothing: remove it, so that a new try needs no
            # --overwrite (a store that existed before, or one whose dates are partly loaded, is left as it is).
            removed = step == "init" and new_store and _remove_store(Path(path))
            if isinstance(err, GribInternalError):  # e.g. PrematureEndOfFileError of a truncated file
                stored = getattr(creator.recipe, "model_dump", None)  # the store's own recipe (load, finalise)
                raise explain_grib_error(
                    err, recipe_dict or (stored() if stored else None), path, step, store_left=not removed
                ) from err
            raise
        LOGGER.info("step %s of %s done in %.1f s", step, path, time.perf_counter() - start)


def _remove_store(path: Path) -> bool:
    """Remove a store that this process created (and its lock file); whether it is gone."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    Path(f"{path}.lock").unlink(missing_ok=True)
    return not path.exists()
