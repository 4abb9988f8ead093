"""The shipped anemoi-inference configs and `hybrid-eda inference-config`'s checks (runs on a trained checkpoint
are in test_l96_training.py)."""

from __future__ import annotations

import os

import pytest

from hybrid_eda.cli import main
from hybrid_eda.inference.config import DEFAULT_TEMPLATE, find_checkpoint, inference_config
from hybrid_eda.resources import inference_configs_dir, shipped

# Configs of the forecaster runner (the helper's templates); variance_emulator.yaml (runner: variance-emulator)
# is tested in test_variance_inference.py (member_generator, runner: member-generator, in test_member_inference.py).
OWN_RUNNERS = ("variance", "member")
TEMPLATES = {name: path for name, path in shipped(inference_configs_dir()).items() if not name.startswith(OWN_RUNNERS)}


def test_the_default_template_is_shipped():
    assert DEFAULT_TEMPLATE in TEMPLATES


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_shipped_config_is_a_valid_anemoi_inference_run_config(name):
    """anemoi-inference's own schema accepts it once the checkpoint is given (the one key it leaves out)."""
    from anemoi.inference.config.run import RunConfiguration

    config = RunConfiguration.load(str(TEMPLATES[name]), ["checkpoint=/some/inference-last.ckpt"])
    assert config.checkpoint == "/some/inference-last.ckpt" and config.date is not None
    assert config.input == {"test": {"use_original_paths": True}}  # the recorded store path, not a name lookup
    with pytest.raises(ValueError, match=r"checkpoint\s+Field required"):
        RunConfiguration.load(str(TEMPLATES[name]))  # without it: anemoi names the missing key


def test_find_checkpoint_takes_the_newest_below_a_folder(tmp_path):
    old, new = (tmp_path / "checkpoint" / run / "inference-last.ckpt" for run in ("a", "b"))
    for path, mtime in ((old, 1_000_000), (new, 2_000_000)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (mtime, mtime))
    assert find_checkpoint(tmp_path) == new.resolve()
    assert find_checkpoint(old) == old.resolve()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing", "no checkpoint at"),
        (lambda p: p, "no inference-last.ckpt below"),
        (
            lambda p: (p / "inference-last.ckpt").write_text("not a zip") and p / "inference-last.ckpt",
            "is not an anemoi",
        ),
    ],
    ids=["missing", "empty-folder", "not-a-checkpoint"],
)
def test_bad_checkpoints_are_one_clear_line(make, expected, tmp_path, capsys):
    target = make(tmp_path)
    with pytest.raises(ValueError, match=expected):
        inference_config(target)
    assert main(["inference-config", str(target)]) != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], lines


def test_unknown_template_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ValueError, match=f"no inference config named 'nope'; shipped: .*{DEFAULT_TEMPLATE}"):
        inference_config(tmp_path, template="nope")
