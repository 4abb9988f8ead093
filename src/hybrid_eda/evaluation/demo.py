"""Demo step: the variance emulator end to end on a small synthetic EDA, in a few minutes on a laptop.

    synthetic EDA (seed 1) --variance-data--> member store + std store
        --anemoi-training train --config-name=variance_emulator_synthetic (short)--> inference checkpoint
        --evaluate variance--> scores on held-out dates of another seed (2), and on stronger fronts (--shift)

The shipped config is used unchanged; the small setting (steps, date splits, output folder) is passed as
command-line overrides, as a user would. The same commands at full size are in the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

__all__ = ["DemoSettings", "demo", "train_command"]

#: The physics change of the demo's degradation check (training: errors.front_factor=2.5).
SHIFT = "fronts4=errors.front_factor=4"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """The small setting of the demo.

    Attributes
    ----------
    grid, levels, members : str, int, int
        Synthetic EDA: grid, model levels and ``N`` (6 variables, so ``5 * levels + 1`` fields).
    seen : int
        ``M``, the members the emulator sees.
    train_days, test_dates : int
        Days of 6-hourly training data (seed 1; the last 2 dates validate) and held-out dates (seed 2, March).
    max_steps : int
        Training steps of ``anemoi-training train``.
    max_iter, max_rows : int
        Size of the regression baselines.
    """

    grid: str = "O32"
    levels: int = 2
    members: int = 20
    seen: int = 5
    train_days: int = 4
    test_dates: int = 4
    max_steps: int = 150
    max_iter: int = 100
    max_rows: int = 50_000

    def __post_init__(self) -> None:
        if self.train_days < 1 or self.test_dates < 2 or self.max_steps < 1:
            raise ValueError(
                f"train_days = {self.train_days}, test_dates = {self.test_dates}, max_steps = {self.max_steps}: use "
                "at least 1 day (4 dates: 2 to train, 2 to validate), 2 test dates and 1 step"
            )

    def train_config(self):
        """The :class:`~hybrid_eda.synthetic.SyntheticEDAConfig` of the training EDA (seed 1)."""
        from hybrid_eda.synthetic import SyntheticEDAConfig

        start = datetime(2023, 1, 1)
        end = start + timedelta(days=self.train_days) - timedelta(hours=6)
        return SyntheticEDAConfig(grid=self.grid, levels=self.levels, members=self.members, start=start, end=end,
                                  seed=1)  # fmt: skip

    def test_config(self):
        """The held-out EDA: another seed (2), other dates (from 2023-03-01)."""
        start = datetime(2023, 3, 1)
        end = start + timedelta(hours=6 * (self.test_dates - 1))
        return dataclasses.replace(self.train_config(), start=start, end=end, seed=2)


def _splits(settings: DemoSettings) -> dict[str, tuple[str, str]]:
    """Training, validation (the last 2 training-EDA dates) and test split of the training stores."""
    iso = [d.isoformat() for d in settings.train_config().dates]  # 4 or more (DemoSettings)
    return {"training": ("null", iso[-3]), "validation": (iso[-2], iso[-1]), "test": (iso[-2], "null")}


def train_command(settings: DemoSettings, output: Path) -> list[str]:
    """``anemoi-training train --config-name=variance_emulator_synthetic`` with the demo's overrides."""
    overrides = [f"training.max_steps={settings.max_steps}", f"dataloader.members_per_sample={settings.seen}",
                 "dataloader.limit_batches.validation=1", f"system.output.root={output}"]  # fmt: skip
    for split, (start, end) in _splits(settings).items():
        overrides += [f"dataloader.{split}.datasets.members.start={start}",
                      f"dataloader.{split}.datasets.members.end={end}"]  # fmt: skip
    executable = Path(sys.executable).with_name("anemoi-training")
    return [str(executable), "train", "--config-name=variance_emulator_synthetic", *overrides]


def _train(settings: DemoSettings, workdir: Path) -> Path:
    """Train in ``workdir`` (where the stores are) and return the inference checkpoint of the last step."""
    from hybrid_eda.errors import RunFailedError

    output = workdir / "output"
    command = train_command(settings, output)
    LOGGER.info("%s", " ".join(command))
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    (workdir / "train.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RunFailedError(f"`{' '.join(command)}` failed:\n{(result.stdout + result.stderr)[-3000:]}")
    checkpoints = sorted(output.glob("checkpoint/*/inference-last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise RunFailedError(
            f"anemoi-training wrote no inference-last.ckpt under {output}; see {workdir / 'train.log'}"
        )
    return checkpoints[-1]


def _evaluate(argv: list[str]) -> None:
    """``hybrid-eda evaluate variance ARGV`` in this process (errors propagate)."""
    from hybrid_eda.evaluation.cli import add_parser

    parser = argparse.ArgumentParser(prog="hybrid-eda")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", "variance", *argv])
    args.func(args)


def demo(out_dir: Path, settings: DemoSettings | None = None) -> dict[str, Any]:
    """Build the stores, train the emulator, evaluate it on held-out dates of seed 2; outputs under ``out_dir``.

    Returns
    -------
    dict
        Settings, timings (seconds: data, training, evaluation), the checkpoint, and of the evaluation
        (``evaluation/summary.json``, ``maps.png``, ``pit.png``): ``nmse`` and ``gap_closed`` per estimator, the
        emulator's 90% coverage and the nMSE change on stronger fronts (``fronts4``).
    """
    from hybrid_eda.data.grids import use_local_grids
    from hybrid_eda.synthetic import write_synthetic_eda
    from hybrid_eda.training.stores import make_variance_stores

    settings = settings or DemoSettings()
    out_dir = Path(out_dir).resolve()
    use_local_grids()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    stores = make_variance_stores(out_dir / "train", settings.train_config(), overwrite=True)
    write_synthetic_eda(settings.test_config(), out_dir / "test-eda", overwrite=True)
    timings["data"] = time.perf_counter() - started

    started = time.perf_counter()
    checkpoint = _train(settings, out_dir / "train")
    timings["training"] = time.perf_counter() - started

    started = time.perf_counter()
    training_end = _splits(settings)["training"][1]
    first = settings.train_config().dates[0].isoformat()
    evaluation = out_dir / "evaluation"
    _evaluate([str(checkpoint), "--train", str(stores.synthetic), "--train-dates", f"{first}/{training_end}",
               "--test", str(out_dir / "test-eda"), "--members", str(settings.seen), "--shift", SHIFT,
               "--max-iter", str(settings.max_iter), "--max-rows", str(settings.max_rows),
               "--out", str(evaluation)])  # fmt: skip
    timings["evaluation"] = time.perf_counter() - started

    summary = json.loads((evaluation / "summary.json").read_text())
    shifted = summary["degradation"]["sets"][SHIFT.split("=")[0]]
    result = {
        "settings": dataclasses.asdict(settings),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "checkpoint": str(checkpoint),
        "nmse": summary["nmse"],
        "gap_closed": summary["gap_closed"],
        "coverage_90": summary["coverage_90"].get("emulator"),
        "fronts4": {"nmse_change": shifted["change"]["nmse"], "gap_closed": shifted["gap_closed"]},
        "summary": str(evaluation / "summary.json"),
    }
    gap = summary["gap_closed"].get("emulator")
    print(
        f"variance emulator: {settings.max_steps} steps on {settings.grid} x {settings.levels} levels, "
        f"M = {settings.seen} of N = {settings.members}: nMSE {summary['nmse']['emulator']:.4f} (raw "
        f"{summary['nmse']['raw']:.4f}, floor {summary['nmse']['floor']:.4f}, gap closed {gap:.0%}) in "
        f"{sum(timings.values()):.0f} s (data {timings['data']:.0f}, training {timings['training']:.0f}, "
        f"evaluation {timings['evaluation']:.0f})"
    )
    return result
