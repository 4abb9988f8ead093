"""The variance emulator on the Lorenz-96 EDA: the ``lorenz96`` source's std variable, the two shipped recipes
(member store, N-member std store), training through anemoi with ``variance_emulator_l96`` and the numpy loader
the DA cycle calls (``hybrid_eda.l96.variance_emulation``)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from hybrid_eda.data.lorenz96_source import archive_field_dicts
from hybrid_eda.l96.archive import EDAArchive
from hybrid_eda.resources import recipes_dir
from isolated_run import isolated_environment, run_logged

BIN = Path(sys.executable).parent
T, N, n = 14, 12, 40  # daily cycles, members, ring size
START = datetime(2000, 1, 1)
RECIPES = {"l96-eda-members.zarr": "l96-eda-variance-members.yaml", "l96-eda-std.zarr": "l96-eda-variance-std.yaml"}
# Cycles 1-12 of the 14: 8 training, 2 validation, 2 test dates.
FIRST, LAST = 1, 12
SPLITS = {"training": (None, 8), "validation": (9, 10), "test": (11, None)}


def _date(t: int) -> datetime:
    return START + t * timedelta(days=1)


def make_archive(seed: int = 0, members: int = N) -> EDAArchive:
    """Members ``truth + sigma e`` with a smooth, date-dependent ``sigma`` along the ring (a learnable spread)."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((T, n))  # [T, n]
    phase = 2 * np.pi * np.arange(n) / n
    sigma = np.exp(0.5 * np.sin(phase[None, :] + np.arange(T)[:, None]))  # [T, n]
    background = truth[:, None, :] + sigma[:, None, :] * rng.standard_normal((T, members, n))  # [T, N, n]
    return EDAArchive(
        truth=truth,
        observations=truth + rng.standard_normal((T, n)),
        obs_index=np.arange(n),
        background=background,
        analysis=truth[:, None, :] + 0.5 * sigma[:, None, :] * rng.standard_normal((T, members, n)),
        settings={"preset": "synthetic", "members": members, "seed": seed},
        start_date=START.isoformat(),
        cycle_hours=24,
    )


def test_source_writes_the_n_member_std_as_one_member():
    archive = make_archive()
    fields = archive_field_dicts(archive, [_date(3)], variables=["x_bg_std", "x_an_std"], members=[1])
    by_name = {f["param"]: f for f in fields}
    assert [f["number"] for f in fields] == [1, 1]
    np.testing.assert_allclose(by_name["x_bg_std"]["values"], archive.background[3].std(axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(by_name["x_an_std"]["values"], archive.analysis[3].std(axis=0, ddof=1), rtol=1e-12)


def test_source_refuses_the_std_of_a_single_member():
    with pytest.raises(ValueError, match="at least 2 members, this one has 1"):
        archive_field_dicts(make_archive(members=1), [_date(3)], variables=["x_bg_std"], members=[1])


def _build_stores(root: Path, env: dict[str, str]) -> dict[str, Path]:
    """Both shipped recipes, dates narrowed to the test archive, built with ``anemoi-datasets create``."""
    make_archive().save(root / "l96-eda-4dvar-n50.npz")
    stores = {}
    for store, name in RECIPES.items():
        recipe = yaml.safe_load((recipes_dir() / name).read_text())
        assert recipe["input"]["lorenz96"]["archive"] == "l96-eda-4dvar-n50.npz"  # relative to the cwd
        recipe["dates"].update(start=_date(FIRST).isoformat(), end=_date(LAST).isoformat())
        recipe["statistics"]["end"] = _date(SPLITS["training"][1]).isoformat()
        (root / name).write_text(yaml.safe_dump(recipe))
        run_logged([str(BIN / "anemoi-datasets"), "create", name, store, "--overwrite"], root, env)
        stores[store] = root / store
    return stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("l96var")
    env = isolated_environment(root)
    return root, env, _build_stores(root, env)


@pytest.mark.slow  # two anemoi-datasets builds: ~20 s
def test_recipes_build_a_member_store_and_its_std_store(stores):
    from anemoi.datasets import open_dataset

    _, _, paths = stores
    members = open_dataset(str(paths["l96-eda-members.zarr"]))
    spread = open_dataset(str(paths["l96-eda-std.zarr"]))
    assert members.variables == ["x_bg"] and spread.variables == ["x_bg_std"]
    assert members.shape == (LAST - FIRST + 1, 1, N, n) and spread.shape == (LAST - FIRST + 1, 1, 1, n)
    assert str(members.frequency) in ("1 day, 0:00:00", "24h") or members.frequency == timedelta(days=1)
    x = np.asarray(members[:])  # [dates, 1, N, n], float32
    np.testing.assert_allclose(np.asarray(spread[:])[:, :, 0], x.std(axis=2, ddof=1), rtol=2e-6)
    np.testing.assert_allclose(x[:, 0], make_archive().background[FIRST : LAST + 1], rtol=1e-6, atol=1e-6)


def _train_command(max_steps: int, *extra: str) -> list[str]:
    overrides = [f"training.max_steps={max_steps}", "dataloader.limit_batches.validation=1",
                 "dataloader.batch_size.training=2", "dataloader.batch_size.validation=2"]  # fmt: skip
    for split, (start, end) in SPLITS.items():
        bounds = ["null" if t is None else _date(t).date().isoformat() for t in (start, end)]
        overrides += [f"dataloader.{split}.datasets.members.start={bounds[0]}",
                      f"dataloader.{split}.datasets.members.end={bounds[1]}"]  # fmt: skip
    return [str(BIN / "anemoi-training"), "train", "--config-name=variance_emulator_l96", *overrides, *extra]


@pytest.fixture(scope="module")
def checkpoint(stores):
    root, env, _ = stores
    run_logged(_train_command(2), root, env)
    (path,) = (root / "output" / "variance_emulator_l96" / "checkpoint").glob("*/inference-last.ckpt")
    return path


@pytest.mark.slow
def test_l96_config_trains_and_the_loader_predicts_positive_spreads(checkpoint):
    from hybrid_eda.l96.variance_emulation import load_l96_variance_emulator

    emu = load_l96_variance_emulator(checkpoint, n=n, members=5)
    assert (emu.n, emu.members, emu.family) == (n, 5, "lognormal")
    archive = make_archive(seed=3)
    members = archive.background[:, :5]  # [T, 5, n] float64
    batch = np.stack([members, members[::-1]])  # [2 experiments, T, 5, n]
    std = emu(batch)
    assert std.shape == (2, T, n) and std.dtype == np.float64 and (std > 0).all()
    np.testing.assert_allclose(std[1], std[0][::-1], rtol=1e-5)  # experiments are independent of each other
    np.testing.assert_allclose(emu(members[4]), std[0, 4], rtol=1e-5)  # one date, no leading axis
    # Two training steps from the zero-initialised last layer: still close to the debiased 5-member std.
    s5 = members.std(axis=1, ddof=1)
    assert 0.5 < np.median(std[0] / s5) < 2.0
    low, high = emu.quantiles(members, (0.05, 0.95))
    assert low.shape == high.shape == (T, n) and (low < std[0]).all() and (std[0] < high).all()


@pytest.mark.slow
def test_loader_refuses_other_grids_other_m_and_other_models(checkpoint, tmp_path):
    import torch

    from hybrid_eda.l96.variance_emulation import load_l96_variance_emulator

    with pytest.raises(ValueError, match="ring of 40 points, the cycle runs n=36"):
        load_l96_variance_emulator(checkpoint, n=36)
    with pytest.raises(ValueError, match="trained on M=5 members per sample, the cycle passes M=10"):
        load_l96_variance_emulator(checkpoint, members=10)
    emu = load_l96_variance_emulator(checkpoint)
    members = make_archive().background[:, :5]
    with pytest.raises(ValueError, match=r"\[\.\.\., M, n=40\].*got shape \(14, 5, 36\)"):
        emu(members[..., :36])
    with pytest.raises(ValueError, match="trained on M=5 members per sample, got M=4"):
        emu(members[:, :4])
    bad = members.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        emu(bad)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        emu.quantiles(members, (0.5, 1.0))
    other = tmp_path / "other.ckpt"
    torch.save(torch.nn.Linear(2, 2), other)
    with pytest.raises(ValueError, match="holds a Linear .*not a variance emulator"):
        load_l96_variance_emulator(other)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_l96_variance_emulator(tmp_path / "missing.ckpt")


def test_trained_members_is_none_without_metadata(tmp_path):
    from hybrid_eda.l96.variance_emulation import trained_members

    path = tmp_path / "plain.ckpt"
    path.write_bytes(b"not a zip")
    assert trained_members(path) is None


def test_quality_table_on_iid_gaussian_members_matches_the_analytic_raw_error_and_floor():
    """iid Gaussian members, M = 5 of N = 50: raw s_5 nMSE 0.110 and floor 0.0092 (hybrid_eda.evaluation.scores);
    the plug-in floor (centre and sigma from the 50 members) must reproduce it without seeing the answer."""
    from hybrid_eda.l96.variance_quality import variance_quality

    rng = np.random.default_rng(5)
    sigma = np.exp(0.3 * rng.standard_normal((2, 150, 1, n)))  # [split, D, 1, n]
    train, test = sigma * rng.standard_normal((2, 150, 50, n))  # [D, N=50, n] each
    summary = variance_quality(None, train, [test[:75], test[75:]], m=5)
    assert summary["test_dates"] == 150 and summary["train_dates"] == 150 and "emulator" not in summary["gap_closed"]
    s5, s50 = test[:, :5].std(axis=1, ddof=1), test.std(axis=1, ddof=1)
    assert summary["nmse"]["raw"] == pytest.approx(np.sum((s5 - s50) ** 2) / np.sum(s50**2), rel=1e-12)
    assert summary["nmse"]["raw"] == pytest.approx(0.110, abs=0.008)
    assert summary["floor_expected"] == pytest.approx(0.0092, abs=0.0008)
    assert summary["gap_closed"]["raw"] == 0.0


@pytest.mark.slow
def test_quality_table_scores_the_emulator_with_its_coverage(checkpoint):
    from hybrid_eda.l96.variance_quality import main

    archive = make_archive(seed=4)
    emulated = load_emulator_mean(checkpoint, archive.background[:, :5])
    s12 = archive.background.std(axis=1, ddof=1)
    path = Path(checkpoint).parent / "quality.json"
    archive.save(Path(checkpoint).parent / "test.npz")
    make_archive(seed=5).save(Path(checkpoint).parent / "train.npz")
    args = ["--train", str(Path(checkpoint).parent / "train.npz"), "--test", str(Path(checkpoint).parent / "test.npz")]
    assert main([str(checkpoint), *args, "--test-from", "0", "--train-cycles", "0:", "--json", str(path)]) == 0
    summary = yaml.safe_load(path.read_text())  # JSON is YAML
    assert summary["nmse"]["emulator"] == pytest.approx(np.sum((emulated - s12) ** 2) / np.sum(s12**2), rel=1e-5)
    assert 0.0 <= summary["emulator_coverage90"] <= 1.0 and summary["test_dates"] == T


def load_emulator_mean(checkpoint: Path, members: np.ndarray) -> np.ndarray:
    from hybrid_eda.l96.variance_emulation import load_l96_variance_emulator

    return load_l96_variance_emulator(checkpoint)(members)
