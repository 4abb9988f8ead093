"""The variance-emulator step of ``hybrid-eda demo``: found among the demo steps, and run end to end on a tiny
setting (stores, ``anemoi-training train`` in a subprocess, evaluation on held-out dates of another seed)."""

from __future__ import annotations

import importlib
import json

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
