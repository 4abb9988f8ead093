"""The Lorenz-96 EDA archive and its round trip through anemoi-datasets (the ``lorenz96`` source plugin).

The round trip builds the shipped recipe ``recipes/l96-eda.yaml`` with its ``run:`` swapped for a small
synthetic archive, through the ``anemoi-datasets create`` command line, and reads the store back with
``anemoi.datasets.open_dataset``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

import hybrid_eda.l96
from hybrid_eda.data.lorenz96_source import (
    DEFAULT_VARIABLES,
    VARIABLES,
    Lorenz96Source,
    archive_field_dicts,
    clear_cache,
    ring_coordinates,
    run_archive,
)
from hybrid_eda.l96.archive import EDAArchive
from hybrid_eda.resources import recipes_dir

T, N, n = 8, 4, 40  # cycles, members, state size
OBS_EVERY = 2
START = datetime(2000, 1, 1)
# The recipe takes cycles 1..6 of the 8, so the date -> cycle offset is exercised.
FIRST, LAST = 1, 6


def make_archive(seed: int = 0, obs_every: int = OBS_EVERY) -> EDAArchive:
    """A synthetic archive: random arrays of the right shapes, distinct values everywhere."""
    rng = np.random.default_rng(seed)
    index = np.arange(0, n, obs_every)
    truth = rng.standard_normal((T, n))  # [T, n]
    return EDAArchive(
        truth=truth,
        observations=truth[:, index] + 0.5 * rng.standard_normal((T, index.size)),  # [T, p]
        obs_index=index,
        background=truth[:, None, :] + rng.standard_normal((T, N, n)),  # [T, N, n]
        analysis=truth[:, None, :] + 0.3 * rng.standard_normal((T, N, n)),  # [T, N, n]
        settings={"preset": "synthetic", "members": N, "seed": seed},
        start_date=START.isoformat(),
        cycle_hours=6,
    )


def _date(t: int) -> datetime:
    return START + t * timedelta(hours=6)


def _isolated_env(root: Path) -> dict[str, str]:
    """Environment for anemoi commands: no writes to the real home, caches under ``root``, one thread."""
    env = dict(os.environ)
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "home" / ".config"),
        XDG_CACHE_HOME=str(root / "cache"),
        MPLCONFIGDIR=str(root / "cache" / "mpl"),
        ANEMOI_SETTINGS_UTILS__CACHE_DIRECTORY=str(root / "cache" / "anemoi"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
    )
    return env


def _shipped_recipe() -> dict:
    return yaml.safe_load((recipes_dir() / "l96-eda.yaml").read_text())


def _recipe(archive: Path, start: datetime, end: datetime, **source: object) -> dict:
    """The shipped recipe with ``run:`` replaced by ``archive:`` and the dates narrowed to the test archive."""
    recipe = _shipped_recipe()
    params = {k: v for k, v in recipe["input"]["lorenz96"].items() if k != "run"}
    params.update(archive=str(archive), **source)
    recipe["input"] = {"lorenz96": params}
    recipe["dates"] = {"start": start.isoformat(), "end": end.isoformat(), "frequency": "6h"}
    return recipe


def _create(recipe: dict, root: Path, name: str) -> subprocess.CompletedProcess:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return subprocess.run(
        [sys.executable, "-m", "anemoi.datasets", "create", str(path), str(root / f"{name}.zarr"), "--overwrite"],
        cwd=root,
        env=_isolated_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---------------------------------------------------------------------------------------------------------------
# The archive itself


def test_archive_save_load_round_trip(tmp_path):
    archive = make_archive()
    path = archive.save(tmp_path / "run")  # np.savez adds the suffix; save returns the real path
    assert path == tmp_path / "run.npz" and path.exists()
    for where in (path, tmp_path / "run"):
        loaded = EDAArchive.load(where)
        for name in ("truth", "observations", "obs_index", "background", "analysis"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(archive, name))
        assert loaded.settings == archive.settings
        assert (loaded.start_date, loaded.cycle_hours) == (archive.start_date, archive.cycle_hours)
        assert (loaded.cycles, loaded.members) == (T, N)


def test_archive_dates_and_cycle_indices():
    archive = make_archive()
    assert archive.dates == [_date(t) for t in range(T)]
    np.testing.assert_array_equal(archive.cycle_indices([_date(5), "2000-01-01T06:00:00", _date(0)]), [5, 1, 0])
    names_range = r"outside the archive.*8 cycles every 6 h from 2000-01-01T00:00:00 to 2000-01-02T18:00:00"
    with pytest.raises(ValueError, match=names_range):
        archive.cycle_indices([_date(2), _date(T)])
    with pytest.raises(ValueError, match="outside the archive"):
        archive.cycle_indices([START - timedelta(hours=6)])
    with pytest.raises(ValueError, match="between two cycles"):
        archive.cycle_indices([START + timedelta(hours=3)])


def test_observations_on_grid_put_nan_where_unobserved():
    archive = make_archive()
    grid = archive.observations_on_grid()  # [T, n]
    np.testing.assert_array_equal(grid[:, ::OBS_EVERY], archive.observations)
    assert np.isnan(grid[:, 1::OBS_EVERY]).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"analysis": np.zeros((T, N + 1, n))}, "must both be"),
        ({"truth": np.zeros((T - 1, n))}, "disagree on the number of cycles"),
        ({"obs_index": np.arange(3)}, "len\\(obs_index\\)"),
        ({"obs_index": np.arange(n // 2) + n // 2 + 1}, "indices in \\[0, 40\\)"),
        ({"cycle_hours": 0}, "cycle_hours must be a positive"),
        ({"start_date": "yesterday"}, "Cannot read the date 'yesterday'"),
    ],
)
def test_archive_rejects_inconsistent_arrays(change, message):
    fields = {k: getattr(make_archive(), k) for k in ("truth", "observations", "obs_index", "background", "analysis")}
    fields.update(start_date=START.isoformat(), cycle_hours=6)
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        EDAArchive(**fields)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="hybrid-eda l96 run"):
        EDAArchive.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", truth=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not a hybrid-eda L96 archive"):
        EDAArchive.load(tmp_path / "other.npz")


# ---------------------------------------------------------------------------------------------------------------
# The source, without anemoi-datasets' build machinery


def test_ring_coordinates_are_equally_spaced_on_the_equator():
    lat, lon = ring_coordinates(n)
    np.testing.assert_array_equal(lat, 0.0)
    np.testing.assert_allclose(np.diff(lon), 9.0)
    assert lon[0] == 0.0 and lon[-1] < 360.0


def test_field_dicts_hold_every_member_and_shared_fields():
    archive = make_archive()
    dates = [_date(3), _date(1)]
    fields = archive_field_dicts(archive, dates, VARIABLES, members=[2, 4])
    assert len(fields) == len(dates) * len(VARIABLES) * 2
    by_key = {(f["valid_datetime"], f["param"], f["number"]): f["values"] for f in fields}
    np.testing.assert_array_equal(by_key[(_date(3), "x_bg", 2)], archive.background[3, 1])
    np.testing.assert_array_equal(by_key[(_date(1), "x_an", 4)], archive.analysis[1, 3])
    for number in (2, 4):  # truth, obs and the mask are the same for every member
        np.testing.assert_array_equal(by_key[(_date(3), "truth", number)], archive.truth[3])
        np.testing.assert_array_equal(by_key[(_date(1), "obs", number)], archive.observations_on_grid()[1])
        np.testing.assert_array_equal(by_key[(_date(1), "obs_mask", number)], np.arange(n) % OBS_EVERY == 0)
    assert all(f["latitudes"].shape == f["longitudes"].shape == f["values"].shape == (n,) for f in fields)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variables": ["x_bg", "spread"]}, r"unknown variable\(s\) \['spread'\]"),
        ({"variables": ["x_bg", "x_bg"]}, "lists a name twice"),
        ({"members": [0, 1]}, "1-based member numbers in 1..4"),
        ({"members": [5]}, "1-based member numbers in 1..4"),
    ],
)
def test_field_dicts_reject_bad_selection(kwargs, message):
    with pytest.raises(ValueError, match=message):
        archive_field_dicts(make_archive(), [_date(0)], **kwargs)


def _context(allow_nans: bool | list[str] = False) -> types.SimpleNamespace:
    """The parts of anemoi-datasets' build context the source uses."""
    recipe = types.SimpleNamespace(build=types.SimpleNamespace(allow_nans=allow_nans))
    return types.SimpleNamespace(recipe=recipe, trace=lambda *args: None)


def test_source_returns_a_fieldlist(tmp_path):
    path = make_archive().save(tmp_path / "a.npz")
    source = Lorenz96Source(_context(["obs"]), archive=str(path), members=[3])
    fields = source.execute([_date(2), _date(4)])
    assert len(fields) == 2 * len(DEFAULT_VARIABLES)
    x_an = fields.sel(param="x_an", valid_datetime=_date(4).isoformat())[0]
    np.testing.assert_allclose(x_an.to_numpy(), make_archive().analysis[4, 2])
    assert x_an.metadata("number") == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of `archive: PATH`"),
        ({"archive": "a.npz", "run": {"preset": "sakov2008"}}, "give exactly one of"),
        ({"archive": "a.npz", "dates": 3}, r"unknown key\(s\) \['dates'\]"),
        ({"run": "sakov2008"}, "`run` must be a mapping"),
        ({"run": {"start": datetime(2000, 1, 1)}}, "quote dates"),
    ],
)
def test_source_rejects_bad_recipe_keys(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Lorenz96Source(_context(), **kwargs)


def test_source_names_the_missing_archive_and_the_fix(tmp_path):
    source = Lorenz96Source(_context(), archive=str(tmp_path / "nowhere.npz"))
    with pytest.raises(FileNotFoundError, match=r"no EDA archive at .*nowhere\.npz.*hybrid-eda l96 run"):
        source.execute([_date(0)])


def test_source_asks_for_allow_nans_when_obs_has_gaps(tmp_path):
    path = make_archive().save(tmp_path / "a.npz")
    with pytest.raises(ValueError, match=r"Add `build: \{allow_nans: \[obs\]\}`"):
        Lorenz96Source(_context(False), archive=str(path)).execute([_date(0)])
    full = make_archive(obs_every=1).save(tmp_path / "full.npz")  # everything observed: no NaN, no need
    assert len(Lorenz96Source(_context(False), archive=str(full)).execute([_date(0)])) == len(DEFAULT_VARIABLES) * N


def test_source_run_needs_the_harness(monkeypatch):
    monkeypatch.delattr(hybrid_eda.l96, "experiment", raising=False)
    monkeypatch.setitem(sys.modules, "hybrid_eda.l96.experiment", None)  # import fails
    with pytest.raises(RuntimeError, match="give\\s+`archive: PATH` instead"):
        run_archive({"preset": "sakov2008"})


def test_source_runs_the_harness_once(monkeypatch):
    calls = []

    @dataclass(frozen=True)
    class ExperimentConfig:
        preset: str = "sakov2008"
        members: int = 20
        seed: int = 0

    def run_experiment(config, archive=False):
        calls.append((config, archive))
        return types.SimpleNamespace(archive=make_archive(seed=config.seed))

    fake = types.ModuleType("hybrid_eda.l96.experiment")
    fake.ExperimentConfig, fake.run_experiment = ExperimentConfig, run_experiment
    monkeypatch.setitem(sys.modules, "hybrid_eda.l96.experiment", fake)
    monkeypatch.setattr(hybrid_eda.l96, "experiment", fake, raising=False)
    clear_cache()

    for cycles in ([0], [1, 2]):  # two groups of dates: anemoi makes a new source and context for each
        source = Lorenz96Source(_context(["obs"]), run={"members": 4, "seed": 7})
        fields = source.execute([_date(t) for t in cycles])
        truth = fields.sel(param="truth", number=1, valid_datetime=_date(cycles[-1]).isoformat())[0]
        np.testing.assert_allclose(truth.to_numpy(), make_archive(seed=7).truth[cycles[-1]])
    assert calls == [(ExperimentConfig(members=4, seed=7), True)]
    with pytest.raises(ValueError, match=r"unknown `run` parameter\(s\) \['cycels'\]"):
        run_archive({"cycels": 10})


# ---------------------------------------------------------------------------------------------------------------
# Round trip through `anemoi-datasets create` and `open_dataset`


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The shipped recipe built from a synthetic archive with all five variables: (archive, zarr path, root)."""
    root = tmp_path_factory.mktemp("l96_zarr")
    archive = make_archive()
    path = archive.save(root / "l96-eda.npz")
    recipe = _recipe(path, _date(FIRST), _date(LAST), variables=list(VARIABLES))
    out = _create(recipe, root, "l96")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return archive, root / "l96.zarr", root


@pytest.fixture
def open_l96(built, monkeypatch):
    """``open_dataset`` with anemoi's small config files kept out of the real home."""
    archive, zarr, root = built
    monkeypatch.setenv("HOME", str(root / "home"))
    from anemoi.datasets import open_dataset

    return archive, open_dataset(str(zarr))


def test_round_trip_shape_names_and_grid(open_l96):
    archive, ds = open_l96
    assert ds.shape == (LAST - FIRST + 1, len(VARIABLES), N, n)  # [dates, variables, ensembles, grid]
    assert ds.variables == sorted(VARIABLES)  # anemoi orders variables by name
    np.testing.assert_array_equal(ds.latitudes, 0.0)
    np.testing.assert_allclose(ds.longitudes, 360.0 * np.arange(n) / n)
    assert list(ds.dates) == [np.datetime64(_date(t)) for t in range(FIRST, LAST + 1)]
    assert ds.frequency == timedelta(hours=6)
    assert all(ds.variables_metadata[v]["units"] == "1" for v in VARIABLES)


def test_round_trip_values_equal_the_archive(open_l96):
    archive, ds = open_l96
    data = ds[:]  # [dates, variables, ensembles, grid]
    cycles = slice(FIRST, LAST + 1)
    index = ds.name_to_index

    def expected(values):  # what float32 storage can hold
        return np.asarray(values, dtype=np.float32)

    np.testing.assert_array_equal(data[:, index["x_bg"]], expected(archive.background[cycles]))
    np.testing.assert_array_equal(data[:, index["x_an"]], expected(archive.analysis[cycles]))
    shared = {
        "truth": archive.truth[cycles],
        "obs": archive.observations_on_grid()[cycles],
        "obs_mask": np.broadcast_to(np.arange(n) % OBS_EVERY == 0, (LAST - FIRST + 1, n)),
    }
    for name, values in shared.items():  # the same for every member
        np.testing.assert_array_equal(data[:, index[name]], np.repeat(expected(values)[:, None], N, axis=1))
    assert np.isnan(data[:, index["obs"], :, 1::OBS_EVERY]).all()


def test_round_trip_statistics_ignore_unobserved_points(built, open_l96):
    archive, ds = open_l96
    attrs = zarr.open(str(built[1]), mode="r").attrs  # anemoi picks the statistics period itself
    start, end = (datetime.fromisoformat(attrs[f"statistics_{k}_date"]) for k in ("start", "end"))
    cycles = archive.cycle_indices([start, end])
    cycles = slice(cycles[0], cycles[1] + 1)
    stats = ds.statistics
    i = ds.name_to_index["obs"]
    np.testing.assert_allclose(stats["mean"][i], archive.observations[cycles].astype(np.float32).mean(), rtol=1e-5)
    i = ds.name_to_index["x_an"]
    np.testing.assert_allclose(stats["maximum"][i], archive.analysis[cycles].astype(np.float32).max(), rtol=1e-6)


@pytest.mark.slow
def test_anemoi_graphs_knn_on_the_ring_follows_the_l96_stencil(built, monkeypatch):
    """A KNN graph (k = 5, self included) links each variable to its two neighbours on either side."""
    _, zarr, root = built
    monkeypatch.setenv("HOME", str(root / "home"))
    from anemoi.graphs.edges import KNNEdges
    from anemoi.graphs.nodes import AnemoiDatasetNodes
    from torch_geometric.data import HeteroData

    graph = AnemoiDatasetNodes(str(zarr), name="data").update_graph(HeteroData())
    graph = KNNEdges("data", "data", num_nearest_neighbours=5).update_graph(graph)
    source, target = graph["data", "to", "data"].edge_index.numpy()
    for i in range(n):
        assert sorted(source[target == i]) == sorted((i + d) % n for d in (-2, -1, 0, 1, 2))


def test_create_fails_clearly_for_dates_outside_the_archive(built):
    archive, _, root = built
    out = _create(_recipe(root / "l96-eda.npz", _date(FIRST), _date(T + 2)), root, "too_long")
    assert out.returncode != 0
    assert "outside the archive" in out.stderr
    assert "from 2000-01-01T00:00:00 to 2000-01-02T18:00:00" in out.stderr


@pytest.mark.slow
def test_shipped_recipe_runs_the_harness_inline(tmp_path, monkeypatch):
    """The shipped recipe as it is, with fewer cycles: the build runs the cycling harness, and the store holds
    exactly what the same run keeps in its archive."""
    from hybrid_eda.l96.config import ExperimentConfig
    from hybrid_eda.l96.experiment import run_experiment

    recipe = _shipped_recipe()
    run = recipe["input"]["lorenz96"]["run"] | {"cycles": 24, "spinup": 4}
    recipe["input"]["lorenz96"]["run"] = run
    recipe["dates"] = {"start": _date(4).isoformat(), "end": _date(23).isoformat(), "frequency": "6h"}
    out = _create(recipe, tmp_path, "inline")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    from anemoi.datasets import open_dataset

    ds = open_dataset(str(tmp_path / "inline.zarr"))
    variables = recipe["input"]["lorenz96"]["variables"]
    archive = run_experiment(ExperimentConfig.from_preset(**run), archive=True).archive
    assert ds.shape == (20, len(variables), run["members"], n)
    data = ds[:]  # [dates, variables, ensembles, grid]
    index = ds.name_to_index
    np.testing.assert_array_equal(data[:, index["x_an"]], archive.analysis[4:24].astype(np.float32))
    np.testing.assert_array_equal(data[:, index["x_bg"]], archive.background[4:24].astype(np.float32))
    np.testing.assert_array_equal(data[:, index["truth"], 0], archive.truth[4:24].astype(np.float32))
