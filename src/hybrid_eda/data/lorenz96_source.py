"""The ``lorenz96`` anemoi-datasets source: a Lorenz-96 EDA archive as fields on a ring of grid points.

Layout in the zarr store that ``anemoi-datasets create`` writes (``[dates, variables, ensembles, values]``):

* **grid** -- the ``n`` (40) Lorenz-96 variables are the ``n`` grid points of one field, placed on the equator
  at ``latitude 0, longitude 360 * i / n`` degrees. The great-circle distance between points ``i`` and ``j`` is
  then proportional to their distance on the periodic L96 ring, so a k-nearest-neighbour graph
  (anemoi-graphs ``KNNEdges`` on ``AnemoiDatasetNodes``) with ``k = 2 h`` links each variable to its ``h``
  neighbours on either side, the stencil of the model (``h = 2`` for L96's ``x_{i-2}, x_{i-1}, x_{i+1}``).
  All points lie on one great circle, so area weights from a spherical Voronoi tessellation are undefined:
  weight the nodes uniformly.
* **ensembles** -- member ``m`` (``number`` ``m + 1`` = 1..N) of the EDA.
* **variables** -- anemoi variable names:

  ``x_bg``      background member ``m`` (the forecast from the previous analysis of member ``m``);
  ``x_an``      analysis member ``m``;
  ``truth``     the true state (identical for every member);
  ``obs``       the observations scattered onto the state, **NaN at unobserved variables** (identical for
                every member); needs ``build: {allow_nans: [obs]}`` in the recipe when not every variable
                is observed;
  ``obs_mask``  1 where a variable is observed, 0 elsewhere (identical for every member);
  ``x_bg_std``  the N-member sample std (``ddof=1``) of the background members, ``[n]`` per date (one "member":
                write it with ``members: [1]``); the target of the variance emulator, named ``<input>_std`` as the
                ensemble-statistics filter names it (``recipes/l96-eda-variance-std.yaml``);
  ``x_an_std``  the same of the analysis members.

  ``truth``, ``obs`` and ``obs_mask`` are replicated over the members because anemoi-datasets builds one
  hypercube (every variable must exist for every ``number``; ``join`` only concatenates field lists). For
  L96 the copies cost little (40 points); to store them once, build a second dataset with ``members: [1]``.

Recipe keys (``input: {lorenz96: {...}}``)::

    archive: path/to/run.npz     # written by `hybrid-eda l96 run ... --archive PATH` (relative to the cwd)
    run: {preset: ..., ...}      # or: run the cycling harness inline (hybrid_eda.l96.experiment)
    runs: [{...}, {...}]         # or: several runs, one after another in time (see below)
    variables: [x_bg, x_an, truth, obs]   # optional, default as shown
    members: [1, 2, 3]           # optional 1-based member numbers, default all
    start_date: 2002-01-20T00:00:00   # optional: the date of cycle 0 (default the archive's, 2000-01-01T00)

Cycle ``t`` of the archive is valid at ``start_date + t * cycle_hours``; every date of the recipe must be one
of these cycle times, otherwise the build stops with an error naming the archive's range.

**Hybrid (DAgger) archives.** A ``run`` with an ``emulator`` (a generator checkpoint path or any emulator spec)
and ``n_real`` records the *hybrid* cycle (:func:`hybrid_eda.l96.hybrid_archive.record_archives`): ``x_bg`` are
the N backgrounds the hybrid had (members 1..N_s real), ``x_an`` the analyses the *full* filter gives all N members
from them (same observations, each member its own perturbation), while the cycle continues with the hybrid
ensemble. A ``run`` with ``batch: B`` records seeds ``seed .. seed + B - 1``. Several seeds or runs (``runs:``)
are placed one after another in time: the first keeps all its cycles (the recipe's dates skip its spin-up as for
a single run), every later one drops its first ``spinup`` cycles, so its cycles follow on without a gap::

    runs:                                   # 500 + 2500 + 2500 cycles: dates 2000-01-01 .. 2003-10-09T18
      - {preset: sakov2008, method: enkf, inflation: 1.3, cycles: 3000, spinup: 500, seed: 1}
      - {preset: sakov2008, method: enkf, inflation: 1.3, cycles: 3000, spinup: 500, seed: 2,
         emulator: path/to/inference-last.ckpt, n_real: 10}
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.errors import UserInputError
from hybrid_eda.l96.archive import EDAArchive

LOGGER = logging.getLogger(__name__)

__all__ = [
    "VARIABLES",
    "DEFAULT_VARIABLES",
    "Lorenz96Source",
    "archive_field_dicts",
    "clear_cache",
    "load_archive",
    "ring_coordinates",
    "run_archive",
    "runs_archive",
]

#: The variables written when the recipe does not list any.
DEFAULT_VARIABLES: tuple[str, ...] = ("x_bg", "x_an", "truth", "obs")
#: Lorenz-96 is nondimensional.
UNITS = "1"

try:  # anemoi-datasets is a hard dependency of the package; the guard only keeps the numpy core importable.
    from anemoi.datasets.create.source import Source as _AnemoiSource
except ImportError:  # pragma: no cover - exercised only without anemoi-datasets
    _AnemoiSource = object  # type: ignore[assignment,misc]


def ring_coordinates(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes (degrees) of ``n`` equally spaced points on the equator.

    Returns
    -------
    tuple of np.ndarray
        ``([n] latitudes = 0, [n] longitudes = 360 i / n)``.
    """
    if n < 1:
        raise ValueError(f"A ring needs at least one point, got n={n}.")
    return np.zeros(n), 360.0 * np.arange(n) / n


def _obs_mask(archive: EDAArchive) -> np.ndarray:
    mask = np.zeros(archive.truth.shape[-1])  # [n]
    mask[archive.obs_index] = 1.0
    return np.broadcast_to(mask, (archive.cycles, 1, mask.size))  # [T, 1, n]


def _member_std(members: np.ndarray) -> np.ndarray:
    """N-member sample std (``ddof=1``, as the ensemble-statistics filter): ``[T, N, n] -> [T, 1, n]``."""
    if members.shape[1] < 2:
        raise ValueError(
            f"lorenz96 source: x_bg_std / x_an_std need an archive of at least 2 members, this one has "
            f"{members.shape[1]}; run the EDA with --members N >= 2."
        )
    return members.std(axis=1, ddof=1, keepdims=True)


#: How each variable is read from the archive: ``[T, N, n]``, or ``[T, 1, n]`` for fields shared by all members.
_EXTRACTORS: dict[str, Callable[[EDAArchive], np.ndarray]] = {
    "x_bg": lambda archive: archive.background,  # [T, N, n]
    "x_an": lambda archive: archive.analysis,  # [T, N, n]
    "truth": lambda archive: archive.truth[:, None, :],  # [T, 1, n]
    "obs": lambda archive: archive.observations_on_grid()[:, None, :],  # [T, 1, n]
    "obs_mask": _obs_mask,
    "x_bg_std": lambda archive: _member_std(archive.background),  # [T, 1, n]
    "x_an_std": lambda archive: _member_std(archive.analysis),  # [T, 1, n]
}
#: Every variable the source can write, in the order of the module docstring.
VARIABLES: tuple[str, ...] = tuple(_EXTRACTORS)


def archive_field_dicts(
    archive: EDAArchive,
    dates: Sequence[datetime | str],
    variables: Sequence[str] = DEFAULT_VARIABLES,
    members: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The archive's fields at ``dates`` as earthkit-data ``list-of-dicts`` entries.

    One dict per (date, variable, member) with ``values`` ``[n]``, ring ``latitudes``/``longitudes`` ``[n]``,
    ``param``, ``number`` (1-based member), ``valid_datetime`` and ``units``.

    Parameters
    ----------
    archive : EDAArchive
        The EDA run.
    dates : sequence of datetime or str
        Cycle times to extract (each must be in the archive).
    variables : sequence of str
        Names from :data:`VARIABLES`.
    members : sequence of int, optional
        1-based member numbers; default all ``1..N``.

    Returns
    -------
    list of dict
        ``len(dates) * len(variables) * len(members)`` field descriptions.
    """
    variables = check_variables(variables)
    members = check_members(members, archive.members)
    cycles = archive.cycle_indices(dates)
    latitudes, longitudes = ring_coordinates(archive.truth.shape[-1])
    arrays = {name: _EXTRACTORS[name](archive) for name in variables}
    cycle_dates = archive.dates
    fields = []
    # Emitted in the order anemoi-datasets sorts fields into its cube (date, variable name, member), so the
    # sort makes one pass over the fields instead of O(log) passes of costly metadata look-ups.
    for t in cycles:
        date = cycle_dates[t]
        for name in sorted(variables):
            values = arrays[name][t]  # [N or 1, n]
            for number in members:
                fields.append(
                    {
                        "param": name,
                        "values": np.array(values[number - 1 if values.shape[0] > 1 else 0]),  # [n]
                        "latitudes": latitudes,
                        "longitudes": longitudes,
                        "number": number,
                        "valid_datetime": date,
                        "units": UNITS,
                    }
                )
    return fields


def check_variables(variables: Sequence[str] | str | None) -> tuple[str, ...]:
    """Validate the recipe's ``variables`` list (default :data:`DEFAULT_VARIABLES`)."""
    if variables is None:
        return DEFAULT_VARIABLES
    if isinstance(variables, str):
        variables = [variables]
    unknown = [v for v in variables if v not in VARIABLES]
    if unknown or not variables:
        raise ValueError(
            f"lorenz96 source: unknown variable(s) {unknown or '(empty list)'}; "
            f"choose from {list(VARIABLES)} (default {list(DEFAULT_VARIABLES)})."
        )
    if len(set(variables)) != len(variables):
        raise ValueError(f"lorenz96 source: variables {list(variables)} lists a name twice; list each once.")
    return tuple(variables)


def check_members(members: Sequence[int] | int | None, n_members: int) -> tuple[int, ...]:
    """Validate the recipe's 1-based ``members`` list against an archive of ``n_members`` members."""
    if members is None:
        return tuple(range(1, n_members + 1))
    if isinstance(members, int):
        members = [members]
    bad = [m for m in members if not isinstance(m, int | np.integer) or not 1 <= m <= n_members]
    if bad or not members or len(set(members)) != len(members):
        raise ValueError(
            f"lorenz96 source: members {list(members)} must be distinct 1-based member numbers in 1..{n_members} "
            f"(the archive has {n_members} members); leave `members` out to write them all."
        )
    return tuple(int(m) for m in members)


def load_archive(path: str | Path) -> EDAArchive:
    """Read an archive for the source, with an error that says how to make one."""
    path = Path(path).expanduser()
    try:
        return EDAArchive.load(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"lorenz96 source: no EDA archive at {path.resolve()} (relative paths are read from the directory "
            f"where `anemoi-datasets create` runs). Write one with "
            f"`hybrid-eda l96 run ... --archive {path}`, or give `run: {{...}}` instead of `archive:`."
        ) from err
    except UserInputError as err:  # not an archive, truncated, keys missing: the message names the file and the fix
        raise UserInputError(f"lorenz96 source: {err}") from err


def run_archive(run: dict[str, Any]) -> EDAArchive:
    """Run the Lorenz-96 cycling harness with the recipe's ``run`` parameters and return its archive.

    Calls ``hybrid_eda.l96.experiment.run_experiment(ExperimentConfig.from_preset(**run), archive=True).archive``:
    every setting the recipe leaves out comes from the preset.
    """
    try:
        from hybrid_eda.l96 import experiment
    except ImportError as err:
        raise RuntimeError(
            "lorenz96 source: `run:` needs the cycling harness hybrid_eda.l96.experiment, which cannot be "
            f"imported ({err}). Write an archive with `hybrid-eda l96 run ... --archive PATH` and give "
            "`archive: PATH` instead."
        ) from err
    config_cls = getattr(experiment, "ExperimentConfig", None)
    if config_cls is None or not hasattr(experiment, "run_experiment"):
        raise RuntimeError(
            "lorenz96 source: hybrid_eda.l96.experiment lacks ExperimentConfig/run_experiment; "
            "give `archive: PATH` instead of `run:`."
        )
    _check_run_keys(run, config_cls)
    from_preset = getattr(config_cls, "from_preset", None)  # fills what the recipe leaves out from the preset
    config = from_preset(**run) if from_preset is not None else config_cls(**run)
    LOGGER.info("lorenz96 source: running the cycling harness with %s", config)
    result = experiment.run_experiment(config, archive=True)
    archive = getattr(result, "archive", None)
    if not isinstance(archive, EDAArchive):
        raise RuntimeError(
            "lorenz96 source: run_experiment(..., archive=True) returned no EDAArchive in `.archive`; "
            "give `archive: PATH` instead of `run:`."
        )
    return archive


def runs_archive(runs: Sequence[dict[str, Any]]) -> EDAArchive:
    """The archives of ``runs`` (each a ``run`` mapping; hybrid, batched or plain) one after another in time.

    A plain single-seed ``run`` is :func:`run_archive`; a hybrid or batched one is recorded by
    :func:`hybrid_eda.l96.hybrid_archive.record_archives`, one archive per seed. The first archive keeps all its
    cycles, every later one drops its first ``spinup`` cycles (:meth:`EDAArchive.concatenate`).
    """
    pieces: list[EDAArchive] = []
    for run in runs:
        if not isinstance(run, dict):
            raise ValueError(
                f"lorenz96 source: every entry of `runs` must be a mapping of run parameters, got {run!r}."
            )
        if run.get("emulator") is None and int(run.get("batch", 1)) == 1:
            pieces.append(run_archive(run))
            continue
        from hybrid_eda.l96.experiment import ExperimentConfig
        from hybrid_eda.l96.hybrid_archive import record_archives

        _check_run_keys(run, ExperimentConfig)
        config = ExperimentConfig.from_preset(**run)
        LOGGER.info("lorenz96 source: recording %s", config)
        pieces.extend(record_archives(config))
    if not pieces:
        raise ValueError("lorenz96 source: `runs` is empty; give at least one run.")
    if len(pieces) == 1:
        return pieces[0]
    return EDAArchive.concatenate([pieces[0]] + [p.from_cycle(int(p.settings.get("spinup", 0))) for p in pieces[1:]])


def _check_run_keys(run: dict[str, Any], config_cls: Any) -> None:
    if dataclasses.is_dataclass(config_cls):
        known = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(run) - known)
        if unknown:
            raise ValueError(f"lorenz96 source: unknown `run` parameter(s) {unknown}; accepted: {sorted(known)}.")


@functools.lru_cache(maxsize=2)
def _cached_archive(path: str, mtime_ns: int, size: int) -> EDAArchive:
    """One archive file, read once per (path, modification time, size)."""
    return _read_only(load_archive(path))


@functools.lru_cache(maxsize=2)
def _cached_run(run_json: str) -> EDAArchive:
    """One inline harness run (or list of runs), executed once per set of parameters."""
    runs = json.loads(run_json)
    return _read_only(runs_archive(runs if isinstance(runs, list) else [runs]))


def _read_only(archive: EDAArchive) -> EDAArchive:
    """Protect a memoised archive against accidental in-place edits."""
    for name in ("truth", "observations", "obs_index", "background", "analysis"):
        getattr(archive, name).flags.writeable = False
    return archive


def clear_cache() -> None:
    """Forget the archives and runs memoised by the source (for tests, or after rewriting an archive in place
    with the same size and time stamp)."""
    _cached_archive.cache_clear()
    _cached_run.cache_clear()


class Lorenz96Source(_AnemoiSource):
    """anemoi-datasets source ``lorenz96``: fields of a Lorenz-96 EDA archive (see the module docstring).

    Parameters
    ----------
    context : Any
        The anemoi-datasets build context.
    archive : str, optional
        Path of an ``.npz`` archive written by ``EDAArchive.save``.
    run : dict, optional
        Parameters of ``hybrid_eda.l96.experiment.ExperimentConfig``; the run happens once per build process
        (JSON-serialisable values only). With ``emulator`` and ``n_real``: a hybrid (DAgger) archive.
    runs : list of dict, optional
        Several such runs, one after another in time (module docstring).
    start_date : str, optional
        ISO date of cycle 0 instead of the archive's (e.g. to place a store right after another one, so that
        anemoi-datasets can ``concat`` them).
    variables : list of str, optional
        Subset of :data:`VARIABLES`; default :data:`DEFAULT_VARIABLES`.
    members : list of int, optional
        1-based member numbers to write; default all.
    """

    emoji = "🦋"

    def __init__(
        self,
        context: Any,
        archive: str | None = None,
        run: dict[str, Any] | None = None,
        variables: Sequence[str] | None = None,
        members: Sequence[int] | None = None,
        runs: Sequence[dict[str, Any]] | None = None,
        start_date: str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(context)
        if unknown:
            raise ValueError(
                f"lorenz96 source: unknown key(s) {sorted(unknown)}; "
                "accepted: archive, run, runs, start_date, variables, members."
            )
        if sum(x is not None for x in (archive, run, runs)) != 1:
            raise ValueError(
                "lorenz96 source: give exactly one of `archive: PATH` (an archive written by "
                "`hybrid-eda l96 run ... --archive PATH`), `run: {preset: ..., members: ..., cycles: ...}` or "
                "`runs: [{...}, {...}]`."
            )
        if run is not None and not isinstance(run, dict):
            raise ValueError(f"lorenz96 source: `run` must be a mapping of harness parameters, got {run!r}.")
        if runs is not None and (
            isinstance(runs, dict | str) or not runs or not all(isinstance(r, dict) for r in runs)
        ):
            raise ValueError(
                f"lorenz96 source: `runs` must be a non-empty list of mappings of harness parameters, got {runs!r}."
            )
        if runs is not None:
            run = [dict(r) for r in runs]  # type: ignore[assignment]
        if run is not None:
            try:
                json.dumps(run)
            except TypeError as err:
                raise ValueError(
                    f"lorenz96 source: `run` parameters must be numbers, strings, lists or mappings ({err}); "
                    "quote dates and other special values in the recipe."
                ) from err
        self.archive_path = archive
        self.run = (dict(run) if isinstance(run, dict) else list(run)) if run is not None else None
        self.variables = check_variables(variables)
        self.members = members
        if isinstance(start_date, datetime):  # YAML reads an unquoted ISO date as a datetime
            start_date = start_date.isoformat()
        self.start_date = None if start_date is None else str(start_date)
        if self.start_date is not None:
            try:
                datetime.fromisoformat(self.start_date)
            except ValueError as err:
                raise ValueError(
                    f"lorenz96 source: start_date {start_date!r} is not an ISO date; write e.g. 2002-01-20T00:00:00."
                ) from err

    def _archive(self) -> EDAArchive:
        """The archive (cycle 0 moved to ``start_date`` when given)."""
        archive = self._stored_archive()
        if self.start_date is None:
            return archive
        return dataclasses.replace(archive, start_date=self.start_date)

    def _stored_archive(self) -> EDAArchive:
        """The archive, loaded (or run) once per build process: anemoi-datasets makes a new source and a new
        context for every group of dates, so the memo lives at module level (see :func:`clear_cache`)."""
        if self.archive_path is not None:
            path = Path(self.archive_path).expanduser()
            if not path.exists() and path.with_name(path.name + ".npz").exists():
                path = path.with_name(path.name + ".npz")
            if not path.exists():
                return load_archive(path)  # raises the helpful FileNotFoundError
            stat = path.stat()
            return _cached_archive(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        return _cached_run(json.dumps(self.run, sort_keys=True))

    def _check_nans(self, archive: EDAArchive) -> None:
        """Stop early, with the fix, when ``obs`` holds NaNs that the recipe does not allow."""
        if "obs" not in self.variables or archive.obs_index.size == archive.truth.shape[-1]:
            return
        recipe = getattr(self.context, "recipe", None)
        allow = getattr(getattr(recipe, "build", None), "allow_nans", None)
        if allow is None:  # not built by anemoi-datasets' gridded context: nothing to check against
            return
        if allow is True or (isinstance(allow, list | tuple) and "obs" in allow):
            return
        raise ValueError(
            f"lorenz96 source: only {archive.obs_index.size} of {archive.truth.shape[-1]} variables are observed, "
            "so `obs` is NaN at the others. Add `build: {allow_nans: [obs]}` to the recipe, or drop `obs` from "
            "`variables` (keep `obs_mask` if you need to know what was observed)."
        )

    def execute_valid_dates(self, argument: Any) -> Any:
        """Fields for the requested valid dates, as an earthkit-data FieldList."""
        import earthkit.data as ekd

        dates = list(getattr(argument, "dates", argument))
        archive = self._archive()
        self._check_nans(archive)
        self.context.trace(self.emoji, f"lorenz96: {len(dates)} dates, variables {list(self.variables)}")
        fields = archive_field_dicts(archive, dates, self.variables, self.members)
        return ekd.from_source("list-of-dicts", fields)
