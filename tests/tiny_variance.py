"""The tiny variance-emulator setting shared by the training and inference tests: stores and a short run.

O32, 2 levels, 6 variables, 6 members, 6 dates (2 per split: anemoi needs 2 to know the frequency).
"""

from __future__ import annotations

import sys
from pathlib import Path

BIN = Path(sys.executable).parent
LEVELS, MEMBERS = 2, 6
DATES = ("2023-01-01T00", "2023-01-02T06")
SPLITS = {
    "training": ("null", "2023-01-01T06:00:00"),
    "validation": ("2023-01-01T12:00:00", "2023-01-01T18:00:00"),
    "test": ("2023-01-02T00:00:00", "null"),
}


def stores_command(workdir: Path) -> list[str]:
    """``hybrid-eda variance-data`` (the console script users run) for the tiny stores in ``workdir``."""
    return [str(BIN / "hybrid-eda"), "variance-data", "--out", str(workdir), "--levels", str(LEVELS),
            "--members", str(MEMBERS), "--start", DATES[0], "--end", DATES[1]]  # fmt: skip


def train_command(config: str, max_steps: int, *extra: str) -> list[str]:
    """``anemoi-training train --config-name=config`` for ``max_steps`` steps on the tiny stores' date splits."""
    overrides = [f"training.max_steps={max_steps}", "dataloader.limit_batches.validation=1",
                 "dataloader.batch_size.training=1"]  # fmt: skip
    for split, (start, end) in SPLITS.items():
        overrides += [f"dataloader.{split}.datasets.members.start={start}",
                      f"dataloader.{split}.datasets.members.end={end}"]  # fmt: skip
    return [str(BIN / "anemoi-training"), "train", f"--config-name={config}", *overrides, *extra]
