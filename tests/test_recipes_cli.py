"""`hybrid-eda recipes`: list, copy and locate the shipped recipes (builds from copies are in test_recipes.py and
test_l96_training.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybrid_eda.cli import main
from hybrid_eda.recipes_cli import copy_recipes, describe_recipes
from hybrid_eda.resources import recipes_dir

SHIPPED = sorted(path.stem for path in recipes_dir().glob("*.yaml"))


def _error_line(capsys) -> str:
    """The one line ``hybrid-eda`` printed on stderr for a user error."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_list_names_every_recipe_with_its_description(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    descriptions = describe_recipes()
    assert sorted(descriptions) == SHIPPED
    for name in SHIPPED:
        (line,) = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert descriptions[name] and descriptions[name] in line  # one line each, the recipe's own description
    assert main(["recipes", "list"]) == 0
    assert capsys.readouterr().out == out


def test_copy_one_into_a_new_folder_is_the_shipped_file(tmp_path, capsys):
    target = tmp_path / "new" / "folder"
    assert main(["recipes", "copy", "l96-truth", "--to", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target / "l96-truth.yaml")
    assert (target / "l96-truth.yaml").read_bytes() == (recipes_dir() / "l96-truth.yaml").read_bytes()
    assert [p.name for p in target.iterdir()] == ["l96-truth.yaml"]


def test_copy_defaults_to_the_current_folder_and_accepts_the_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "copy", "l96-eda.yaml"]) == 0
    assert yaml.safe_load((tmp_path / "l96-eda.yaml").read_text())["input"]["lorenz96"]


def test_copy_all(tmp_path):
    copied = copy_recipes("all", tmp_path)
    assert sorted(p.stem for p in copied) == SHIPPED == sorted(p.stem for p in tmp_path.iterdir())


def test_copy_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    mine = tmp_path / "l96-eda.yaml"
    mine.write_text("my edits\n")
    assert main(["recipes", "copy", "all", "--to", str(tmp_path)]) != 0
    line = _error_line(capsys)
    assert "l96-eda.yaml already in" in line and "--force" in line
    assert mine.read_text() == "my edits\n" and [p.name for p in tmp_path.iterdir()] == ["l96-eda.yaml"]  # nothing
    assert main(["recipes", "copy", "l96-eda", "--to", str(tmp_path), "--force"]) == 0
    assert mine.read_bytes() == (recipes_dir() / "l96-eda.yaml").read_bytes()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["copy", "l96-nope"], "no recipe named 'l96-nope'; shipped: eda-n128-ml-local"),
        (["path", "nope"], "(see `hybrid-eda recipes`)"),
        (["copy", "l96-eda", "--to", "{file}"], "is a file, not a folder"),
    ],
)
def test_bad_input_is_one_clear_line(args, expected, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["recipes", *[a.format(file=afile) for a in args]]) != 0
    assert expected in _error_line(capsys)


def test_path_is_absolute_and_usable_from_anywhere(tmp_path):
    """`recipes path` prints the shipped file's absolute path, from any folder (as `anemoi-datasets create` needs)."""
    cli = Path(sys.executable).with_name("hybrid-eda")
    out = subprocess.run([str(cli), "recipes", "path", "l96-truth"], cwd=tmp_path, capture_output=True, text=True)
    path = Path(out.stdout.strip())
    assert out.returncode == 0 and path.is_absolute()
    assert path.read_bytes() == (recipes_dir() / "l96-truth.yaml").read_bytes()
