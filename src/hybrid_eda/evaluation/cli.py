"""``hybrid-eda evaluate variance``: the EDA variance emulator and its baselines on held-out dates.

    hybrid-eda synthetic --grid O32 --levels 5 --members 50 --seed 1 --end 2023-01-15T18 --out train-eda
    hybrid-eda synthetic --grid O32 --levels 5 --members 50 --seed 2 --end 2023-01-08T12 --out test-eda
    hybrid-eda evaluate variance --train train-eda --test test-eda --members 5 --out eval     # baselines only
    hybrid-eda evaluate variance CHECKPOINT --train train-eda --test test-eda --out eval       # + the emulator

    # stores built from the MARS recipes (or their offline twins): members and N-member std, no floor
    hybrid-eda evaluate variance --train members-2023.zarr --train-std std-2023.zarr \\
        --test members-2024.zarr --test-std std-2024.zarr --out eval

    # one store of a whole year (recipes/eda-n80-ml*.yaml): train and test on different months of it, scoring
    # some fields (all 686 of N80 x 137 levels take 0.6 GB per date; the emulator still reads every field)
    hybrid-eda evaluate variance CKPT --train eda-n80-ml.zarr --train-std eda-n80-ml-std.zarr \\
        --train-dates 2023-01-01/2023-01-31 --test eda-n80-ml.zarr --test-std eda-n80-ml-std.zarr \\
        --test-dates 2023-12-01/2023-12-07 --fields t_137 t_96 q_137 vo_96 lnsp_1 --out eval

    # how it degrades on other physics: test EDAs regenerated with changed parameters (same dates and seed)
    hybrid-eda evaluate variance CKPT --train train-eda --test test-eda \\
        --shift fronts4=errors.front_factor=4 --shift short=errors.length_scale_km=300 --out eval
    # ... or on other folders/stores, the first one being the in-distribution reference
    hybrid-eda evaluate variance CKPT --train train-eda --test test-eda other-eda --out eval

Writes ``summary.json`` (:meth:`~hybrid_eda.evaluation.suite.VarianceEvaluation.summary` of the first test set),
``maps.png`` (``s_M``, the best prediction and ``s_N`` of one field on the first test date) and ``pit.png`` (PIT
histograms of the probabilistic estimators), and prints the normalised MSE table. With several test sets (more
than one ``--test``, or ``--shift``) the summary also holds ``degradation``
(:mod:`~hybrid_eda.evaluation.degradation`: per set the scores and their change against the first set), each
other set's full summary is written to ``sets/NAME.json`` and the degradation tables are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

from hybrid_eda.outputs import output_dir

__all__ = ["add_parser", "run_variance"]

LOGGER = logging.getLogger(__name__)

#: Estimators that know the truth: never "the best prediction" of the maps.
TRUTH_AWARE = ("floor", "oracle_sigma", "sigma_b")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate variance`` on the top-level ``hybrid-eda`` parser."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate a model against baselines on held-out data (variance emulator)",
        description="Evaluate a model of the package on held-out data.",
    )
    what = evaluate.add_subparsers(dest="evaluate", metavar="WHAT", required=True)
    parser = what.add_parser(
        "variance",
        help="the EDA variance emulator against raw s_M, rescaling, the tuned filter, regression and the floor",
        description="Normalised MSE against the N-member std s_N of: raw s_M, the best constant rescaling, the "
        "isotropic filter tuned per field, gradient boosting on multi-scale and flow features (own field and pooled "
        "over a level), the emulator and the emulator without message passing (with CHECKPOINT), and on a "
        "synthetic EDA the sampling floor E[s_N | M members, truth, sigma_b]; gap closed, improvement over the "
        "filter, 90% coverage (overall and on fronts), CRPS, NLL, PIT. Fitted on --train, scored on --test "
        "(held-out dates: a synthetic EDA of another seed, or stores of another period).",
    )
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None,
                        help="variance-emulator checkpoint (omit to evaluate the baselines only)")  # fmt: skip
    parser.add_argument("--train", type=Path, required=True,
                        help="training data: a synthetic EDA folder or a member store")  # fmt: skip
    parser.add_argument("--test", type=Path, nargs="+", required=True,
                        help="held-out data, of the training fields; several: the first is the in-distribution "
                        "reference of the degradation tables")  # fmt: skip
    parser.add_argument("--train-std", type=Path, default=None,
                        help="std store of the training member store (default: s_N from all its members)")  # fmt: skip
    parser.add_argument("--test-std", type=Path, nargs="+", default=None,
                        help="std store of each --test member store, in the same order")  # fmt: skip
    parser.add_argument("--train-dates", type=date_window, default=None, metavar="FIRST/LAST",
                        help="training dates only in this window, e.g. 2023-01-01/2023-09-30 (inclusive)")  # fmt: skip
    parser.add_argument("--test-dates", type=date_window, default=None, metavar="FIRST/LAST",
                        help="test dates only in this window (every --test), e.g. 2023-11-01/2023-12-31")  # fmt: skip
    parser.add_argument("--fields", nargs="+", default=None, metavar="NAME",
                        help="score these fields only, e.g. t_137 t_96 q_137 lnsp_1 (the emulator still sees every "
                        "field); keeps N80 x 137-level stores in memory")  # fmt: skip
    parser.add_argument("--shift", action="append", default=[], metavar="NAME=SECTION.KEY=VALUE[,...]",
                        help="also test on the first (synthetic) --test EDA regenerated with other physics, as "
                        "`hybrid-eda synthetic --set` (same dates and seed unless seed=N is an item), e.g. "
                        "fronts4=errors.front_factor=4 (repeatable)")  # fmt: skip
    parser.add_argument("--members", type=int, default=5, help="seen members M (default 5); the first M")
    parser.add_argument("--no-mp-checkpoint", type=Path, default=None,
                        help="checkpoint of the emulator trained without message passing (emulator_no_mp)")  # fmt: skip
    parser.add_argument("--baselines-only", action="store_true", help="ignore CHECKPOINT: baselines only")
    parser.add_argument("--field", default=None, help="field of the maps, e.g. t_3 (default: t at a middle level)")
    parser.add_argument("--no-pooled", action="store_true", help="skip the regression pooled across variables")
    parser.add_argument("--max-iter", type=int, default=200, help="boosting iterations of the regression (200)")
    parser.add_argument("--max-rows", type=int, default=200_000,
                        help="training rows per variable of the regression (200000)")  # fmt: skip
    parser.add_argument("--out", type=output_dir, default=Path("variance-evaluation"),
                        help="output folder (default variance-evaluation)")  # fmt: skip
    parser.set_defaults(func=run_variance)
    from hybrid_eda.evaluation.hybrid_members_cli import add_parser as add_members_parser

    add_members_parser(what)  # evaluate members
    from hybrid_eda.evaluation.variance_impact_cli import add_parser as add_impact_parser

    add_impact_parser(what)  # evaluate variance-impact


# --------------------------------------------------------------------------------------------------- data
def _when(text: str, end: bool) -> datetime:
    value = datetime.fromisoformat(text)
    if end and len(text) <= 10:  # a day: all of it
        value += timedelta(days=1) - timedelta(seconds=1)
    return value


def date_window(text: str) -> tuple[datetime, datetime]:
    """``FIRST/LAST`` (ISO dates or date-times, inclusive; a bare day as LAST means all of it) -> the pair."""
    first, sep, last = str(text).partition("/")
    try:
        window = _when(first.strip(), end=False), _when(last.strip(), end=True)
    except ValueError:
        window = None
    if not sep or window is None or window[1] < window[0]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FIRST/LAST with ISO dates, FIRST <= LAST; e.g. 2023-01-01/2023-09-30 or "
            "2023-03-01T00/2023-03-03T18"
        )
    return window


def _kind(path: Path, option: str) -> str:
    from hybrid_eda.errors import UserInputError

    if (path / "manifest.json").is_file():
        return "synthetic"
    if path.suffix == ".zarr" or any((path / name).exists() for name in (".zattrs", ".zgroup", "zarr.json")):
        return "store"
    if not path.exists():
        raise UserInputError(f"{option} {path} does not exist; write a synthetic EDA there with `hybrid-eda synthetic`")
    raise UserInputError(
        f"{option} {path} is neither a synthetic EDA (no manifest.json) nor an anemoi-datasets store; write one with "
        "`hybrid-eda synthetic --out PATH` or build a store with `anemoi-datasets create RECIPE PATH.zarr`"
    )


def _check_synthetic_members(path: Path, m: int, option: str) -> None:
    from hybrid_eda.errors import UserInputError

    n = int(json.loads((path / "manifest.json").read_text())["config"]["members"])
    if m > n:
        raise UserInputError(
            f"--members {m} is more than the {n} members of the synthetic EDA {option} {path}; use --members {n} "
            "or fewer (the M seen members are a subset of the N)"
        )


def _seed(path: Path) -> int | None:
    manifest = path / "manifest.json"
    return json.loads(manifest.read_text())["config"].get("seed") if manifest.is_file() else None


def _overlaps(train_path: Path, test_path: Path, train, test, test_seed: int | None = None) -> bool:
    """Whether the test dates are also training dates of the same EDA (same seed for synthetic ones)."""
    if train.dates and test.dates and not set(train.dates) & set(test.dates):
        return False
    if Path(train_path).resolve() == Path(test_path).resolve() and test_seed is None:
        return True
    seeds = _seed(train_path), _seed(test_path) if test_seed is None else test_seed
    return seeds[0] is None or seeds[0] == seeds[1]


def _synthetic_dates(path: Path, window) -> list[int] | None:
    from hybrid_eda.evaluation.data import config_from_manifest, date_indices

    if window is None:
        return None
    config = config_from_manifest(json.loads((path / "manifest.json").read_text()))
    return date_indices(config.dates, window, f"the synthetic EDA {path}").tolist()


def _select(stats, fields, path: Path):
    from hybrid_eda.errors import UserInputError

    if fields is None:
        return stats
    unknown = [f for f in fields if f not in stats.variables]
    if unknown:
        raise UserInputError(
            f"--fields {' '.join(unknown[:5])}: not a field of {path}; choose among {', '.join(stats.variables[:8])}"
            f"{' ...' if len(stats.variables) > 8 else ''}"
        )
    return stats.select_fields(fields)


def load_statistics(path: Path, std: Path | None, m: int, option: str, on_members=None, dates=None, fields=None):
    """:class:`~hybrid_eda.evaluation.data.EDAStatistics` of a synthetic EDA folder or a member/std store pair
    (``dates``: a ``(first, last)`` window or ``None``; ``fields``: the fields to keep or ``None``)."""
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.data import from_stores, from_synthetic_folder

    kind = _kind(path, option)
    if kind == "synthetic":
        if std is not None:
            raise UserInputError(
                f"{option}-std is for member stores; {path} is a synthetic EDA whose s_N is known (drop {option}-std)"
            )
        _check_synthetic_members(path, m, option)
        stats = from_synthetic_folder(path, m, _synthetic_dates(path, dates), on_members=on_members)
        return _select(stats, fields, path)
    if std is not None:
        _kind(std, f"{option}-std")
    return from_stores(path, std, m, on_members=on_members, dates=dates, fields=fields)


def _shifted_statistics(path: Path, shift, m: int, on_members=None, dates=None, fields=None):
    """The statistics of the synthetic EDA ``path`` regenerated with the physics of ``shift`` (in memory)."""
    from hybrid_eda.evaluation.data import config_from_manifest, from_synthetic
    from hybrid_eda.evaluation.degradation import shifted_config

    config = shifted_config(config_from_manifest(json.loads((path / "manifest.json").read_text())), shift)
    stats = from_synthetic(config, m, _synthetic_dates(path, dates), on_members=on_members)
    return _select(stats, fields, path), config


def _same_fields(train, test):
    """``test`` with its fields in ``train``'s order (stores list them alphabetically, the generator by variable)."""
    from hybrid_eda.errors import UserInputError

    if train.variables == test.variables:
        return test
    if set(train.variables) != set(test.variables):
        only_train = sorted(set(train.variables) - set(test.variables))[:5]
        only_test = sorted(set(test.variables) - set(train.variables))[:5]
        raise UserInputError(
            f"--train and --test hold different fields (only in train: {', '.join(only_train) or '-'}; only in "
            f"test: {', '.join(only_test) or '-'}); evaluate on data with the training fields"
        )
    return test.select_fields(train.variables)


# --------------------------------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def default_map_field(variables: tuple[str, ...], groups: tuple[int, ...]) -> str:
    """Temperature at the middle level group when there is one, the first field otherwise."""
    temperature = [(g, v) for v, g in zip(variables, groups, strict=True) if v.rsplit("_", 1)[0] == "t"]
    if temperature:
        return sorted(temperature)[len(temperature) // 2][1]
    return variables[0]


def best_prediction(nmse: dict[str, float | None]) -> str:
    """The emulator when present, else the member-only estimator of lowest normalised MSE."""
    if nmse.get("emulator") is not None:
        return "emulator"
    candidates = {k: v for k, v in nmse.items() if v is not None and k not in TRUTH_AWARE}
    return min(candidates, key=candidates.get)


def write_maps(evaluation, path: Path, field: str, name: str, date_index: int = 0) -> Path:
    """``s_M``, the prediction ``name`` and ``s_N`` of ``field`` on one test date, side by side (lat/lon scatter)."""
    import numpy as np

    plt = _pyplot()
    test = evaluation.test
    f = test.variables.index(field)
    panels = [
        ("s_M", test.s_m[date_index, :, f]),
        (name, evaluation.predictions[name].point[date_index, :, f]),
        ("s_N", test.s_n[date_index, :, f]),
    ]
    if test.sigma_b is not None:
        panels.append(("sigma_b", test.sigma_b[date_index, :, f]))
    target = test.s_n[date_index, :, f]
    vmin, vmax = np.percentile(target, [1, 99])
    size = max(1.0, 40_000.0 / target.size)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 2.9), sharey=True, constrained_layout=True)
    for ax, (title, values) in zip(axes, panels, strict=True):
        image = ax.scatter(
            np.mod(test.longitudes + 180.0, 360.0) - 180.0, test.latitudes, c=values, s=size, vmin=vmin, vmax=vmax,
            cmap="viridis", linewidths=0, rasterized=True,
        )  # fmt: skip
        ax.set_title(title)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.set_xlabel("longitude")
    axes[0].set_ylabel("latitude")
    date = test.dates[date_index].isoformat() if test.dates else f"date {date_index}"
    fig.colorbar(image, ax=axes, shrink=0.9, label=f"std of {field}")
    fig.suptitle(f"{field}, {date}: M = {test.m} seen members, N = {test.n}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_pit(summary: dict, path: Path) -> Path:
    """PIT histograms (overall and on sharp features) of every estimator with a predictive distribution."""
    import numpy as np

    plt = _pyplot()
    pits = {name: value for name, value in summary.get("pit", {}).items() if value}
    fig, axes = plt.subplots(1, max(1, len(pits)), figsize=(4.0 * max(1, len(pits)), 3.0), squeeze=False)
    for ax, (name, value) in zip(axes[0], pits.items(), strict=False):
        density = np.asarray(value["pit"], dtype=float)
        edges = np.linspace(0.0, 1.0, density.size + 1)
        ax.bar(edges[:-1], density, width=np.diff(edges), align="edge", color="tab:blue", alpha=0.7, label="all")
        if value.get("pit_sharp"):
            sharp = np.asarray(value["pit_sharp"], dtype=float)
            ax.step(edges, np.append(sharp, sharp[-1]), where="post", color="tab:red", label="sharp features")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_title(name)
        ax.set_xlabel("PIT of s_N")
        ax.legend(fontsize=7)
    if not pits:
        axes[0][0].text(0.5, 0.5, "no probabilistic estimator", ha="center", va="center")
    axes[0][0].set_ylabel("density")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------- run
def _table(summary: dict) -> str:
    rows = [f"{'estimator':<18} {'nMSE':>8} {'gap closed':>11} {'vs filter':>10} {'cov90':>6} {'cov90 sharp':>12}"]
    for name, value in summary["nmse"].items():
        if value is None:
            rows.append(f"{name:<18} {'-':>8}")
            continue
        gap = summary["gap_closed"].get(name)
        better = summary["improvement_over_filter"].get(name)
        coverage = summary["coverage_90"].get(name) or {}
        cells = [
            f"{gap:11.1%}" if gap is not None else f"{'-':>11}",
            f"{better:10.1%}" if better is not None else f"{'-':>10}",
            f"{coverage['overall']:6.3f}" if coverage.get("overall") is not None else f"{'':>6}",
            f"{coverage['sharp']:12.3f}" if coverage.get("sharp") is not None else f"{'':>12}",
        ]
        rows.append(f"{name:<18} {value:8.4f} " + " ".join(cells))
    return "\n".join(rows)


def _set_names(tests: list[Path], shifts) -> list[str]:
    """Unique names of the test sets: the folders' (stores without ``.zarr``), then the shifts'."""
    from hybrid_eda.errors import UserInputError

    names: list[str] = []
    for path in tests:
        name = path.stem if path.suffix == ".zarr" else path.name
        name = name or "test"
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    for shift in shifts:
        if shift.name in names:
            raise UserInputError(
                f"--shift {shift.name}: that name is already a test set ({', '.join(names)}); name it differently"
            )
        names.append(shift.name)
    return names


def _check_shifts(path: Path, shifts) -> None:
    """Refuse bad shifts before any work: a store as the reference, unknown keys, invalid values."""
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.data import config_from_manifest
    from hybrid_eda.evaluation.degradation import shifted_config

    if not shifts:
        return
    if _kind(path, "--test") != "synthetic":
        raise UserInputError(
            f"--shift regenerates the first --test as a synthetic EDA with other physics, and {path} is a store; "
            "give a synthetic EDA folder first (stores of other periods compare as further --test paths)"
        )
    config = config_from_manifest(json.loads((path / "manifest.json").read_text()))
    for shift in shifts:
        shifted_config(config, shift)


def run_variance(args: argparse.Namespace) -> int:
    """The ``evaluate variance`` command (module docstring); returns 0."""
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.degradation import degradation, degradation_table, parse_shift
    from hybrid_eda.evaluation.emulator import EmulatorRun, load_emulator_predictor
    from hybrid_eda.evaluation.suite import default_estimators, evaluate_baselines_on

    started = time.perf_counter()
    m = int(args.members)
    if m < 2:
        raise UserInputError(f"--members {m} gives no sample std; use --members 2 or more (e.g. 5)")
    if args.max_iter < 1 or args.max_rows < 100:
        raise UserInputError("--max-iter must be >= 1 and --max-rows >= 100; e.g. --max-iter 200 --max-rows 200000")
    tests = list(args.test)
    stds = list(args.test_std) if args.test_std else [None] * len(tests)
    if len(stds) != len(tests):
        raise UserInputError(
            f"{len(stds)} --test-std for {len(tests)} --test paths; give one std store per --test member store, in "
            "the same order"
        )
    for path in tests:
        if path.suffix == ".ckpt":
            raise UserInputError(
                f"--test {path} is a checkpoint (--test takes several paths, so it took this one too); give the "
                "checkpoint first: hybrid-eda evaluate variance CHECKPOINT --train ... --test ..."
            )
    shifts = [parse_shift(text) for text in args.shift]
    checkpoints = {"emulator": args.checkpoint, "emulator_no_mp": args.no_mp_checkpoint}
    if args.baselines_only or args.checkpoint is None:
        reason = "--baselines-only" if args.baselines_only else "no CHECKPOINT given"
        print(f"{reason}: evaluating the baselines only (emulator and emulator_no_mp stay null)")
        checkpoints = {}
    checkpoints = {name: path for name, path in checkpoints.items() if path is not None}
    predictors = {name: load_emulator_predictor(path) for name, path in checkpoints.items()}
    # the training data first: a bad --test is reported after it, but before any fitting
    for option, path in (("--train", args.train), *(("--test", path) for path in tests)):
        _kind(path, option)
    _check_shifts(tests[0], shifts)
    names = _set_names(tests, shifts)
    train = load_statistics(args.train, args.train_std, m, "--train", dates=args.train_dates, fields=args.fields)

    def load(path: Path, std: Path | None, shift=None):
        runs = [EmulatorRun(name, predictor) for name, predictor in predictors.items()]

        def on_members(members, variables):
            for emulator in runs:
                emulator(members, variables)

        hook = on_members if runs else None
        if shift is None:
            stats = load_statistics(path, std, m, "--test", on_members=hook, dates=args.test_dates, fields=args.fields)
            seed = None
            source = {"source": str(path), "std": None if std is None else str(std), "kind": _kind(path, "--test"),
                      "overrides": [], "seed": _seed(path)}  # fmt: skip
        else:
            stats, config = _shifted_statistics(path, shift, m, hook, args.test_dates, args.fields)
            seed = config.seed
            source = {"source": str(path), "std": None, "kind": "synthetic", "overrides": list(shift.overrides),
                      "seed": seed}  # fmt: skip
        stats = _same_fields(train, stats)
        if _overlaps(args.train, path, train, stats, seed):
            LOGGER.warning("--train and test set %s share dates (and seed): it is not held out", path)
        return stats, runs, source

    loaded = [load(path, std) for path, std in zip(tests, stds, strict=True)]
    loaded += [load(tests[0], None, shift) for shift in shifts]
    estimators = default_estimators(
        with_truth=any(stats.has_truth for stats, _, _ in loaded), pooled=not args.no_pooled,
        max_iter=args.max_iter, max_rows=args.max_rows,
    )  # fmt: skip
    evaluations = evaluate_baselines_on(train, [stats for stats, _, _ in loaded], estimators)
    for evaluation, (_, runs, _) in zip(evaluations, loaded, strict=True):
        for emulator in runs:
            evaluation.add(emulator.name, emulator.prediction(evaluation.test.variables))
    summaries = [evaluation.summary() for evaluation in evaluations]
    evaluation, summary, test = evaluations[0], summaries[0], evaluations[0].test
    field = args.field or default_map_field(test.variables, test.groups)
    if field not in test.variables:
        raise UserInputError(f"--field {field} is not a field of the test data; use one of {', '.join(test.variables)}")
    best = best_prediction(summary["nmse"])
    summary["source"] = {
        "train": str(args.train), "test": str(tests[0]),
        "train_std": None if args.train_std is None else str(args.train_std),
        "test_std": None if stds[0] is None else str(stds[0]),
        "train_dates": None if args.train_dates is None else [d.isoformat() for d in args.train_dates],
        "test_dates": None if args.test_dates is None else [d.isoformat() for d in args.test_dates],
        "fields": args.fields,
        "kind": _kind(tests[0], "--test"), "floor": test.has_truth,
        "checkpoints": {name: str(path) for name, path in checkpoints.items()},
        "baselines_only": not predictors,
    }  # fmt: skip
    summary["maps"] = {"field": field, "prediction": best, "date": test.dates[0].isoformat() if test.dates else None}
    args.out.mkdir(parents=True, exist_ok=True)
    write_maps(evaluation, args.out / "maps.png", field, best)
    write_pit(summary, args.out / "pit.png")
    if len(summaries) > 1:
        sources = {name: source for name, (_, _, source) in zip(names, loaded, strict=True)}
        summary["degradation"] = degradation(dict(zip(names, summaries, strict=True)), names[0], sources)
        (args.out / "sets").mkdir(exist_ok=True)
        for name, other in zip(names[1:], summaries[1:], strict=True):
            other["source"] = {**summary["source"], **sources[name]}
            (args.out / "sets" / f"{name}.json").write_text(json.dumps(other, indent=1, allow_nan=False))
    summary["timings_s"]["total"] = round(time.perf_counter() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    print(_table(summary))
    if "degradation" in summary:
        print(f"\ndegradation on {len(summaries) - 1} other test set(s) ({', '.join(names[1:])}):")
        print(degradation_table(summary["degradation"]))
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'maps.png'}, {args.out / 'pit.png'}")
    return 0
