"""Demo step: the variance emulator end to end on a small synthetic EDA, in a few minutes on a laptop.

    synthetic EDA (seed 1) --variance-data--> member store + std store
        --anemoi-training train --config-name=variance_emulator_synthetic (short)--> inference checkpoint
        --evaluate variance--> scores on held-out dates of another seed (2), and on stronger fronts (--shift)

The shipped config is used unchanged; the small setting (steps, date splits, output folder) is passed as
command-line overrides, as a user would. The same commands at full size are in the README.

The last demo step (:func:`impact_demo`, issue 9) puts variances inside the analysis, in the same folder:

    hybrid-eda l96 variances ...                    --> impact/l96/variances.json, variances.png
        (cycled 4D-Var, B variances from the N-member EDA, a raw M-member subset, a static D; tiny setting)
    hybrid-eda evaluate variance-impact CKPT --test test-eda ...  --> impact/global/summary.json, impact.png
        (exact linear analysis of the synthetic EDA with the std of sigma_b, N members, raw M, the emulator
        trained by the step above; without that step's outputs, a tiny EDA of its own and no emulator rows)
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

__all__ = ["DemoSettings", "ImpactDemoSettings", "demo", "impact_demo", "train_command"]

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


def _command(add_parser, argv: list[str]) -> None:
    """``hybrid-eda ARGV`` of the commands ``add_parser`` registers, in this process (errors propagate)."""
    parser = argparse.ArgumentParser(prog="hybrid-eda")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    LOGGER.info("hybrid-eda %s", " ".join(argv))
    args.func(args)


def _evaluate(argv: list[str]) -> None:
    """``hybrid-eda evaluate variance ARGV`` in this process (errors propagate)."""
    from hybrid_eda.evaluation.cli import add_parser

    _command(add_parser, ["evaluate", "variance", *argv])


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


@dataclasses.dataclass(frozen=True)
class ImpactDemoSettings:
    """The tiny setting of the variance-impact step (:func:`impact_demo`).

    Attributes
    ----------
    l96_members, l96_subset : int
        Lorenz-96 EDA size ``N`` and the raw subset ``M`` (``hybrid-eda l96 variances -N -M``).
    l96_seeds, l96_cycles, l96_spinup, l96_train_cycles : int
        Scored seeds (from 100), their cycles and spin-up, and the cycles of the 2 training seeds.
    l96_scales, l96_leads : tuple
        Grid of the scale on ``D`` and the lead times (6 h model steps; 0 = analysis).
    l96_emulator : str, optional
        An L96 variance-emulator checkpoint (``variance_emulator_l96``) for the emulator row; none: no such row.
    seen, draws : int
        Global experiment: members ``M`` the emulator sees (as it was trained) and control backgrounds per date.
    grid, levels, members, dates, observations : str, int, int, int, int
        The global experiment's own tiny EDA (seed 2; observed points per date), used only when the variance
        step's ``test-eda`` is absent.
    """

    l96_members: int = 10
    l96_subset: int = 3
    l96_seeds: int = 2
    l96_cycles: int = 160
    l96_spinup: int = 30
    l96_train_cycles: int = 120
    l96_scales: tuple[float, ...] = (0.7, 1.0, 1.4, 2.0)  # the tuned 1.4 inside the grid
    l96_leads: tuple[int, ...] = (0, 2, 4)
    l96_emulator: str | None = None
    seen: int = DemoSettings.seen
    draws: int = 2
    grid: str = "O16"
    levels: int = 2
    members: int = 20
    dates: int = 4
    observations: int = 400

    def __post_init__(self) -> None:
        if self.dates < 3 or self.draws < 1:
            raise ValueError(
                f"dates = {self.dates}, draws = {self.draws}: the confidence intervals need at least 3 dates and "
                "1 control background per date"
            )

    def l96_argv(self, out: Path) -> list[str]:
        """``hybrid-eda l96 variances ...`` of the tiny setting, writing into ``out``."""
        argv = ["l96", "variances", "--members", str(self.l96_members), "--subset", str(self.l96_subset),
                "--seeds", str(self.l96_seeds), "--cycles", str(self.l96_cycles), "--spinup", str(self.l96_spinup),
                "--train-cycles", str(self.l96_train_cycles), "--scales", ",".join(map(str, self.l96_scales)),
                "--leads", ",".join(map(str, self.l96_leads)), "--out", str(out)]  # fmt: skip
        return argv + (["--emulator", str(self.l96_emulator)] if self.l96_emulator else [])

    def global_argv(self, test: Path, checkpoint: Path | None, out: Path) -> list[str]:
        """``hybrid-eda evaluate variance-impact [CHECKPOINT] --test TEST ...``, writing into ``out``."""
        return ["evaluate", "variance-impact", *([str(checkpoint)] if checkpoint else []), "--test", str(test),
                "--members", str(self.seen), "--draws", str(self.draws), "--out", str(out)]  # fmt: skip

    def eda_config(self):
        """The global experiment's own EDA when there is no ``test-eda``: seed 2, ``dates`` 6-hourly from March 1."""
        from hybrid_eda.synthetic import SyntheticEDAConfig
        from hybrid_eda.synthetic.config import ObservationConfig

        start = datetime(2023, 3, 1)
        end = start + timedelta(hours=6 * (self.dates - 1))
        return SyntheticEDAConfig(grid=self.grid, levels=self.levels, members=self.members, start=start, end=end,
                                  seed=2, observations=ObservationConfig(count=self.observations))  # fmt: skip


def _variance_step_outputs(out_dir: Path) -> tuple[Path | None, Path | None]:
    """The variance step's held-out EDA and its newest ``inference-last.ckpt`` under ``out_dir`` (None if absent)."""
    test = out_dir / "test-eda"
    checkpoints = sorted((out_dir / "train" / "output").glob("checkpoint/*/inference-last.ckpt"),
                         key=lambda p: p.stat().st_mtime)  # fmt: skip
    return (test if (test / "manifest.json").is_file() else None), (checkpoints[-1] if checkpoints else None)


def _change_cells(change: dict[str, Any]) -> list[str]:
    """``+1.2%*`` per lead of a JSON ScoreChange (``*``: significant)."""
    return [f"{100 * v:+.1f}%{'*' if s else ''}" for v, s in zip(change["change"], change["significant"], strict=True)]


def impact_demo(out_dir: Path, settings: ImpactDemoSettings | None = None) -> dict[str, Any]:
    """The variance-impact experiments of issue 9 in a tiny setting, into ``out_dir / "impact"``.

    Runs ``hybrid-eda l96 variances`` (``impact/l96``) and ``hybrid-eda evaluate variance-impact``
    (``impact/global``) on the variance step's held-out EDA and checkpoint when ``out_dir`` holds them (the demo
    runs that step first, in the same folder), else on a tiny EDA of its own without the emulator rows.

    Returns
    -------
    dict
        Settings, timings (seconds: ``l96``, ``global``), and per experiment the JSON and PNG paths plus the
        headline: L96 normalised changes per lead against the N-member row; global overall changes against
        ``ensemble_N`` and the issue's ``verdict``.
    """
    from hybrid_eda.data.grids import use_local_grids
    from hybrid_eda.evaluation.cli import add_parser as evaluate_parser
    from hybrid_eda.l96.cli import add_parser as l96_parser

    settings = settings or ImpactDemoSettings()
    out_dir = Path(out_dir).resolve()
    impact = out_dir / "impact"
    timings: dict[str, float] = {}

    started = time.perf_counter()
    _command(l96_parser, settings.l96_argv(impact / "l96"))
    timings["l96"] = time.perf_counter() - started
    l96 = json.loads((impact / "l96" / "variances.json").read_text())

    started = time.perf_counter()
    use_local_grids()
    test, checkpoint = _variance_step_outputs(out_dir)
    if test is None:
        from hybrid_eda.synthetic import write_synthetic_eda

        test, checkpoint = impact / "test-eda", None  # a checkpoint of another EDA's grid would not fit
        write_synthetic_eda(settings.eda_config(), test, overwrite=True)
    _command(evaluate_parser, settings.global_argv(test, checkpoint, impact / "global"))
    timings["global"] = time.perf_counter() - started
    summary = json.loads((impact / "global" / "summary.json").read_text())

    l96_changes = {name: row["change"] for name, row in l96["rows"].items() if "change" in row}
    result = {
        "settings": dataclasses.asdict(settings),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "l96": {
            "json": str(impact / "l96" / "variances.json"),
            "figure": str(impact / "l96" / "variances.png"),
            "reference": next(iter(l96["rows"])),
            "lead_hours": l96["lead_hours"],
            "change": {name: c["change"] for name, c in l96_changes.items()},
            "significant": {name: c["significant"] for name, c in l96_changes.items()},
        },
        "global": {
            "json": str(impact / "global" / "summary.json"),
            "figure": str(impact / "global" / "impact.png"),
            "test": str(test),
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "change": {name: c["change"] for name, c in summary["overall"]["change"].items()},
            "verdict": summary["verdict"],
        },
    }
    cells = "; ".join(f"{name} {' '.join(_change_cells(c))}" for name, c in l96_changes.items())
    overall = ", ".join(f"{name} {100 * c:+.1f}%" for name, c in result["global"]["change"].items())
    print(
        f"variance impact: L96 4D-Var vs {result['l96']['reference']} at leads {l96['lead_hours']} h: {cells} "
        f"(* significant) in {timings['l96']:.0f} s; global exact analysis vs ensemble_N: {overall} "
        f"({'with' if checkpoint else 'without'} the emulator) in {timings['global']:.0f} s"
    )
    return result
