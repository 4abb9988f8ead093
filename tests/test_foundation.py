"""The package foundation: console script, thread settings, shipped Hydra configs and the wheel's contents."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hybrid_eda.resources import configs_dir, inference_configs_dir, recipes_dir
from hybrid_eda.threads import THREAD_VARIABLES, configure_threads

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_threads_pinned_to_one_on_small_machine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    env: dict[str, str] = {}
    assert configure_threads(environ=env) == 1
    assert all(env[var] == "1" for var in THREAD_VARIABLES)


def test_threads_respect_user_choice(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    env = {"OMP_NUM_THREADS": "3"}
    assert configure_threads(environ=env) is None
    assert env == {"OMP_NUM_THREADS": "3"}
    assert configure_threads(4, environ=env) == 4
    assert env["OMP_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == "4"


def test_threads_left_alone_on_big_machine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    env: dict[str, str] = {}
    assert configure_threads(environ=env) is None
    assert env == {}


def test_threads_reject_nonsense():
    with pytest.raises(ValueError, match="--threads must be a positive integer"):
        configure_threads(0, environ={})


def test_console_script_reports_version():
    out = subprocess.run([str(BIN / "hybrid-eda"), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("hybrid-eda ")


def test_cli_sets_threads_before_importing_numerics():
    """Importing the CLI loads no numerical library, and ``main`` pins threads on a small machine first."""
    code = (
        "import os, sys\n"
        "os.cpu_count = lambda: 2\n"
        "from hybrid_eda.cli import main\n"
        "print('numpy' in sys.modules, 'torch' in sys.modules)\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ['OMP_NUM_THREADS'], os.environ['NUMBA_NUM_THREADS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "False False"
    assert lines[-1] == "1 1"


def _shipped_configs() -> list[Path]:
    return sorted(configs_dir().rglob("*.yaml"))


def test_configs_and_recipes_are_found():
    assert configs_dir().is_dir() and _shipped_configs(), "the package must ship Hydra configs"
    assert recipes_dir().is_dir()


@pytest.mark.parametrize("config", _shipped_configs(), ids=lambda p: str(p.relative_to(configs_dir())))
def test_hydra_finds_shipped_config_from_any_directory(config, tmp_path):
    """After installation, Hydra (as anemoi-training uses it) finds every shipped config through our
    search-path plugin, from an unrelated working directory."""
    rel = config.relative_to(configs_dir())
    if rel.parent == Path("."):
        name, overrides = rel.stem, []
    else:
        name, overrides = "config", [f"{rel.parent.as_posix()}={rel.stem}"]
    code = (
        "from hydra import initialize_config_module, compose\n"
        "from omegaconf import OmegaConf\n"
        "with initialize_config_module(config_module='anemoi.training.config', version_base=None):\n"
        f"    cfg = compose({name!r}, overrides={overrides!r})\n"
        "print(OmegaConf.to_yaml(cfg)[:50])\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True)


@pytest.mark.slow
def test_wheel_ships_configs_recipes_plugin_and_entry_points(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hybrid_eda-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in _shipped_configs():
        assert f"hybrid_eda/configs/{config.relative_to(configs_dir()).as_posix()}" in names
    for recipe in recipes_dir().glob("*.yaml"):
        assert f"hybrid_eda/recipes/{recipe.name}" in names
    inference_configs = sorted(inference_configs_dir().glob("*.yaml"))
    assert inference_configs, "the package must ship anemoi-inference configs"
    for config in inference_configs:
        assert f"hybrid_eda/inference/configs/{config.name}" in names
    assert "hydra_plugins/hybrid_eda_searchpath/hybrid_eda_searchpath.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "hybrid-eda = hybrid_eda.cli:main" in text
    assert "lorenz96 = hybrid_eda.data.lorenz96_source:Lorenz96Source" in text


def test_eccodes_import_does_not_crash_the_interpreter_at_exit():
    """Importing eccodes before pyproj makes the interpreter segfault at exit; ``hybrid_eda._eccodes`` avoids it
    (a fresh process, since the test session itself imports pyproj first in conftest)."""
    code = "from hybrid_eda.synthetic.grids import make_grid\nprint(make_grid('n80').npoints)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "35718"


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path, monkeypatch):
    """`hybrid-eda demo` (what `make demo` runs): the Lorenz-96 testbed, then a synthetic global EDA turned into
    anemoi-datasets stores whose N-member std equals numpy's and matches the known sigma_b, then the variance
    emulator trained and evaluated (that step takes ~5 min: it runs here on tiny settings in
    tests/test_evaluation_demo.py, so this test runs the demo without it, and without the variance-impact step
    that follows it, tested there too)."""
    import json

    import hybrid_eda.demo
    from hybrid_eda.cli import main

    titles = [title for title, _ in hybrid_eda.demo.DEMO_STEPS]
    assert hybrid_eda.demo.DEMO_STEPS[2][1] == "hybrid_eda.evaluation.demo:demo" and len(titles) == 4
    monkeypatch.setattr(hybrid_eda.demo, "DEMO_STEPS", hybrid_eda.demo.DEMO_STEPS[:2])
    assert main(["demo", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        [step["title"] for step in summary["steps"]]
        == titles[:2]
        == [
            "Lorenz-96 EDA testbed",
            "Synthetic global EDA -> anemoi-datasets stores",
        ]
    )
    for png in ("l96/l96_run.png", "l96/l96_table.png", "synthetic/std_vs_sigma_b.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    synthetic = summary["steps"][1]["result"]
    assert synthetic["member_store_shape"] == [4, 16, 10, 5248]
    assert synthetic["std_store_shape"] == [4, 16, 1, 5248]
    assert synthetic["std_max_abs_diff"] < 1e-3  # float32 storage (measured 1.1e-5)
    for name, scores in synthetic["variables"].items():
        # 10 members: the sample variance over 4 x 5248 points estimates sigma_b^2 to a few per cent
        assert 0.9 < scores["variance_ratio"] < 1.1, name
        assert scores["std_sigma_b_correlation"] > 0.5, name
