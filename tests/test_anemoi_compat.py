"""The anemoi-datasets pin: pyproject, the version check and the modules that rely on the pinned internals agree."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hybrid_eda.data import anemoi_compat
from hybrid_eda.data.anemoi_compat import REQUIRED_ANEMOI_DATASETS, IncompatibleAnemoiError, require_anemoi_datasets

REPO = Path(__file__).resolve().parents[1]

# Python run in a fresh process that pretends another anemoi-datasets is installed, then imports a module.
_FAKE_VERSION = (
    "import importlib.metadata as m\n"
    "real = m.version\n"
    "m.version = lambda name: {fake!r} if name == 'anemoi-datasets' else real(name)\n"
)


def test_pyproject_pins_the_version_the_check_requires():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"anemoi-datasets[create]=={REQUIRED_ANEMOI_DATASETS}" in dependencies
    assert anemoi_compat.installed_version() == REQUIRED_ANEMOI_DATASETS  # the test environment itself


def test_the_pinned_version_passes():
    require_anemoi_datasets(REQUIRED_ANEMOI_DATASETS)


@pytest.mark.parametrize("installed", ["0.5.48", "0.5.46", "0.6.0"])
def test_another_version_names_both_versions_and_the_fix(installed):
    with pytest.raises(IncompatibleAnemoiError) as err:
        require_anemoi_datasets(installed)
    message = str(err.value)
    assert f"but anemoi-datasets {installed} is installed" in message
    assert f"fix: pip install anemoi-datasets=={REQUIRED_ANEMOI_DATASETS}" in message
    assert "\n" not in message


def test_a_missing_distribution_is_reported(monkeypatch):
    def missing(name):
        raise anemoi_compat.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(anemoi_compat.metadata, "version", missing)
    with pytest.raises(IncompatibleAnemoiError, match="anemoi-datasets is not installed"):
        require_anemoi_datasets()


@pytest.mark.parametrize("module", ["hybrid_eda.data.store_build", "hybrid_eda.data.members"])
def test_modules_using_the_internals_stop_before_importing_anemoi(module):
    """With another version "installed", importing either module fails with our message, before anemoi-datasets
    itself is imported (so a renamed internal cannot turn it into an ImportError)."""
    code = _FAKE_VERSION.format(fake="0.5.99") + (
        "import sys\n"
        "try:\n"
        f"    import {module}\n"
        "except RuntimeError as err:\n"
        "    print('anemoi.datasets' in sys.modules, err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("False hybrid-eda's store builder"), out.stdout + out.stderr
    assert "0.5.99 is installed" in out.stdout


def test_other_commands_work_with_another_version(tmp_path):
    """The check is not run at package import: `hybrid-eda recipes` still works, and `hybrid-eda store` reports
    the mismatch as one line."""
    code = _FAKE_VERSION.format(fake="0.5.99") + (
        "import sys\nfrom hybrid_eda.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([sys.executable, "-c", code, "recipes"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "l96-truth" in ok.stdout, ok.stderr[-2000:]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dates: {start: 2000-01-01, end: 2000-01-01}\n")
    bad = subprocess.run(
        [sys.executable, "-c", code, "store", "create", str(recipe), str(tmp_path / "s.zarr")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr, bad.stderr[-2000:]
    (line,) = [line for line in bad.stderr.splitlines() if "error" in line]
    assert f"pip install anemoi-datasets=={REQUIRED_ANEMOI_DATASETS}" in line
