"""Member subsets (M of N) of an ensemble store: the upstream bug, fixed and random subsets, selective reads."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

# pyproj must load its PROJ library before eccodes does: findlibs loads eckitlib's bundled libproj globally and a
# pyproj imported afterwards binds to it (then crashes the interpreter at exit).
import pyproj  # noqa: F401  isort: skip
import numpy as np
import pytest
import yaml
import zarr

from hybrid_eda.data.members import (
    MemberSelection,
    MemberSelectionCallback,
    MemberSubset,
    check_store_pair,
    install_member_selection,
    member_selection_installed,
    uninstall_member_selection,
)
from hybrid_eda.resources import recipes_dir

N_MEMBERS, N_LEVELS = 6, 2
START, END = dt.datetime(2023, 1, 1, 0), dt.datetime(2023, 1, 1, 6)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A 6-member N32 store (2 dates, 2 levels) built by anemoi-datasets from the synthetic EDA and our recipe."""
    from anemoi.datasets.create.tasks import run_task

    from hybrid_eda.synthetic import SyntheticEDAConfig, write_synthetic_eda

    root = tmp_path_factory.mktemp("members")
    config = SyntheticEDAConfig(grid="N32", levels=N_LEVELS, members=N_MEMBERS, start=START, end=END)
    write_synthetic_eda(config, root / "synthetic-eda")
    recipe = yaml.safe_load((recipes_dir() / "eda-n80-ml-local.yaml").read_text())
    recipe["dates"] = {"start": START.isoformat(), "end": END.isoformat(), "frequency": "6h"}
    for source in recipe["input"]["join"]:  # absolute: earthkit caches GRIB readers by path within a process
        source["grib"]["path"] = str(root / source["grib"]["path"])
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    for task in ("init", "load", "finalise"):
        run_task(task, recipe=str(root / "recipe.yaml"), path=str(root / "members.zarr"), overwrite=True)
    return str(root / "members.zarr")


@pytest.fixture()
def installed():
    with member_selection_installed():
        yield


def _open(config, **kwargs):
    from anemoi.datasets import open_dataset

    return open_dataset(config, **kwargs)


def test_store_has_members_on_the_ensemble_axis(store):
    ds = _open(store)
    assert ds.shape[:3] == (2, 5 * N_LEVELS + 1, N_MEMBERS)
    assert zarr.open(store, "r")["data"].chunks[2] == 1  # one member per chunk: selective reads are possible


def test_upstream_number_selection_still_crashes(store):
    """anemoi-datasets 0.5.47: `number:` under a date subset fails. If this test fails, upstream fixed it."""
    uninstall_member_selection()
    ds = _open({"dataset": store, "number": [2, 4]}, start=None, end=None)  # what anemoi-training opens
    with pytest.raises(AttributeError, match="'list' object has no attribute 'indices'"):
        ds[0:1, :, :, :]  # a sample of one time step
    with pytest.raises(IndexError, match="boolean index did not match indexed array along axis 2"):
        ds[0:2, :, :, :]  # a sample of two time steps


@pytest.mark.parametrize(
    "index",
    [
        (slice(0, 1), slice(None), slice(None), slice(None)),  # single time step, as anemoi-training reads
        (slice(0, 2), slice(None), slice(None), slice(None)),
        ([1, 0], 3, slice(None), slice(5, 50)),
        (0,),
        (-1, slice(None), 1),
        (slice(None), [0, 4], slice(1, 3), slice(None, None, 7)),
        (Ellipsis, slice(0, 9)),
    ],
)
def test_fixed_subset_equals_the_corresponding_slice(store, installed, index):
    numbers = [2, 3, 5]
    full = _open(store)
    ds = _open({"dataset": store, "number": numbers}, start=None, end=None)
    assert ds.shape == (2, full.shape[1], 3, full.shape[3])
    expected = full[:, :, [n - 1 for n in numbers], :]  # [dates, variables, M, grid]
    np.testing.assert_array_equal(ds[index], expected[index])


def test_zero_based_members_and_ranges(store, installed):
    full = _open(store)
    a = _open({"dataset": store, "members": [0, 5]})
    b = _open({"dataset": store, "number": "1/to/6/by/5"})
    np.testing.assert_array_equal(a[0:1], full[0:1][:, :, [0, 5]])
    np.testing.assert_array_equal(b[0:1], a[0:1])


def test_training_reader_gets_a_single_time_step_sample(store, installed):
    """The anemoi-training reader (dates subset above the selection, one time step per sample) now works."""
    from anemoi.training.data.data_reader import create_dataset

    reader = create_dataset({"dataset_config": {"dataset": store, "number": [1, 3, 4]}, "start": None, "end": None})
    sample = reader.get_sample(0, slice(1, 2), slice(None))  # [dates, ens, grid, variables]
    full = _open(store)
    assert tuple(sample.shape) == (1, 3, full.shape[3], full.shape[1])
    expected = np.moveaxis(full[1:2][:, :, [0, 2, 3]], 1, -1)  # [dates, ens, grid, variables]
    np.testing.assert_array_equal(sample.numpy(), expected)


def test_random_subsets_are_seeded_reproducible_and_of_size_m(store, installed):
    """One subset of M distinct members per read; the same seed gives the same sequence of subsets."""
    full = _open(store)
    config = {"dataset": store, "number": {"random": 4, "seed": 11}}
    a, b = _open(config, start=None, end=None), _open(config, start=None, end=None)  # as anemoi-training opens them
    assert a.shape == (2, full.shape[1], 4, full.shape[3])
    seen = set()
    for read in range(12):
        t = read % 2
        sample = a[t : t + 1]  # a single time step, as in training
        np.testing.assert_array_equal(sample, b[t : t + 1])  # same seed, same stream
        members = _which_members(full[t : t + 1], sample)
        assert len(members) == 4 == len(set(members)) and set(members) <= set(range(N_MEMBERS))
        seen.add(tuple(members))
    assert len(seen) > 1  # new members at each read (i.e. each epoch)
    two_steps = a[0:2]  # one read of two time steps uses one subset for both
    members = _which_members(full[0:1], two_steps[:1])
    np.testing.assert_array_equal(two_steps, full[0:2][:, :, members])
    first = _open(config)[0]
    assert any(not np.array_equal(_open({**config, "number": {"random": 4, "seed": s}})[0], first) for s in range(3))


def _which_members(full: np.ndarray, sample: np.ndarray) -> list[int]:
    """Positions in ``full[dates, variables, ens, grid]`` of the members in ``sample`` (members differ everywhere)."""
    return [
        next(k for k in range(full.shape[2]) if np.array_equal(full[:, :, k], sample[:, :, j]))
        for j in range(sample.shape[2])
    ]


def test_fixed_random_subsets_per_date(store, installed):
    """resample: false gives one subset per date, whatever the order and number of reads."""
    full = _open(store)
    ds = _open({"dataset": store, "number": {"random": 3, "seed": 5, "resample": False}}, start=None, end=None)
    subset = ds.forward
    assert isinstance(subset, MemberSubset)
    for t in (1, 0, 1):
        np.testing.assert_array_equal(ds[t], full[t][:, subset.members_for(t)])
    draws = {
        tuple(MemberSubset(full, MemberSelection(size=3, seed=s, resample=False)).members_for(0)) for s in range(8)
    }
    assert len(draws) > 1
    with pytest.raises(ValueError, match="no fixed members per date"):
        MemberSubset(full, MemberSelection(size=3)).members_for(0)


def test_direct_reads_of_a_date_do_not_depend_on_other_reads(store):
    """Outside anemoi's loaders the k-th read of a date draws the same members whatever was read before."""
    selection = MemberSelection(size=3, seed=2)
    a, b = MemberSubset(_open(store), selection), MemberSubset(_open(store), selection)
    a_reads = [tuple(a.draw_members(t)) for t in (0, 0, 1, 0)]
    b_reads = [tuple(b.draw_members(t)) for t in (1, 0, 0, 0)]
    assert a_reads[2] == b_reads[0] and a_reads[0] == b_reads[1] and a_reads[1] == b_reads[2]
    assert a_reads[3] == b_reads[3]
    assert len(set(a_reads[:2] + a_reads[3:])) > 1  # a date read again gets new members


def _loader_members(store: str, ranks: int, workers: int, epochs: int, persistent: bool) -> dict:
    """{epoch: {date: members}} read through anemoi-training's MultiDataset and worker set-up, as in training."""
    import torch
    from anemoi.training.data.data_reader import create_dataset
    from anemoi.training.data.multidataset import MultiDataset
    from anemoi.training.utils.worker_init import worker_init_func

    full = _open(store)
    config = {"dataset_config": {"dataset": store, "number": {"random": 3, "seed": 1}}, "start": None, "end": None}
    drawn: dict[int, dict[int, tuple]] = {}
    for rank in range(ranks):  # what DDPGroupStrategy tells each rank's dataset
        dataset = MultiDataset({"members": create_dataset(config)}, {"members": [0]}, shuffle=True)
        dataset.set_comm_group_info(rank, rank, 0, ranks, 0, 1, {"members": None})
        loader = None
        for epoch in range(epochs):
            if loader is None or not persistent:
                dataset.set_epoch(epoch)  # anemoi: at the end of each epoch, before new workers start
                loader = torch.utils.data.DataLoader(
                    dataset, batch_size=None, num_workers=workers, worker_init_fn=worker_init_func,
                    persistent_workers=persistent,
                )  # fmt: skip
            for sample in loader:
                x = np.moveaxis(sample["members"].numpy(), -1, 1)  # [time=1, var, M, grid]
                date, members = _date_and_members(full, x)
                drawn.setdefault(epoch, {})[date] = members
    return drawn


def _date_and_members(full: Any, sample: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """The date and members of a one-date sample ``[1, var, M, grid]`` of ``full`` ``[dates, var, N, grid]``."""
    for t in range(full.shape[0]):
        data = full[t]  # [var, N, grid]
        members = [
            k
            for j in range(sample.shape[2])
            for k in range(data.shape[1])
            if np.array_equal(data[:, k], sample[0, :, j])
        ]
        if len(members) == sample.shape[2]:
            return t, tuple(members)
    raise AssertionError("the sample holds no member subset of any date of the store")


@pytest.mark.parametrize("persistent", [False, True])
def test_random_subsets_do_not_depend_on_ranks_or_workers(store, installed, persistent):
    """In anemoi's loaders a sample's members are a function of (seed, date, epoch): 2 DDP ranks, or 2 workers,
    draw those of 1 rank with 1 worker, and each epoch draws new ones, with persistent workers or not."""
    reference = _loader_members(store, ranks=1, workers=1, epochs=3, persistent=persistent)
    assert set(reference) == {0, 1, 2} and all(set(dates) == {0, 1} for dates in reference.values())
    assert len({members for dates in reference.values() for members in dates.values()}) > 2  # new members per epoch
    assert _loader_members(store, ranks=2, workers=1, epochs=3, persistent=persistent) == reference
    assert _loader_members(store, ranks=1, workers=2, epochs=3, persistent=persistent) == reference


def test_random_subsets_from_a_pool(store, installed):
    ds = _open({"dataset": store, "number": {"random": 2, "from": [1, 2, 3], "seed": 0}})
    for _ in range(6):
        assert set(ds.draw_members(0).tolist()) <= {0, 1, 2}


class _CountingStore(zarr.storage.DirectoryStore):
    def __init__(self, path):
        super().__init__(path)
        self.keys_read = []

    def __getitem__(self, key):
        self.keys_read.append(key)
        return super().__getitem__(key)


def test_selection_over_member_stores_joined_on_the_ensemble_axis(store, installed):
    """Stores built from halves of the members (to lower build memory) join with `ensemble:` under a selection."""
    full = _open(store)
    ds = _open({"ensemble": [store, store], "number": [2, N_MEMBERS + 3]}, start=None, end=None)
    assert ds.shape[2] == 2
    np.testing.assert_array_equal(ds[1:2], full[1:2][:, :, [1, 2]])


def test_only_the_selected_members_are_read(store):
    counting = _CountingStore(store)
    group = zarr.open_group(counting, mode="r")
    ds = MemberSubset(_open(group), MemberSelection(members=(1, 4)))
    counting.keys_read.clear()
    ds[0:1, :, :, :]
    chunks = [k for k in counting.keys_read if k.startswith("data/")]
    assert sorted({int(k.split("/")[1].split(".")[2]) for k in chunks}) == [1, 4]


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"number": [1, 7]}, r"has 6 members \(numbers 1..6\), fewer than asked: numbers \[1, 7\] includes \[7\]"),
        ({"number": {"random": 7}}, "cannot draw 7 members from 6"),
        ({"number": {"random": 3, "from": "5/to/8"}}, r"fewer than asked: 3 random members of numbers \[5, 6, 7, 8\]"),
        ({"number": {"size": 3}}, "is not a member subset"),
    ],
)
def test_asking_for_members_that_do_not_exist_is_explained(store, installed, selection, message):
    with pytest.raises(ValueError, match=message):
        _open({"dataset": store, **selection})


def test_store_without_ensemble_dimension_is_explained(store, installed):
    single = _open({"dataset": store, "number": 1})
    assert single.shape[2] == 1
    with pytest.raises(ValueError, match=r"has no ensemble dimension \(1 member\)"):
        MemberSubset(single, MemberSelection(size=2))


def test_install_is_explicit_idempotent_and_undone(store):
    from anemoi.datasets.usage.gridded import ensemble

    original = ensemble.Number
    uninstall_member_selection()
    assert ensemble.Number is original and original.__module__.startswith("anemoi.datasets")
    MemberSelectionCallback().on_job_start(config=None)  # what Hydra calls before anemoi-training's main
    assert ensemble.Number is not original
    assert install_member_selection() is False
    uninstall_member_selection()
    assert ensemble.Number is original


def test_check_store_pair(store, installed):
    members = _open(store)
    target = _open({"dataset": store, "number": 1})
    check_store_pair(members, target, members=5)
    with pytest.raises(ValueError, match="fewer than the 7 a sample needs"):
        check_store_pair(members, target, members=7)
    with pytest.raises(ValueError, match="the target store has 6 members"):
        check_store_pair(members, members)
    with pytest.raises(ValueError, match="no ensemble dimension"):
        check_store_pair(target, target)
    other = SimpleNamespace(shape=(2, 3, 1, 10), latitudes=np.zeros(10), longitudes=np.zeros(10), dates=members.dates)
    with pytest.raises(ValueError, match="different grids: 6114 vs 10 points"):
        check_store_pair(members, other)
    shifted = SimpleNamespace(
        shape=target.shape, latitudes=target.latitudes, longitudes=target.longitudes + 1.0, dates=target.dates
    )
    with pytest.raises(ValueError, match="same number of points but different coordinates"):
        check_store_pair(members, shifted)
    later = SimpleNamespace(
        shape=target.shape, latitudes=target.latitudes, longitudes=target.longitudes, dates=target.dates[:1]
    )
    with pytest.raises(ValueError, match="cover different dates"):
        check_store_pair(members, later)


def test_hydra_runs_the_callback_before_the_job(tmp_path):
    """`hydra.callbacks` in a config (as in our training configs) installs the selection inside @hydra.main."""
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "callbacks": {"members": {"_target_": "hybrid_eda.data.members.MemberSelectionCallback"}},
                    "run": {"dir": str(tmp_path / "run")},
                    "output_subdir": None,
                },
                "x": 1,
            }
        )
    )
    (tmp_path / "app.py").write_text(
        "import hydra\n"
        "@hydra.main(version_base=None, config_path='.', config_name='config')\n"
        "def main(cfg):\n"
        "    from anemoi.datasets.usage.gridded import ensemble\n"
        "    print('selection:', ensemble.Number.__name__)\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "selection: NumberSelection" in result.stdout
