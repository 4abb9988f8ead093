"""``hybrid-eda evaluate variance-impact``: the emulator's variances inside the exact linear analysis of a
synthetic global EDA, against the N-member, raw M-member and true ones (:mod:`~hybrid_eda.evaluation.
variance_impact`).

    hybrid-eda synthetic --grid O32 --levels 5 --members 50 --seed 2 --start 2023-03-01T00 --end 2023-03-03T18 \\
        --out test-eda
    hybrid-eda evaluate variance-impact CHECKPOINT --test test-eda --out impact       # M = 5, N = 50, 8 draws
    hybrid-eda evaluate variance-impact --test test-eda --out impact                   # without the emulator

Writes ``summary.json`` (settings, scores per variable, level group and field, the verdict of issue 9, timings)
and ``impact.png`` (normalised changes against the N-member variances), and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from hybrid_eda.outputs import output_dir

__all__ = ["add_parser", "run_variance_impact_command"]

LOGGER = logging.getLogger(__name__)


def add_parser(what: argparse._SubParsersAction) -> None:
    """Register ``variance-impact`` under ``hybrid-eda evaluate``."""
    from hybrid_eda.evaluation.cli import date_window

    parser = what.add_parser(
        "variance-impact",
        help="the emulator's variances inside the exact linear analysis of a synthetic EDA (analysis error)",
        description="Analyse control backgrounds of a synthetic EDA with its own observations by the exact linear "
        "update, B = D C D with the known correlation C and D the std of: the true sigma_b, the N-member EDA, the "
        "raw first M members, and the emulator fed by those M members (CHECKPOINT). Scores the RMS analysis error "
        "against the known truth per variable and level group; normalised changes against the N-member "
        "variances with confidence intervals across dates.",
    )
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None,
                        help="variance-emulator inference checkpoint (omit: no emulator rows)")  # fmt: skip
    parser.add_argument("--test", type=Path, required=True, help="a synthetic EDA folder (hybrid-eda synthetic)")
    parser.add_argument("--members", type=int, default=5, help="seen members M, the first M (default 5)")
    parser.add_argument("--reference-members", type=int, default=None, metavar="N",
                        help="reference members N, the first N (default: all of the EDA)")  # fmt: skip
    parser.add_argument("--draws", type=int, default=8, help="control backgrounds per date (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the control backgrounds (default 0)")
    parser.add_argument("--test-dates", type=date_window, default=None, metavar="FIRST/LAST",
                        help="only the dates in this window, e.g. 2023-03-01T00/2023-03-02T18")  # fmt: skip
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals (0.95)")
    parser.add_argument("--out", type=output_dir, default=Path("variance-impact"),
                        help="output folder (default variance-impact)")  # fmt: skip
    parser.set_defaults(func=run_variance_impact_command)


def load_checkpoint(path: Path, grid) -> tuple[object, int | None]:
    """The predictor of a variance-emulator checkpoint on ``grid`` (a GaussianGrid) and its training M.

    Raises
    ------
    UserInputError
        If the file is missing, not an inference checkpoint, the checkpoint of another model, or trained on
        another grid than ``grid``.
    """
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.inference import variance_checkpoint

    if not path.exists():
        raise UserInputError(f"checkpoint {path} does not exist; give a variance-emulator inference checkpoint")
    checkpoint = variance_checkpoint.read_variance_checkpoint(path)
    if checkpoint.grid.name != grid.name or checkpoint.grid.npoints != grid.npoints:
        raise UserInputError(
            f"the checkpoint {path} was trained on {checkpoint.grid.name} ({checkpoint.grid.npoints} points) and the "
            f"EDA is on {grid.name} ({grid.npoints} points); use an EDA on {checkpoint.grid.name} (hybrid-eda "
            f"synthetic --grid {checkpoint.grid.name}) or a checkpoint trained on {grid.name}"
        )
    return checkpoint.predictor, checkpoint.training_members


def _config(path: Path):
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.data import config_from_manifest

    manifest = path / "manifest.json"
    if not manifest.is_file():
        what = "does not exist" if not path.exists() else "holds no manifest.json (a store has no truth)"
        raise UserInputError(
            f"--test {path} {what}; the variance impact needs a synthetic EDA folder (its truth and sigma_b): "
            "write one with `hybrid-eda synthetic --members 50 --out PATH`"
        )
    return config_from_manifest(json.loads(manifest.read_text()))


def run_variance_impact_command(args: argparse.Namespace) -> int:
    """The ``evaluate variance-impact`` command (module docstring); returns 0."""
    from hybrid_eda import __version__
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.cli import _synthetic_dates
    from hybrid_eda.evaluation.variance_impact import check_impact_settings, run_variance_impact
    from hybrid_eda.evaluation.variance_impact_figure import write_impact_figure
    from hybrid_eda.evaluation.variance_impact_scores import impact_summary, impact_table
    from hybrid_eda.synthetic.grids import make_grid

    started = time.perf_counter()
    if not 0.5 <= args.confidence < 1.0:
        raise UserInputError(f"--confidence {args.confidence}: use a level in [0.5, 1), e.g. 0.95")
    config = _config(args.test)
    n = config.members if args.reference_members is None else int(args.reference_members)
    check_impact_settings(config, n, int(args.members), int(args.draws))  # before loading the checkpoint
    dates = _synthetic_dates(args.test, args.test_dates)
    if len(dates if dates is not None else config.dates) < 3:
        raise UserInputError("the confidence intervals need at least three test dates; widen --test-dates")
    predictor, trained_m = None, None
    if args.checkpoint is not None:
        predictor, trained_m = load_checkpoint(args.checkpoint, make_grid(config.grid))
        if trained_m is not None and trained_m != args.members:
            LOGGER.warning("the emulator was trained on M = %d members and is fed M = %d", trained_m, args.members)
    result = run_variance_impact(config, n=n, m=args.members, predictor=predictor, draws=args.draws, seed=args.seed,
                                 dates=dates)  # fmt: skip
    summary = impact_summary(result, confidence=args.confidence)
    labels = {"ensemble_N": f"{n} members", "raw_M": f"raw {args.members} members",
              "emulator": f"emulator ({args.members} members, mean)",
              "emulator_median": f"emulator ({args.members} members, median)", "sigma_b": "true sigma_b"}  # fmt: skip
    summary["settings"] = {
        "test": str(args.test), "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "training_members": trained_m, "n": n, "m": args.members, "seen_members": list(range(1, args.members + 1)),
        "draws": args.draws, "seed": args.seed, "eda_seed": config.seed, "grid": result.grid,
        "dates": [d.isoformat() for d in result.dates], "fields": list(result.variables),
        "sources": list(result.sources), "labels": labels, "hybrid_eda_version": __version__,
        "analysis": "exact per-level linear update, B = D C D, the EDA's own observations",
        "pooling": "fields in units of their own <sigma_b^2> (area and date mean)",
    }  # fmt: skip
    summary["timings_s"] = {**result.seconds, "total": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    write_impact_figure(result, args.out / "impact.png", labels, confidence=args.confidence)
    print(impact_table(summary))
    print(json.dumps(summary["verdict"]))
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'impact.png'}")
    return 0
