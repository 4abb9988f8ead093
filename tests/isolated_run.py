"""Running the anemoi/hybrid-eda commands as a user would, in a subprocess isolated from this machine's settings.

Shared by the end-to-end tests (L96 forecaster, variance emulator training and inference).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def isolated_environment(tmp_path: Path) -> dict[str, str]:
    """One thread per library, and every cache, config and tracking directory inside ``tmp_path``."""
    env = dict(os.environ)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1",
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "MPLCONFIGDIR": str(home / "mpl"),
            "TORCHINDUCTOR_CACHE_DIR": str(home / "inductor"),
            "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(),
            "ANEMOI_SETTINGS_FILE": str(home / "anemoi-settings.toml"),  # absent: anemoi's defaults
            "ANEMOI_SETTINGS_UTILS__CACHE_DIRECTORY": str(home / "anemoi-cache"),
            "HYDRA_FULL_ERROR": "1",
        }
    )
    return env


def run_command(args: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """Run ``args`` in ``cwd``; with ``check``, fail the test with the command's last output if it failed."""
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300)
    if check:
        assert out.returncode == 0, f"{' '.join(args)} failed:\n{(out.stdout + out.stderr)[-4000:]}"
    return out


def run_logged(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``args`` (it must succeed) and return its stdout and stderr together."""
    out = run_command(args, cwd, env)
    return out.stdout + out.stderr
