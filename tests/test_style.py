"""The code follows the style anemoi uses (ruff, line length 120), so it could be upstreamed as is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "benchmarks"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    out = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *PATHS], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"ruff {' '.join(command)} found problems:\n{out.stdout}{out.stderr}"
