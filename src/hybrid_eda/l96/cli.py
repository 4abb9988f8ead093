"""The ``hybrid-eda l96 ...`` commands: run an experiment, run a hybrid cycle, print the emulator table.

    hybrid-eda l96 run --preset sakov2008 --members 20 --inflation 1.02 --cycles 10000 --seed 1 --json out.json
    hybrid-eda l96 hybrid --n-real 10 --emulator gaussian --json hybrid.json    # full vs hybrid, 32 seeds
    hybrid-eda l96 table --cycles 3000 --seeds 16         # every row at its best inflation of DEFAULT_SWEEP
    hybrid-eda l96 presets
    hybrid-eda l96 variances --emulator CKPT --seeds 4 --cycles 2000 --out DIR   # 4D-Var fed by N / 5 / emulated D

``hybrid`` and ``table`` run ``--seeds S`` seeds (default 32: seeds ``--seed .. --seed + S - 1`` as one batch,
``--batch`` is a synonym) and report per configuration the median analysis RMSE over them, the 10-90% band
and the fraction that lost track (RMSE > ``LOST_TRACK_RMSE`` = 1, or blown up); ``hybrid`` also reports the
analysis time of the N real analyses (4D-Var: minimisations) of the full EDA against the hybrid's N_s.

The top-level ``hybrid-eda`` parser calls :func:`add_parser` and then ``args.func(args)``; its ``main`` prints bad
input (exit 2) and filter divergence (a non-finite state, exit 1) as one line on stderr without a traceback
(:mod:`hybrid_eda.errors`). Output paths are checked while parsing, before any cycle runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from hybrid_eda.outputs import output_dir, output_file

__all__ = ["add_parser", "demo", "build_parser", "main"]

LOGGER = logging.getLogger(__name__)

#: The inflation grid of ``l96 table`` (and ``--sweep``): per row, the fewest seeds lost, then the lowest
#: median analysis RMSE over seeds, wins.
DEFAULT_SWEEP = (1.0, 1.02, 1.03, 1.05, 1.1, 1.2, 1.3)
#: Seeds of ``l96 hybrid`` and ``l96 table`` (``--seeds``): a reference number is a distribution over seeds.
DEFAULT_SEEDS = 32


def _experiment_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run``, ``hybrid`` and ``table``; unset ones come from the preset."""
    from hybrid_eda.l96.methods import METHODS
    from hybrid_eda.l96.var4d_control import B_MODES

    g = p.add_argument_group("experiment (defaults come from the preset)")
    g.add_argument("--preset", default="sakov2008", help="named setting (see `hybrid-eda l96 presets`)")
    g.add_argument("--method", choices=list(METHODS), help="DA method (default: the preset's, etkf)")
    g.add_argument("--members", "-N", type=int, help="ensemble size N")
    g.add_argument("--inflation", type=float, help="multiplicative inflation of the background anomalies (>= 1)")
    g.add_argument(
        "--rtps",
        type=float,
        help="relaxation to prior spread of every analysis, real and emulated members together (0 = off, the "
        "default; 1 = the background spread)",
    )
    g.add_argument("--cycles", type=int, help="DA cycles run, spin-up included (preset: 10000)")
    g.add_argument("--spinup", type=int, help="first cycles left out of the scores (default min(500, cycles/5))")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed s of the first experiment (>= 0): experiment k of a batch draws its truth, observations, "
        "initial ensemble, method and emulator noise from SeedSequence(s+k), so it is exactly the run --seed s+k",
    )
    g.add_argument(
        "--batch",
        type=int,
        default=1,
        help="B independent experiments (seeds s .. s+B-1) run in one vectorised call; the summary gives their "
        "median, 10-90%% band and the fraction that lost track",
    )
    g.add_argument("--obs-every", type=int, help="observe every K-th variable (1 = all)")
    g.add_argument("--obs-std", type=float, help="observation error std (R = obs_std^2 I)")
    g.add_argument("--steps-per-obs", type=int, help="model steps between observation times")
    g.add_argument("--forcing", type=float, help="Lorenz-96 forcing F")
    g.add_argument("--dt", type=float, help="RK4 time step")
    g.add_argument("--init-spread", type=float, help="std of the initial ensemble around the truth (1.0)")
    g.add_argument(
        "--rotate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="randomly rotate the analysis anomalies each cycle (DAPPER rot=True; default: on for etkf)",
    )
    v = p.add_argument_group("4D-Var / 3D-Var")
    v.add_argument("--window", type=int, help="observation times per 4D-Var window")
    v.add_argument("--b-mode", choices=B_MODES, help="4D-Var background covariance")
    v.add_argument("--hybrid-weight", type=float, help="ensemble weight of a hybrid B")
    v.add_argument("--b-scale", type=float, help="static B = b_scale x climatological covariance (0.02)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also off when not a terminal)")


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "method members inflation cycles spinup seed batch obs_every obs_std steps_per_obs forcing dt init_spread "
        "window b_mode hybrid_weight b_scale rotate rtps"
    ).split()
    return {k: getattr(args, k) for k in keys}


def _hybrid_options(p: argparse.ArgumentParser, emulator_default: str | None) -> None:
    p.add_argument("--n-real", type=int, help="real members N_s (default: the preset's, 10)")
    if emulator_default is None:
        p.add_argument(
            "--emulator",
            required=True,
            help="none, mean-shift, rescaled-anomalies, gaussian, gaussian-full, local-regression (parameters: "
            "local-regression:noise=0.2,window=2,ridge=1), etkf-reconstruction (knows the filter: plain ETKF "
            "only), oracle, or 'all' for the table (later: a trained generator checkpoint)",
        )
    p.add_argument(
        "--seeds",
        type=int,
        help=f"number S of seeds --seed .. --seed + S - 1, run as one batch (default {DEFAULT_SEEDS}; --batch is "
        "a synonym); every configuration reports the median over them, the 10-90%% band and the fraction that "
        "lost track",
    )
    p.add_argument("--inflations", help="comma-separated inflation grid per row (table), e.g. 1.0,1.02,1.05")
    p.add_argument(
        "--sweep", action="store_true", help=f"the grid {', '.join(map(str, DEFAULT_SWEEP))} (the table's default)"
    )


def add_parser(subparsers: Any) -> None:
    """Register ``l96`` and its sub-commands on the top-level ``hybrid-eda`` parser's subparsers."""
    l96 = subparsers.add_parser(
        "l96",
        help="Lorenz-96 EDA testbed: run, hybrid, table, variances, presets",
        description="Lorenz-96 ensemble data assimilation testbed.",
    )
    sub = l96.add_subparsers(dest="l96_command", metavar="{run,hybrid,table,variances,presets}")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="cycle one DA method and score it",
        description="Cycle one DA method against a truth run; print and save its scores.",
    )
    _experiment_options(run)
    out = run.add_argument_group("output")
    out.add_argument("--json", type=output_file, help="write the JSON summary here")
    out.add_argument("--plot", type=output_file, help="write one PNG (RMSE/spread time series + rank histogram)")
    out.add_argument("--plots", type=output_dir, help="write timeseries.png and rank_histogram.png into this folder")
    out.add_argument("--archive", type=output_file, help="keep every cycle's members, truth and obs; save to PATH.npz")
    run.set_defaults(func=cmd_run)

    hyb = sub.add_parser(
        "hybrid",
        help="full EDA vs hybrid (N_s real + emulated members)",
        description="Run the full N-member EDA and the hybrid cycle (members 0..N_s-1 real, the rest emulated) "
        "with the same truth and observations; --emulator all prints the table.",
    )
    _experiment_options(hyb)
    _hybrid_options(hyb, None)
    hyb.add_argument("--json", type=output_file, help="write the JSON (full and hybrid entries) here")
    hyb.add_argument("--plot", type=output_file, help="write a PNG of full vs hybrid")
    hyb.set_defaults(func=cmd_hybrid, preset="pan2026")

    table = sub.add_parser(
        "table",
        help="all emulators side by side",
        description="The full EDA and every emulator side by side, each at its best inflation (--sweep).",
    )
    _experiment_options(table)
    _hybrid_options(table, "all")
    table.add_argument("--json", type=output_file, help="write the table as JSON")
    table.add_argument("--plot", type=output_file, help="write a bar chart PNG")
    table.set_defaults(func=cmd_table, preset="pan2026", emulator="all")

    _variances_parser(sub)

    presets = sub.add_parser("presets", help="list the presets and their expected scores")
    presets.set_defaults(func=cmd_presets)


def cmd_run(args: argparse.Namespace) -> int:
    from hybrid_eda.l96 import report
    from hybrid_eda.l96.config import ExperimentConfig
    from hybrid_eda.l96.experiment import run_experiment

    config = ExperimentConfig.from_preset(args.preset, **_config_overrides(args))
    if args.archive is not None and config.batch != 1:
        raise ValueError("--archive keeps a single experiment; drop --batch or --archive.")
    result = run_experiment(config, archive=args.archive is not None, progress=not args.no_progress)
    summary = result.summary()
    print(report.format_run(summary))
    if args.archive is not None:
        print(f"archive: {result.archive.save(args.archive)}")  # type: ignore[union-attr]
    if args.json is not None:
        print(f"json: {report.write_json(summary, args.json)}")
    for path in report.plot_run(result, path=args.plot, folder=args.plots):
        print(f"plot: {path}")
    return 0


def _inflations(args: argparse.Namespace) -> list[float] | None:
    if args.inflations:
        try:
            return [float(v) for v in args.inflations.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--inflations must be comma-separated numbers, got {args.inflations!r}.") from None
    return list(DEFAULT_SWEEP) if args.sweep else None


def _seeds(args: argparse.Namespace) -> int:
    """Seeds of a hybrid or table run: ``--seeds``, else ``--batch`` when given, else :data:`DEFAULT_SEEDS`."""
    if args.seeds is not None and args.batch not in (1, args.seeds):
        raise ValueError(f"--seeds {args.seeds} and --batch {args.batch} disagree; give only --seeds.")
    seeds = args.seeds if args.seeds is not None else (args.batch if args.batch != 1 else DEFAULT_SEEDS)
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}; use e.g. --seeds 32.")
    return seeds


def cmd_hybrid(args: argparse.Namespace) -> int:
    if args.emulator == "all":
        return cmd_table(args)
    from hybrid_eda.l96 import report
    from hybrid_eda.l96.config import ExperimentConfig
    from hybrid_eda.l96.hybrid import run_hybrid

    if _inflations(args):
        raise ValueError("--inflations/--sweep pick the best inflation per emulator: use them with --emulator all.")
    overrides = _config_overrides(args) | {"batch": _seeds(args)}
    config = ExperimentConfig.from_preset(args.preset, **overrides, n_real=args.n_real, emulator=args.emulator)
    result = run_hybrid(config, progress=not args.no_progress)
    summary = result.summary()
    print(
        f"{config.method} N={config.members}, {config.n_real} real + {config.members - config.n_real} "
        f"{summary['emulator']} ({summary['kind']}), inflation {config.inflation:g}, {config.cycles} cycles "
        f"({config.spinup} spin-up)"
    )
    print(report.format_hybrid(summary))
    ratio = summary["median_analysis_rmse_ratio"]
    print(f"hybrid / full analysis RMSE (medians): {ratio:.3f}")
    if args.json is not None:
        print(f"json: {report.write_json(summary, args.json)}")
    if args.plot is not None:
        print(f"plot: {report.plot_hybrid(result, args.plot)}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from hybrid_eda.l96 import report
    from hybrid_eda.l96.config import ExperimentConfig
    from hybrid_eda.l96.hybrid import run_table

    overrides = _config_overrides(args) | {"batch": _seeds(args)}
    config = ExperimentConfig.from_preset(args.preset, **overrides, n_real=args.n_real)
    if config.n_real is None:
        config = replace(config, n_real=config.get_preset().n_real)
    if not 1 <= config.n_real < config.members:  # type: ignore[operator]
        raise ValueError(
            f"--n-real must be between 1 and --members - 1 = {config.members - 1}, got {config.n_real}; "
            "lower --n-real or raise --members."
        )
    rows = run_table(config, inflations=_inflations(args) or DEFAULT_SWEEP, progress=not args.no_progress)
    table = report.table_summary(rows)
    table["settings"] = config.to_dict()
    print(
        f"{config.method} N={config.members}, {config.n_real} real + {config.members - config.n_real} emulated, "
        f"{config.cycles} cycles ({config.spinup} spin-up), seeds {config.seed}-{config.seed + config.batch - 1}"
    )
    print(report.format_table(table))
    if args.json is not None:
        print(f"json: {report.write_json(table, args.json)}")
    if args.plot is not None:
        print(f"plot: {report.plot_table(table, args.plot)}")
    return 0


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _variances_parser(sub: Any) -> None:
    """``l96 variances``: the variance-impact experiment (:mod:`hybrid_eda.l96.variance_impact`)."""
    from hybrid_eda.l96.variance_impact_settings import CORRELATIONS, VarianceImpactSettings

    d = VarianceImpactSettings()
    p = sub.add_parser(
        "variances",
        help="4D-Var with B variances from the N-member EDA, a raw M-member subset, an emulator, a climatology",
        description="Cycle a perturbed-observation 4D-Var EDA of N members and, beside it, deterministic 4D-Vars "
        "with B = D^1/2 C D^1/2 whose variances D come each cycle from (a) the N members, (b) the first M, (c) an "
        "emulator fed by those M, (d) a static climatology; score analysis and forecast RMSE as normalised changes "
        "against (a) with AR(1)- and Sidak-corrected confidence intervals. Writes variances.json and variances.png.",
    )
    p.add_argument("--emulator", help="variance-emulator checkpoint (without it the emulator row is skipped)")
    p.add_argument("--preset", default=d.preset, help=f"twin experiment (default {d.preset})")
    p.add_argument("--members", "-N", type=int, default=d.members, help=f"EDA members N (default {d.members})")
    p.add_argument(
        "--subset", "-M", type=int, default=d.subset, help=f"members M of the raw / emulator rows ({d.subset})"
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"first scored seed, >= 100 (default {d.seed})")
    p.add_argument("--seeds", type=int, default=d.seeds, help=f"scored seeds (default {d.seeds})")
    p.add_argument("--cycles", type=int, default=d.cycles, help=f"cycles per scored seed (default {d.cycles})")
    p.add_argument("--spinup", type=int, default=d.spinup, help=f"cycles not scored (default {d.spinup})")
    p.add_argument("--train-seed", type=int, default=d.train_seed, help="first training seed (< 100)")
    p.add_argument("--train-seeds", type=int, default=d.train_seeds, help=f"training seeds ({d.train_seeds})")
    p.add_argument("--train-cycles", type=int, default=d.train_cycles, help=f"training cycles ({d.train_cycles})")
    p.add_argument("--scales", type=_floats, default=d.scales, help="grid of the scale on D, e.g. 0.5,1,2")
    p.add_argument("--leads", type=_ints, default=d.leads, help="lead times in 6 h model steps, e.g. 0,1,2,4,8,20")
    p.add_argument("--correlation", choices=CORRELATIONS, default=d.correlation, help="fixed correlation C of B")
    p.add_argument(
        "--smooth",
        type=int,
        default=d.smooth,
        help="add a row: the raw M-member variance averaged over 2W+1 neighbours (W grid points; 0 = none)",
    )
    p.add_argument(
        "--noise",
        type=_floats,
        default=d.noise,
        help="add rows: the N-member variance times lognormal noise of these stds, e.g. 0.1,0.2,0.4 (calibration)",
    )
    p.add_argument(
        "--block",
        type=int,
        default=d.block,
        help=f"also test blocks of this many cycles per seed (default {d.block} daily cycles = June-August; 0 = off)",
    )
    p.add_argument("--inflation", type=float, help="EDA inflation (default: the preset's)")
    p.add_argument("--window", type=int, help="observation times per window (default: the preset's)")
    p.add_argument("--obs-every", type=int, help="observe every K-th variable (default: the preset's)")
    p.add_argument("--obs-std", type=float, help="observation error std (default: the preset's)")
    p.add_argument("--cache", type=output_dir, help="keep / reuse the EDA records in this folder")
    p.add_argument("--out", type=output_dir, required=True, help="folder for variances.json and variances.png")
    p.set_defaults(func=cmd_variances)


def cmd_variances(args: argparse.Namespace) -> int:
    from hybrid_eda.l96 import report
    from hybrid_eda.l96.variance_impact import (
        VarianceImpactSettings,
        format_variance_impact,
        plot_variance_impact,
        run_variance_impact,
    )

    settings = VarianceImpactSettings(
        preset=args.preset,
        members=args.members,
        subset=args.subset,
        seed=args.seed,
        seeds=args.seeds,
        cycles=args.cycles,
        spinup=args.spinup,
        train_seed=args.train_seed,
        train_seeds=args.train_seeds,
        train_cycles=args.train_cycles,
        scales=tuple(args.scales),
        leads=tuple(args.leads),
        correlation=args.correlation,
        smooth=args.smooth,
        block=args.block,
        noise=tuple(args.noise),
        inflation=args.inflation,
        window=args.window,
        obs_every=args.obs_every,
        obs_std=args.obs_std,
    )
    emulator = None
    if args.emulator is None:
        print("no --emulator: the emulator row is skipped (pass --emulator CKPT to score the emulated variances)")
    else:
        from hybrid_eda.l96.variance_emulation import load_l96_variance_emulator

        emulator = load_l96_variance_emulator(args.emulator)
    result = run_variance_impact(settings, emulator, cache_dir=args.cache)
    if args.emulator is not None:
        result.summary["emulator_checkpoint"] = str(args.emulator)
    print(format_variance_impact(result.summary))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"json: {report.write_json(result.summary, out / 'variances.json')}")
    print(f"plot: {plot_variance_impact(result, out / 'variances.png')}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from hybrid_eda.l96.presets import PRESETS

    for p in PRESETS.values():
        print(f"{p.name}: {p.description}\n  source: {p.source}")
        for s in p.expected:
            setting = (
                f"{s.method}"
                + (f" N={s.members}" if s.members else "")
                + (f" inflation {s.inflation:g}" if s.inflation else "")
            )
            if s.emulator:
                setting += f" hybrid emulator={s.emulator}"
            print(f"    {setting:<42} analysis RMSE {s.describe()}  ({s.source})")
    return 0


#: The demo's short table: seeds, cycles and inflation grid (the full-size table takes many minutes).
DEMO_TABLE: dict[str, Any] = {"seeds": 8, "cycles": 1000, "inflations": (1.05, 1.1)}


def demo(out_dir: Path) -> dict[str, Any]:
    """A short Lorenz-96 demonstration for ``hybrid-eda demo`` (well under a minute on 2 cores).

    Runs the Sakov & Oke (2008) ETKF (N=20, inflation 1.02, 3,000 cycles) and a short hybrid table of the seed
    testbed (10 real + 10 emulated members, :data:`DEMO_TABLE`: medians over 8 seeds of 1,000 cycles), and writes
    ``l96_run.json``, ``l96_run.png``, ``l96_table.json`` and ``l96_table.png`` into ``out_dir``.

    Returns
    -------
    dict
        ``{"run": <run summary>, "table": <table summary>, "files": [...]}``.
    """
    from hybrid_eda.l96 import report
    from hybrid_eda.l96.config import ExperimentConfig
    from hybrid_eda.l96.experiment import run_experiment
    from hybrid_eda.l96.hybrid import run_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = run_experiment(ExperimentConfig.from_preset("sakov2008", cycles=3000, spinup=500, seed=1))
    summary = run.summary()
    print(report.format_run(summary))
    files = [report.write_json(summary, out_dir / "l96_run.json"), *report.plot_run(run, out_dir / "l96_run.png")]
    config = ExperimentConfig.from_preset("pan2026", cycles=DEMO_TABLE["cycles"], spinup=300, seed=1)
    config = replace(config, n_real=10, batch=DEMO_TABLE["seeds"])
    table = report.table_summary(run_table(config, inflations=DEMO_TABLE["inflations"]))
    print(report.format_table(table))
    files += [report.write_json(table, out_dir / "l96_table.json"), report.plot_table(table, out_dir / "l96_table.png")]
    return {"run": summary, "table": table, "files": [str(f) for f in files]}


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser with only the ``l96`` command (tests, ``python -m hybrid_eda.l96.cli``)."""
    parser = argparse.ArgumentParser(prog="hybrid-eda")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m hybrid_eda.l96.cli l96 ...``: the top-level command (its error handling included)."""
    from hybrid_eda.cli import main as hybrid_eda_main

    return hybrid_eda_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
