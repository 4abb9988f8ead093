"""``hybrid-eda evaluate variance`` on tiny synthetic EDAs and stores: outputs, the emulator hook, clear errors."""

from __future__ import annotations

import json
import sys
import types
from datetime import datetime
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


def test_a_checkpoint_of_other_model_code_is_refused_clearly(folders, tmp_path, capsys, monkeypatch):
    class Stale(_Predictor):
        def __call__(self, members):
            raise AttributeError("'VarianceEmulatorCore' object has no attribute 'gradient'")

    monkeypatch.setitem(sys.modules, "hybrid_eda.models",
                        types.SimpleNamespace(load_variance_predictor=lambda path: Stale(1.0, False)))  # fmt: skip
    (tmp_path / "old.ckpt").write_bytes(b"")
    train, test = folders
    err = _error(capsys, tmp_path / "old.ckpt", "--train", train, "--test", test, "--members", 4, *FAST,
                 "--out", tmp_path / "out")  # fmt: skip
    assert "does not run with this version of hybrid-eda" in err and "no attribute 'gradient'" in err


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


def test_a_field_subset_of_a_store_is_the_same_statistics(stores, tmp_path, capsys):
    """``fields`` keeps some variables' statistics (the members passed on are still all of them)."""
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.data import from_stores

    _, members, std = stores
    seen = []
    for target in (std, None):
        full = from_stores(members, target, 3)
        part = from_stores(members, target, 3, fields=["t_1", "lnsp_1"], on_members=lambda x, names: seen.append(x))
        reference = full.select_fields(["t_1", "lnsp_1"])
        assert part.variables == ("t_1", "lnsp_1") and part.groups == reference.groups
        for name in ("s_m", "s_n", "mean_m"):
            np.testing.assert_array_equal(getattr(part, name), getattr(reference, name), err_msg=name)
    assert seen[0].shape == (3, full.s_m.shape[1], 6)  # [M, G, every field]
    with pytest.raises(UserInputError, match="has no field t_9"):
        from_stores(members, std, 3, fields=["t_9"])
    code, _, err = _run(capsys, "--train", members, "--train-std", std, "--test", members, "--test-std", std,
                        "--fields", "t_1", "q_1", "--members", 3, "--no-pooled", *FAST, "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    assert _summary(tmp_path)["settings"]["fields"] == ["t_1", "q_1"]


def test_stores_on_different_grids(stores, tmp_path):
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.data import from_stores

    _, members, _ = stores
    every = ("vo", "d", "t", "lnsp", "q", "o3")
    other = _synthetic(tmp_path, "o20", 4, "2023-01-01T12", members=6, levels=1, variables=every, grid="O20")
    std = _store(tmp_path, "eda-n80-ml-std-local.yaml", other, "std20")
    with pytest.raises(UserInputError, match="are on different grids"):
        from_stores(members, std, 3)


# -- several test sets: other physics (--shift), other folders, date windows ----------------------------------------
def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def test_a_shift_equals_the_folder_written_with_that_physics(folders, tmp_path, capsys):
    """``--shift NAME=...`` regenerates the test EDA with other physics: the same scores as a folder written by
    ``hybrid-eda synthetic --set`` with those physics (same dates and seed); a no-op shift changes nothing."""
    from hybrid_eda.evaluation.data import config_from_manifest
    from hybrid_eda.synthetic.config import config_with_overrides

    train, test = folders
    config = config_from_manifest(json.loads((test / "manifest.json").read_text()))
    written = tmp_path / "fronts-folder"
    write_synthetic_eda(config_with_overrides(config, ["errors.front_factor=5"]), written)
    code, out, err = _run(capsys, "--train", train, "--test", test, written, "--members", 4, *FAST,
                          "--shift", "fronts=errors.front_factor=5", "--shift", "same=errors.front_factor=2.5",
                          "--shift", "seed7=errors.front_factor=2.5,seed=7", "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    block = _summary(tmp_path / "out")["degradation"]
    sets = block["sets"]
    assert block["reference"] == "test" and list(sets) == ["test", "fronts-folder", "fronts", "same", "seed7"]
    assert "change" not in sets["test"] and sets["fronts"]["overrides"] == ["errors.front_factor=5"]
    assert sets["fronts"]["seed"] == 2 and sets["seed7"]["seed"] == 7 and sets["fronts"]["test_dates"] == 2
    assert sets["fronts"]["nmse"] == sets["fronts-folder"]["nmse"]  # the folder's EDA is regenerated: bit for bit
    assert all(abs(v) < 1e-12 for v in sets["same"]["change"]["nmse"].values() if v is not None)
    assert all(v == 0 for v in sets["same"]["change"]["gap_closed"].values() if v is not None)
    fronts = sets["fronts"]
    assert fronts["nmse"]["sigma_b"] != sets["test"]["nmse"]["sigma_b"]  # other physics, other scores
    assert fronts["change"]["nmse"]["regression"] == pytest.approx(
        fronts["nmse"]["regression"] / sets["test"]["nmse"]["regression"] - 1
    )
    assert fronts["change"]["gap_closed"]["filter"] == pytest.approx(
        fronts["gap_closed"]["filter"] - sets["test"]["gap_closed"]["filter"]
    )
    assert sets["seed7"]["nmse"]["raw"] != sets["test"]["nmse"]["raw"]  # another realisation
    full = json.loads((tmp_path / "out" / "sets" / "fronts.json").read_text())
    assert full["nmse"] == fronts["nmse"] and full["source"]["overrides"] == ["errors.front_factor=5"]
    assert "degradation on 4 other test set(s)" in out and "nMSE (change vs test)" in out


def test_shift_and_test_set_errors(folders, stores, tmp_path, capsys):
    train, test = folders
    _, members, std = stores
    out = ["--out", tmp_path / "out"]
    base = ["--train", train, "--test", test, "--members", 4, *out]
    assert "must be NAME=SECTION.KEY=VALUE" in _error(capsys, *base, "--shift", "errors.front_factor=4")
    assert "unknown key 'errors.fronts'" in _error(capsys, *base, "--shift", "x=errors.fronts=4")
    assert "errors.front_factor must be positive" in _error(capsys, *base, "--shift", "x=errors.front_factor=-1")
    assert "is not SECTION.KEY=VALUE" in _error(capsys, *base, "--shift", "x=errors.front_factor=4,7")
    assert "already a test set" in _error(capsys, *base, "--shift", "test=errors.front_factor=4")
    err = _error(capsys, "--train", members, "--test", members, "--test-std", std, "--shift", "x=errors.front_factor=4",
                 *out)  # fmt: skip
    assert "--shift regenerates the first --test as a synthetic EDA" in err
    err = _error(capsys, "--train", members, "--test", members, members, "--test-std", std, *out)
    assert "1 --test-std for 2 --test paths" in err
    assert "give the checkpoint first" in _error(capsys, "--train", train, "--test", test, tmp_path / "e.ckpt", *out)
    with pytest.raises(SystemExit, match="2"):  # argparse's usage error
        _run(capsys, *base, "--test-dates", "2023-01-02/2023-01-01")
    assert "is not FIRST/LAST with ISO dates, FIRST <= LAST" in capsys.readouterr().err
    err = _error(capsys, *base, "--test-dates", "2024-01-01/2024-01-02")
    assert "no date of the synthetic EDA" in err and "between 2024-01-01T00:00:00" in err
    assert "--fields t_7: not a field of" in _error(capsys, *base, "--fields", "t_1", "t_7")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_date_windows_split_one_eda(folders, tmp_path, capsys, caplog):
    """``--train-dates`` and ``--test-dates`` on one folder: disjoint windows are held out (no warning)."""
    train, _ = folders  # 2023-01-01T00 .. 2023-01-02T00, 5 dates
    code, _, err = _run(capsys, "--train", train, "--train-dates", "2023-01-01/2023-01-01T12", "--test", train,
                        "--test-dates", "2023-01-01T18/2023-01-02", "--members", 4, "--no-pooled", *FAST,
                        "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    summary = _summary(tmp_path)
    assert summary["settings"]["test_dates"] == 2 and summary["settings_train"]["train_dates"] == 3
    assert summary["settings"]["first_test_date"] == "2023-01-01T18:00:00"
    assert summary["source"]["test_dates"] == ["2023-01-01T18:00:00", "2023-01-02T23:59:59"]
    assert "not held out" not in caplog.text


# -- stores built as the recipes describe ---------------------------------------------------------------------------
def test_stores_of_the_mars_recipes_evaluate_without_a_floor(tmp_path, capsys):
    """The shipped MARS recipes (shrunk to 3 members, 2 levels, 3 dates; MARS mocked as in test_recipes) build a
    member and a std store that ``evaluate variance`` scores unchanged: one store, train and test date windows,
    N80 area weights, no floor."""
    pytest.importorskip("anemoi.datasets")
    from test_recipes import _build_in_process, _mocked_mars, _shrunk

    recipes = {name: _shrunk(f"eda-n80-ml{name}.yaml") for name in ("", "-std")}
    for recipe in recipes.values():
        recipe["dates"]["end"] = "2023-01-02T00:00:00"  # 3 dates: the regression needs 2 to train on
    with _mocked_mars(tmp_path):
        members = _build_in_process(recipes[""], tmp_path, "members")
        std = _build_in_process(recipes["-std"], tmp_path, "std")
    store = ["--train", members, "--train-std", std, "--train-dates", "2023-01-01/2023-01-01", "--test",
             members, "--test-std", std, "--test-dates", "2023-01-02/2023-01-02"]  # fmt: skip
    code, out, err = _run(capsys, *store, "--members", 2, "--no-pooled", *FAST, "--out", tmp_path / "out")
    assert code == 0, err
    summary = _summary(tmp_path / "out")
    assert summary["settings"]["grid"] == "N80" and summary["settings"]["grid_points"] == 35718
    assert summary["settings"]["test_dates"] == 1 and summary["settings"]["first_test_date"] == "2023-01-02T00:00:00"
    assert summary["settings_train"]["train_dates"] == 2
    assert len(summary["settings"]["fields"]) == 11 and "lnsp_1" in summary["settings"]["fields"]
    assert "floor" not in summary["nmse"] and not summary["source"]["floor"]
    assert all(value is None for value in summary["gap_closed"].values())
    for name in ("raw", "rescaled", "filter", "regression"):
        assert 0 < summary["nmse"][name] < 1, name
    assert summary["coverage_90"]["regression"]["sharp"] is None  # no fronts known in a store
    assert "not held out" not in err


def test_variance_data_stores_match_the_synthetic_folder(tmp_path, capsys):
    """The pair ``hybrid-eda variance-data`` builds (member store streamed by member, std store by the
    ensemble-statistics filter) holds the statistics of its synthetic EDA and evaluates like it, without a floor."""
    pytest.importorskip("anemoi.datasets")
    from hybrid_eda.evaluation.data import from_stores, from_synthetic_folder
    from hybrid_eda.training.stores import make_variance_stores

    config = SyntheticEDAConfig(grid="O16", levels=2, members=6, seed=3, end="2023-01-01T18",
                                observations=ObservationConfig(count=200))  # fmt: skip
    built = make_variance_stores(tmp_path / "data", config)
    window = (datetime(2023, 1, 1, 12), datetime(2023, 1, 1, 18))
    stored = from_stores(built.members, built.spread, 3, dates=window)
    direct = from_synthetic_folder(built.synthetic, 3, [2, 3]).select_fields(stored.variables)
    assert stored.dates == direct.dates and stored.grid == "O16"
    for name in ("s_m", "s_n", "mean_m"):  # GRIB packing (16 bits of each field's range) is all that differs
        a, b = getattr(stored, name), getattr(direct, name)
        assert np.all(np.abs(a - b) <= 1e-3 * np.abs(b).max(axis=(0, 1))), name
    code, _, err = _run(capsys, "--train", built.members, "--train-std", built.spread, "--train-dates",
                        "2023-01-01T00/2023-01-01T06", "--test", built.members, "--test-std", built.spread,
                        "--test-dates", "2023-01-01T12/2023-01-01T18", "--members", 3, "--no-pooled", *FAST,
                        "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    summary = _summary(tmp_path / "out")
    assert summary["settings"]["test_dates"] == 2 and "floor" not in summary["nmse"]
