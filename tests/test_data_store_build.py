"""Member-streaming store builds (``hybrid-eda store``) equal anemoi-datasets' own; concurrent member reads."""

from __future__ import annotations

import datetime as dt
import re
import threading
from pathlib import Path
from types import SimpleNamespace

# pyproj must load its PROJ library before eccodes does: findlibs loads eckitlib's bundled libproj globally and a
# pyproj imported afterwards binds to it (then crashes the interpreter at exit).
import pyproj  # noqa: F401  isort: skip
import numpy as np
import pytest
import yaml
import zarr
from anemoi.datasets.create.statistics import StatisticsCollector

from hybrid_eda.data.members import MemberSelection, MemberSubset, _split_at_chunks
from hybrid_eda.data.store_build import CREATE_STEPS, run_steps, stream_statistics, write_cube
from hybrid_eda.data.store_cli import main as store_main
from hybrid_eda.resources import recipes_dir

N_MEMBERS = 5
START, END = dt.datetime(2023, 1, 1, 0), dt.datetime(2023, 1, 1, 12)  # 3 dates: statistics on the first 2
STATISTICS = ("mean", "minimum", "maximum", "stdev")
#: Store attributes that differ between any two builds (ids, times, software versions, and the size and file count,
#: which `create` measures again after cleanup while `finalise` alone counts the build's bookkeeping files too).
VOLATILE = {
    "uuid",
    "latest_write_timestamp",
    "provenance_load",
    "provenance_init",
    "total_size",
    "total_number_of_files",
}


def _absolute(node, root: Path) -> None:
    """Make GRIB paths absolute: earthkit caches GRIB readers by path within a process."""
    if isinstance(node, dict):
        if "grib" in node:
            node["grib"]["path"] = str(root / node["grib"]["path"])
        for value in node.values():
            _absolute(value, root)
    elif isinstance(node, list):
        for value in node:
            _absolute(value, root)


def _recipe(root: Path, name: str = "eda-n80-ml-local.yaml", **build) -> Path:
    """The shipped twin (a composition, not a copy) with the test's dates, absolute paths and ``build`` options."""
    recipe = yaml.safe_load((recipes_dir() / name).read_text())
    recipe["dates"] = {"start": START.isoformat(), "end": END.isoformat(), "frequency": "6h"}
    recipe["build"].update(build)
    _absolute(recipe["input"], root)
    path = root / f"recipe-{len(list(root.glob('recipe-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> SimpleNamespace:
    """The same N32 member store (2 levels, 5 members, 3 dates) built by anemoi-datasets and by hybrid-eda."""
    from anemoi.datasets.create.tasks import run_task

    from hybrid_eda.synthetic import SyntheticEDAConfig, write_synthetic_eda

    root = tmp_path_factory.mktemp("store-build")
    config = SyntheticEDAConfig(grid="N32", levels=2, members=N_MEMBERS, start=START, end=END)
    write_synthetic_eda(config, root / "synthetic-eda")
    recipe = _recipe(root)
    upstream = str(root / "upstream.zarr")
    for task in ("init", "load", "finalise"):
        run_task(task, recipe=str(recipe), path=upstream, overwrite=True)
    streamed = str(root / "streamed.zarr")
    run_steps(CREATE_STEPS, streamed, recipe, overwrite=True)
    return SimpleNamespace(root=root, upstream=upstream, streamed=streamed)


def _assert_same_store(a: str, b: str, ignore: frozenset[str] = frozenset()) -> None:
    za, zb = zarr.open(a, "r"), zarr.open(b, "r")
    assert sorted(za.keys()) == sorted(zb.keys())
    assert za["data"].chunks == zb["data"].chunks
    np.testing.assert_array_equal(za["data"][:], zb["data"][:])
    for name in ("dates", "latitudes", "longitudes", "minimum", "maximum"):
        np.testing.assert_array_equal(za[name][:], zb[name][:], err_msg=name)
    for name in ("mean", "stdev"):  # merged over members instead of whole dates: the same up to float64 rounding
        np.testing.assert_allclose(za[name][:], zb[name][:], rtol=1e-12, atol=0, err_msg=name)
    attrs_a, attrs_b = dict(za.attrs), dict(zb.attrs)
    differ = {k for k in set(attrs_a) | set(attrs_b) if attrs_a.get(k) != attrs_b.get(k)}
    unexpected = differ - VOLATILE - ignore
    assert not unexpected, {k: (attrs_a.get(k), attrs_b.get(k)) for k in unexpected}


def test_streamed_build_equals_anemoi_datasets_build(stores):
    _assert_same_store(stores.upstream, stores.streamed)
    z = zarr.open(stores.streamed, "r")
    assert z["data"].shape == (3, 11, N_MEMBERS, 6114) and z["data"].chunks[2] == 1
    assert "_build" not in z and not Path(stores.streamed + ".work_dir").exists()  # cleaned up as upstream


def test_streamed_statistics_cover_the_statistics_period_only(stores):
    z = zarr.open(stores.streamed, "r")
    data = z["data"][:2].astype(np.float64)  # 3 dates < 10: anemoi leaves the last 20 % out
    expected = data.transpose(1, 0, 2, 3).reshape(data.shape[1], -1)  # [variables, dates x members x grid]
    np.testing.assert_allclose(z["mean"][:], expected.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(z["stdev"][:], expected.std(axis=1), rtol=1e-10)
    np.testing.assert_array_equal(z["maximum"][:], expected.max(axis=1))


def test_parts_build_equals_the_one_process_build(stores):
    """`load --parts i/n` on separate processes writes partial statistics that finalise merges."""
    recipe = _recipe(stores.root, group_by=1)  # one group per date
    path = str(stores.root / "parts.zarr")
    run_steps(["init"], path, recipe, overwrite=True)
    for part in ("2/2", "1/2"):
        run_steps(["load"], path, parts=part)
    assert len(list(Path(path + ".work_dir").glob("statistics_*.pkl"))) == 3
    run_steps(["finalise"], path)
    _assert_same_store(stores.upstream, path, ignore=frozenset({"recipe"}))  # the recipe differs in group_by


def test_generator_store_backgrounds_and_analyses_build_the_same(stores):
    from anemoi.datasets.create.tasks import run_task

    recipe = _recipe(stores.root, "eda-n128-ml-local.yaml")
    upstream, streamed = str(stores.root / "gen-upstream.zarr"), str(stores.root / "gen-streamed.zarr")
    for task in ("init", "load", "finalise"):
        run_task(task, recipe=str(recipe), path=upstream, overwrite=True)
    run_steps(["init", "load", "finalise"], streamed, recipe, overwrite=True)
    _assert_same_store(upstream, streamed)
    assert zarr.open(streamed, "r")["data"].shape == (3, 22, N_MEMBERS, 6114)  # 11 backgrounds + 11 analyses


# -- the streaming pieces on their own -------------------------------------------------------------------------------
class _Recorder:
    """A zarr array that records its reads and writes."""

    def __init__(self, array):
        self.array, self.writes, self.reads = array, [], 0

    def __getattr__(self, name):
        return getattr(self.array, name)

    def __getitem__(self, key):
        self.reads += 1
        return self.array[key]

    def __setitem__(self, key, value):
        self.writes.append(key)
        self.array[key] = value


class _FakeCube:
    """Fields ``value(d, v, m)`` of a (dates, variables, members) cube, read like earthkit's FieldCube."""

    flatten_values = True

    def __init__(self, shape, grid):
        self.user_shape, self.grid = shape, grid

    def __getitem__(self, coords):
        d, v, m = coords
        return SimpleNamespace(to_numpy=lambda flatten: 1000 * d + 100 * v + m + np.linspace(0, 1, self.grid))


@pytest.mark.parametrize("members_per_chunk", [1, 2])
def test_write_cube_writes_whole_member_chunks_without_reading(members_per_chunk):
    shape, grid = (2, 3, 5), 7
    array = _Recorder(zarr.zeros((4, 3, 5, grid), chunks=(1, 3, members_per_chunk, grid), dtype="f4"))
    write_cube(_FakeCube(shape, grid), array, [1, 3])
    d, v, m = np.meshgrid(np.arange(2), np.arange(3), np.arange(5), indexing="ij")
    expected = (1000 * d + 100 * v + m)[..., None] + np.linspace(0, 1, grid)  # [dates, var, members, grid]
    np.testing.assert_array_equal(array.array[[1, 3]], expected.astype("f4"))
    assert array.reads == 0
    spans = [(k[0].start, k[2].start, k[2].stop) for k in array.writes]
    step = members_per_chunk
    assert spans == [(row, m0, min(m0 + step, 5)) for row in (1, 3) for m0 in range(0, 5, step)]


def test_write_cube_refuses_a_cube_that_does_not_fit_the_store():
    array = zarr.zeros((2, 3, 4, 7), chunks=(1, 3, 1, 7), dtype="f4")
    with pytest.raises(ValueError, match=r"cube of \(2, 3, 5\) .* store holds \(3, 4\)"):
        write_cube(_FakeCube((2, 3, 5), 7), array, [0, 1])


@pytest.mark.parametrize("members_per_chunk", [1, 2, 5])
def test_stream_statistics_equals_anemois_collector(members_per_chunk):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 3, 5, 11)).astype("f4")  # [dates, variables, members, grid]
    data[:, 2] = data[0, 2]  # variable 2 is constant in time
    data[1, 1, 3, 4] = np.nan  # a missing value
    data[2, 2] = np.nan  # a missing date of the constant variable (all members): skipped, as upstream
    names = ["a", "b", "c"]
    dates = np.arange("2023-01-01", "2023-01-05", dtype="datetime64[D]").astype("datetime64[s]")
    reference = StatisticsCollector(variables_names=names)
    for i in range(4):
        reference.collect(data[i : i + 1], dates[i : i + 1])
    array = zarr.array(data, chunks=(1, 3, members_per_chunk, 11))
    streamed = stream_statistics(array, range(4), StatisticsCollector(variables_names=names))
    for key in STATISTICS:
        np.testing.assert_allclose(streamed.statistics()[key], reference.statistics()[key], rtol=1e-12)
    assert streamed.constant_variables() == reference.constant_variables() == ["c"]


def test_stream_statistics_refuses_tendencies():
    array = zarr.zeros((2, 1, 2, 3), chunks=(1, 1, 1, 3))
    with pytest.raises(ValueError, match="tendency statistics .* remove `statistics: tendencies:`"):
        stream_statistics(array, range(2), StatisticsCollector(variables_names=["a"], tendencies={"6h": 1}))


def test_store_command_explains_bad_input(tmp_path, capsys):
    assert store_main(["load", str(tmp_path / "missing.zarr")]) == 2
    assert "no store at" in capsys.readouterr().err
    assert store_main(["init", str(tmp_path / "missing.yaml"), str(tmp_path / "s.zarr")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    (tmp_path / "s.zarr").mkdir()
    assert store_main(["load", str(tmp_path / "s.zarr"), "--parts", "3/2"]) == 2
    assert "--parts must be i/n" in capsys.readouterr().err


# -- concurrent member reads -----------------------------------------------------------------------------------------
def test_members_are_split_at_chunk_boundaries():
    runs = [slice(0, 3), slice(5, 6)]
    assert _split_at_chunks(runs, None) == runs
    assert _split_at_chunks(runs, 1) == [slice(0, 1), slice(1, 2), slice(2, 3), slice(5, 6)]
    assert _split_at_chunks([slice(1, 5)], 2) == [slice(1, 2), slice(2, 4), slice(4, 5)]


@pytest.mark.parametrize("index", [(slice(0, 1),), (slice(1, 3), [0, 4], slice(None), slice(3, 300, 2)), (2, 1)])
def test_concurrent_reads_equal_reads_in_turn(stores, index):
    from anemoi.datasets import open_dataset

    full = open_dataset(stores.streamed)
    for selection in (MemberSelection(members=(0, 1, 3, 4)), MemberSelection(size=3, seed=4)):
        in_turn = MemberSubset(full, selection, read_threads=1)
        pooled = MemberSubset(full, selection, read_threads=3)
        default = MemberSubset(full, selection)
        for _ in range(3):  # the same seeded stream of random subsets whatever the threads
            expected = in_turn[index]
            np.testing.assert_array_equal(pooled[index], expected)
            np.testing.assert_array_equal(default[index], expected)


def test_members_are_read_in_a_pool_one_chunk_each(stores):
    from anemoi.datasets import open_dataset

    seen: list[tuple[str, str]] = []

    class Recording(zarr.storage.DirectoryStore):
        def __getitem__(self, key):
            if re.fullmatch(r"data/\d+\.\d+\.\d+\.\d+", key):  # chunks, not metadata
                seen.append((key, threading.current_thread().name))
            return super().__getitem__(key)

    ds = MemberSubset(
        open_dataset(zarr.open_group(Recording(stores.streamed), mode="r")),
        MemberSelection(members=(0, 1, 3)),
        read_threads=3,
    )
    ds[0:1]
    assert sorted(int(key.split(".")[2]) for key, _ in seen) == [0, 1, 3]  # each member chunk read once
    assert all(name.startswith("hybrid-eda-members") for _, name in seen)
    with pytest.raises(ValueError, match="read_threads must be a positive integer"):
        MemberSubset(ds.forward, MemberSelection(members=(0,)), read_threads=0)


class _ChunkedArray:
    """A dataset over a numpy array with zarr-like chunks, recording what each read asks for."""

    def __init__(self, data: np.ndarray, chunks: tuple[int, ...]):
        self.data, self.shape, self.chunks, self.reads = data, data.shape, chunks, []

    def mutate(self):
        return self

    def __getitem__(self, index):
        self.reads.append(index)
        return self.data[index]


def _outer(array: np.ndarray, index: tuple) -> np.ndarray:
    """Orthogonal indexing, one axis after the other (as anemoi datasets index; numpy broadcasts lists instead)."""
    axis = 0
    for i in index:
        array = array[(slice(None),) * axis + (i,)]
        axis += 0 if isinstance(i, int) else 1
    return array


@pytest.mark.parametrize(
    "index",
    [
        (slice(0, 1),),
        (slice(1, 3), [0, 3], slice(None), slice(2, 9)),
        (2, 1, slice(1, 3), slice(None, None, 2)),
        (slice(None), slice(None), [2, 0], [9, 0, 4]),
        (0, 0, 0, -1),
    ],
)
def test_reads_follow_member_and_grid_chunks(index):
    data = np.random.default_rng(1).normal(size=(3, 4, 6, 10)).astype("f4")  # [dates, variables, members, grid]
    store = _ChunkedArray(data, chunks=(1, 4, 2, 3))
    for threads in (1, 3):
        ds = MemberSubset(store, MemberSelection(members=(0, 1, 2, 4)), read_threads=threads)
        expected = _outer(data[:, :, [0, 1, 2, 4]], index)
        store.reads.clear()
        np.testing.assert_array_equal(ds[index], expected)
        for read in store.reads:
            members, grid = read[2], read[3]
            assert members.start // 2 == (members.stop - 1) // 2  # within one member chunk
            if isinstance(grid, slice) and grid.step in (None, 1):
                assert grid.start // 3 == (grid.stop - 1) // 3  # within one grid chunk
