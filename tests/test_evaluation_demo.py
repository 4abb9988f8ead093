"""The variance-emulator step of ``hybrid-eda demo``: found among the demo steps, and run end to end on a tiny
setting (stores, ``anemoi-training train`` in a subprocess, evaluation on held-out dates of another seed); the
variance-impact step after it (L96 4D-Var and the global exact analysis, tiny settings)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from hybrid_eda.demo import DEMO_STEPS


def test_every_demo_step_resolves_to_a_function_of_the_output_folder():
    targets = dict((target, title) for title, target in DEMO_STEPS)
    assert "hybrid_eda.evaluation.demo:demo" in targets
    for target in targets:
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name)), target


def test_train_command_passes_the_small_setting_as_overrides(tmp_path):
    from hybrid_eda.evaluation.demo import DemoSettings, train_command

    command = train_command(DemoSettings(train_days=2, max_steps=7, seen=4), tmp_path / "out")
    assert command[1:3] == ["train", "--config-name=variance_emulator_synthetic"]
    overrides = dict(item.split("=", 1) for item in command[3:])
    assert overrides["training.max_steps"] == "7" and overrides["dataloader.members_per_sample"] == "4"
    assert overrides["system.output.root"] == str(tmp_path / "out")
    # 8 dates: 6 train, the last 2 validate (and test); the training split ends before validation starts
    assert overrides["dataloader.training.datasets.members.end"] == "2023-01-02T06:00:00"
    assert overrides["dataloader.validation.datasets.members.start"] == "2023-01-02T12:00:00"
    assert overrides["dataloader.validation.datasets.members.end"] == "2023-01-02T18:00:00"
    with pytest.raises(ValueError, match="use at least 1 day"):
        DemoSettings(train_days=0)


@pytest.mark.slow
def test_the_variance_demo_trains_and_evaluates_on_held_out_dates(tmp_path, monkeypatch):
    from hybrid_eda.data.grids import GRIDS_PATH_VARIABLES
    from hybrid_eda.evaluation.demo import DemoSettings, demo
    from isolated_run import isolated_environment

    for name, value in isolated_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in GRIDS_PATH_VARIABLES:  # demo() points anemoi at local grid files: restore them afterwards
        monkeypatch.setenv(name, "")
    settings = DemoSettings(levels=1, members=8, train_days=1, test_dates=2, max_steps=2, max_iter=10, max_rows=2000)
    result = demo(tmp_path / "demo", settings)
    summary = json.loads((tmp_path / "demo" / "evaluation" / "summary.json").read_text())
    assert result["nmse"] == summary["nmse"] and summary["nmse"]["emulator"] is not None
    assert summary["settings"]["test_dates"] == 2 and summary["settings"]["first_test_date"] == "2023-03-01T00:00:00"
    assert summary["settings_train"]["train_dates"] == 2  # the emulator's training split only
    assert summary["nmse"]["floor"] < summary["nmse"]["raw"] and result["coverage_90"]["overall"] is not None
    assert result["fronts4"]["nmse_change"]["emulator"] is not None
    assert result["checkpoint"].endswith("inference-last.ckpt")
    for png in ("maps.png", "pit.png"):
        assert (tmp_path / "demo" / "evaluation" / png).is_file()
    assert set(result["timings_s"]) == {"data", "training", "evaluation"}


def test_the_impact_step_runs_last_in_the_variance_steps_folder_and_uses_its_outputs(tmp_path):
    from hybrid_eda.evaluation.demo import ImpactDemoSettings, _variance_step_outputs

    assert DEMO_STEPS[-1][1] == "hybrid_eda.evaluation.demo:impact_demo"
    assert DEMO_STEPS[-2][1] == "hybrid_eda.evaluation.demo:demo"  # same module: same folder, after it
    assert _variance_step_outputs(tmp_path) == (None, None)
    (tmp_path / "test-eda").mkdir()
    (tmp_path / "test-eda" / "manifest.json").write_text("{}")
    checkpoint = tmp_path / "train" / "output" / "checkpoint" / "run1" / "inference-last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    test, found = _variance_step_outputs(tmp_path)
    assert (test, found) == (tmp_path / "test-eda", checkpoint)
    argv = ImpactDemoSettings(seen=4, draws=3).global_argv(test, found, tmp_path / "out")
    assert argv[:3] == ["evaluate", "variance-impact", str(checkpoint)]
    assert dict(zip(argv[3::2], argv[4::2], strict=True)) == {
        "--test": str(test), "--members": "4", "--draws": "3", "--out": str(tmp_path / "out")
    }  # fmt: skip
    with pytest.raises(ValueError, match="at least 3 dates"):
        ImpactDemoSettings(dates=2)


def test_the_impact_step_writes_both_experiments_json_and_figures(tmp_path, monkeypatch, capsys):
    """Without the variance step's outputs: L96 4D-Var rows and a tiny global EDA of its own, no emulator rows."""
    from hybrid_eda.data.grids import GRIDS_PATH_VARIABLES
    from hybrid_eda.evaluation.demo import ImpactDemoSettings, impact_demo

    for name in GRIDS_PATH_VARIABLES:  # impact_demo() points anemoi at local grid files: restore them afterwards
        monkeypatch.setenv(name, "")
    settings = ImpactDemoSettings(l96_members=8, l96_cycles=80, l96_spinup=20, l96_train_cycles=60,
                                  l96_scales=(0.7, 1.4), l96_leads=(0, 4), levels=1, members=8, dates=3,
                                  draws=1)  # fmt: skip
    result = impact_demo(tmp_path, settings)
    for key in ("l96", "global"):
        assert json.loads(Path(result[key]["json"]).read_text())  # written, valid JSON
        assert Path(result[key]["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(result["l96"]["json"]).parent == tmp_path / "impact" / "l96"
    assert result["l96"]["reference"] == "ensemble-8" and result["l96"]["lead_hours"] == [0.0, 24.0]
    assert set(result["l96"]["change"]) == {"raw-3", "static"}
    assert all(len(v) == 2 for v in result["l96"]["change"].values())
    assert result["global"]["checkpoint"] is None and set(result["global"]["change"]) == {"sigma_b", "raw_M"}
    assert result["global"]["test"] == str(tmp_path / "impact" / "test-eda")
    assert "raw_M_change" in result["global"]["verdict"] and set(result["timings_s"]) == {"l96", "global"}
    assert "variance impact: L96 4D-Var vs ensemble-8" in capsys.readouterr().out
