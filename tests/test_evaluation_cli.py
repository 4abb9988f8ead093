"""``hybrid-eda evaluate variance`` on tiny synthetic EDAs and stores: outputs, the emulator hook, clear errors."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from hybrid_eda.cli import main
from hybrid_eda.synthetic import ObservationConfig, SyntheticEDAConfig, write_synthetic_eda

FAST = ["--max-iter", "15", "--max-rows", "4000"]
KEYS = ("nmse", "gap_closed", "improvement_over_filter", "coverage_90", "crps", "nll", "pit", "per_variable",
        "per_level")  # fmt: skip


def _synthetic(root: Path, name: str, seed: int, end: str, members: int = 8, **extra) -> Path:
    settings = dict(grid="O16", levels=2, variables=("t", "q"), start="2023-01-01T00", frequency_hours=6)
    settings.update(extra)
    config = SyntheticEDAConfig(
        members=members, seed=seed, end=end, observations=ObservationConfig(count=200), **settings
    )
    write_synthetic_eda(config, root / name)
    return root / name


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    return _synthetic(root, "train", 1, "2023-01-02T00"), _synthetic(root, "test", 2, "2023-01-01T06")


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["evaluate", "variance", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_baselines_only_writes_the_summary_and_the_figures(folders, tmp_path, capsys):
    train, test = folders
    code, out, _ = _run(capsys, "--train", train, "--test", test, "--members", 4, *FAST, "--out", tmp_path)
    assert code == 0
    assert "no CHECKPOINT given: evaluating the baselines only" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in KEYS:
        assert key in summary, key
    nmse = summary["nmse"]
    assert nmse["emulator"] is None and nmse["emulator_no_mp"] is None
    assert nmse["floor"] < nmse["regression"] < nmse["raw"]
    assert summary["gap_closed"]["floor"] == pytest.approx(1.0)
    assert set(summary["coverage_90"]["regression"]) == {"overall", "sharp"}
    assert summary["source"]["baselines_only"] and summary["source"]["floor"]
    best = summary["maps"]["prediction"]  # the member-only estimator of lowest nMSE
    member_only = {k: v for k, v in nmse.items() if v is not None and k not in ("floor", "oracle_sigma", "sigma_b")}
    assert summary["maps"]["field"] == "t_2" and nmse[best] == min(member_only.values())
    for png in ("maps.png", "pit.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Predictor:
    """A stand-in emulator: log-normal around the rescaled ``s_M`` (the contract of evaluation.emulator), as its
    tensor form or as a ``hybrid_eda.distributions.LogNormal``; it reads the fields in reverse order."""

    family = "lognormal"
    variables = ("q_2", "q_1", "t_2", "t_1")

    def __init__(self, scale: float, distribution: bool) -> None:
        self.scale, self.distribution, self.calls = scale, distribution, 0

    def __call__(self, members: np.ndarray):
        assert members.ndim == 4 and members.shape[1] == 4  # [date, M, grid, field]
        self.calls += 1
        mu = np.log(self.scale * members.std(axis=1, ddof=1))  # [date, grid, field]
        tensor = np.stack([mu, np.full_like(mu, 0.3)], axis=1)  # [date, 2, grid, field]
        if not self.distribution:
            return tensor
        import torch

        from hybrid_eda.distributions import LogNormal

        return LogNormal.from_tensor(torch.as_tensor(tensor))  # parameters [date, 1, grid, field]


def test_a_checkpoint_goes_through_the_model_packages_loader(folders, tmp_path, capsys, monkeypatch):
    train, test = folders
    loaded = {}

    def loader(path):
        full = path.name == "full.ckpt"
        loaded[path.name] = _Predictor(0.95 if full else 1.0, distribution=full)
        return loaded[path.name]

    monkeypatch.setitem(sys.modules, "hybrid_eda.models", types.SimpleNamespace(load_variance_predictor=loader))
    (tmp_path / "full.ckpt").write_bytes(b"")
    (tmp_path / "nomp.ckpt").write_bytes(b"")
    code, _, err = _run(capsys, tmp_path / "full.ckpt", "--no-mp-checkpoint", tmp_path / "nomp.ckpt", "--train", train,
                        "--test", test, "--members", 4, "--no-pooled", *FAST, "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert loaded["full.ckpt"].calls == 2 and loaded["nomp.ckpt"].calls == 2  # one call per test date
    nmse = summary["nmse"]
    assert nmse["emulator"] is not None and nmse["emulator_no_mp"] is not None
    assert nmse["emulator"] < nmse["raw"]  # 0.95 exp(0.3^2 / 2) s_M ~ 0.99 s_M beats s_M
    assert nmse["emulator_no_mp"] > nmse["raw"]  # 1.05 s_M does not
    assert summary["per_field"]["nmse"]["emulator"]["t_1"] < summary["per_field"]["nmse"]["raw"]["t_1"]
    assert summary["coverage_90"]["emulator"]["overall"] is not None
    assert summary["maps"]["prediction"] == "emulator"
    assert not summary["source"]["baselines_only"]


def _error(capsys, *argv) -> str:
    code, _, err = _run(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1  # one line
    return err


def test_clear_errors(folders, tmp_path, capsys):
    train, test = folders
    out = ["--out", tmp_path / "out"]
    assert "use --members 2 or more" in _error(capsys, "--train", train, "--test", test, "--members", 1, *out)
    assert "more than the 8 members" in _error(capsys, "--train", train, "--test", test, "--members", 9, *out)
    (tmp_path / "empty").mkdir()
    err = _error(capsys, "--train", tmp_path / "empty", "--test", test, *out)
    assert "neither a synthetic EDA (no manifest.json)" in err
    assert "does not exist" in _error(capsys, "--train", tmp_path / "missing", "--test", test, *out)
    assert not (tmp_path / "out" / "summary.json").exists()  # refused before any work


def test_without_a_loader_in_the_model_package_the_checkpoint_is_refused(folders, tmp_path, capsys, monkeypatch):
    train, test = folders
    monkeypatch.setitem(sys.modules, "hybrid_eda.models", types.SimpleNamespace())
    (tmp_path / "model.ckpt").write_bytes(b"")
    err = _error(capsys, tmp_path / "model.ckpt", "--train", train, "--test", test, "--out", tmp_path / "out")
    assert "checkpoint loader lands with the model" in err
    err = _error(capsys, tmp_path / "none.ckpt", "--train", train, "--test", test, "--out", tmp_path / "out")
    assert "none.ckpt does not exist" in err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_fields_must_match(folders, tmp_path, capsys):
    train, _ = folders
    other = _synthetic(tmp_path, "other", 3, "2023-01-01T00", variables=("t",))
    err = _error(capsys, "--train", train, "--test", other, "--members", 4, *FAST, "--out", tmp_path / "out")
    assert "different fields" in err


# -- stores ------------------------------------------------------------------------------------------------------
def _store(root: Path, recipe_name: str, folder: Path, name: str) -> Path:
    """Build an offline twin recipe on ``folder`` in process (as tests/test_recipes.py does)."""
    import yaml
    from anemoi.datasets.create.tasks import run_task

    from hybrid_eda.resources import recipes_dir

    recipe = yaml.safe_load((recipes_dir() / recipe_name).read_text())
    recipe["dates"] = {"start": "2023-01-01T00:00:00", "end": "2023-01-01T12:00:00", "frequency": "6h"}

    def absolute(node):
        if isinstance(node, dict):
            if "grib" in node:
                node["grib"]["path"] = str(folder / "grib" / Path(node["grib"]["path"]).name)
            for value in node.values():
                absolute(value)
        elif isinstance(node, list):
            for value in node:
                absolute(value)

    absolute(recipe["input"])
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    store = root / f"{name}.zarr"
    for task in ("init", "load", "finalise"):
        run_task(task, recipe=str(path), path=str(store), overwrite=True)
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    pytest.importorskip("anemoi.datasets")
    import pyproj  # noqa: F401  (before eccodes, see tests/test_recipes.py)

    root = tmp_path_factory.mktemp("stores")
    every = ("vo", "d", "t", "lnsp", "q", "o3")
    folder = _synthetic(root, "eda", 4, "2023-01-01T12", members=6, levels=1, variables=every)
    members = _store(root, "eda-n80-ml-local.yaml", folder, "members")
    std = _store(root, "eda-n80-ml-std-local.yaml", folder, "std")
    return folder, members, std


def test_store_pair_matches_the_synthetic_folder(stores, tmp_path, capsys):
    from hybrid_eda.evaluation.data import from_stores, from_synthetic_folder

    folder, members, std = stores
    stored = from_stores(members, std, 3)
    computed = from_stores(members, None, 3)
    direct = from_synthetic_folder(folder, 3).select_fields(stored.variables)
    assert stored.grid == "O16" and not stored.has_truth and stored.s_m.shape == direct.s_m.shape
    np.testing.assert_allclose(stored.s_n, computed.s_n, rtol=1e-5)
    for name in ("s_m", "s_n", "mean_m"):  # the GRIB packing (16 bits of each field's range) is all that differs
        a, b = getattr(stored, name), getattr(direct, name)
        assert np.all(np.abs(a - b) <= 1e-3 * np.abs(b).max(axis=(0, 1))), name
    code, _, err = _run(capsys, "--train", members, "--train-std", std, "--test", members, "--test-std", std,
                        "--members", 3, "--no-pooled", *FAST, "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "floor" not in summary["nmse"] and summary["nmse"]["regression"] is not None
    assert summary["gap_closed"]["regression"] is None  # no floor without the truth
    assert (tmp_path / "maps.png").is_file()


def test_store_errors(stores, tmp_path, capsys):
    _, members, std = stores
    out = ["--out", tmp_path / "out"]
    err = _error(capsys, "--train", std, "--test", members, *out)
    assert "has no ensemble dimension" in err
    err = _error(capsys, "--train", members, "--train-std", std, "--test", members, "--members", 7, *out)
    assert "holds only 6 members" in err


def test_stores_on_different_grids(stores, tmp_path):
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.data import from_stores

    _, members, _ = stores
    every = ("vo", "d", "t", "lnsp", "q", "o3")
    other = _synthetic(tmp_path, "o20", 4, "2023-01-01T12", members=6, levels=1, variables=every, grid="O20")
    std = _store(tmp_path, "eda-n80-ml-std-local.yaml", other, "std20")
    with pytest.raises(UserInputError, match="are on different grids"):
        from_stores(members, std, 3)
