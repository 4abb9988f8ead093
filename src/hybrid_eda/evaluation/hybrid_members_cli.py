"""``hybrid-eda evaluate members``: the global hybrid EDA (N_s real + N - N_s generated members) against the truth.

    hybrid-eda synthetic --grid O32 --levels 5 --members 50 --seed 2 --end 2023-03-03T18 --out test-eda
    hybrid-eda evaluate members --test test-eda --real 14 --out eval        # untrained flow + Gaussian resampling
    hybrid-eda evaluate members CKPT --test test-eda --real 14 --out eval   # + the trained member generator
    hybrid-eda evaluate members CKPT --test train-eda --dates 44 45 --spread 0.9 t=0.9,q=0.85 --baselines  # tuning
    hybrid-eda evaluate members --test test-eda --real 14 --local-enkf 1000,1500 --out eval  # + localised EnKF rows

Writes ``summary.json`` (:meth:`~hybrid_eda.evaluation.hybrid_members.HybridEvaluation.summary`), ``maps.png`` (the
std of the N_s real members, of each hybrid and of the full EDA, one field on the first date) and prints the table:
fair CRPS and spread/skill as ratios to the full EDA's (field means), the normalised MSE of the ensemble std
against the full EDA's std, and how much of the N_s-member std's MSE the hybrid removes; then the same ratios and
cut per variable, its levels together (``by_variable`` of each ensemble in the summary). ``--local-enkf`` adds one
row per half-width of the localised EnKF baseline (:mod:`hybrid_eda.evaluation.local_enkf`; it reads the test
folder's observations).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from hybrid_eda.outputs import output_dir

__all__ = ["add_parser", "run_members", "table", "variable_table", "write_std_maps"]

LOGGER = logging.getLogger(__name__)

#: Sources without a checkpoint (``--baselines``).
BASELINES = ("untrained", "gaussian", "more-real")
UNTRAINED_LABEL = "from the untrained flow (shift + rescale)"


def add_parser(what: argparse._SubParsersAction) -> None:
    """Register ``members`` on the ``hybrid-eda evaluate`` sub-command parser ``what``."""
    parser = what.add_parser(
        "members",
        help="the hybrid EDA: N_s real + generated members against the full EDA and the truth (member generator)",
        description="Score, against the truth of a synthetic EDA, the full N-member EDA, its first N_s members alone "
        "and hybrids of the N_s real members plus N - N_s generated ones (from CHECKPOINT, the untrained flow and "
        "Gaussian resampling): fair CRPS, spread/skill, and the MSE of the ensemble std against the full EDA's std. "
        "Generators see all backgrounds and the N_s real analyses only.",
    )
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None,
                        help="member generator checkpoint (omit: the baselines only)")  # fmt: skip
    parser.add_argument("--test", type=Path, required=True,
                        help="held-out synthetic EDA folder (backgrounds, analyses, truth)")  # fmt: skip
    parser.add_argument("--real", type=int, default=14, help="real members N_s, the first N_s (default 14)")
    parser.add_argument("--dates", type=int, nargs="+", default=None, metavar="INDEX",
                        help="date indices of the EDA to score (default all)")  # fmt: skip
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES,
                        help="sources besides CHECKPOINT (default: all; none: --baselines alone)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated members' noise (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="integration steps of the generators (default theirs)")
    parser.add_argument("--spread", nargs="+", default=[], metavar="SPEC",
                        help="also score CHECKPOINT's members with their anomalies rescaled, one row per SPEC: A "
                        "(every variable) or VAR=A pairs, e.g. 0.9 t=0.9,q=0.85 (same draws; tune on other dates "
                        "than the test's; hybrid_eda.evaluation.hybrid_spread)")  # fmt: skip
    parser.add_argument("--local-enkf", default=None, metavar="KM[,KM...]",
                        help="also score the localised EnKF of all backgrounds and the observations (knows the form "
                        "of the analysis: a baseline, not a generator), one row per Gaspari-Cohn half-width in km, "
                        "e.g. 1000,1500 (needs the test folder's truth/obs_*.npz)")  # fmt: skip
    parser.add_argument("--field", default=None, help="field of the maps, e.g. t_3 (default: t at a middle level)")
    parser.add_argument("--out", type=output_dir, default=Path("members-evaluation"),
                        help="output folder (default members-evaluation)")  # fmt: skip
    parser.set_defaults(func=run_members)


def _load_generator(checkpoint: Path):
    """The trained generator of ``checkpoint`` (``hybrid_eda.models.load_member_generator``)."""
    from hybrid_eda.errors import UserInputError

    try:
        from hybrid_eda.models import load_member_generator
    except ImportError as err:
        raise UserInputError(
            f"this version has no loader of member generator checkpoints ({err}); evaluate the baselines without "
            "CHECKPOINT"
        ) from err
    return load_member_generator(checkpoint)


def write_std_maps(evaluation, path: Path, field: str, names: list[str], longitudes, latitudes) -> Path:
    """The ensemble std of ``field`` on the first date for the ensembles ``names``, side by side (lat/lon scatter)."""
    import numpy as np

    from hybrid_eda.evaluation.cli import _pyplot

    plt = _pyplot()
    f = evaluation.variables.index(field)
    target = evaluation.maps["full"][:, f]
    vmin, vmax = np.percentile(target, [1, 99])
    size = max(1.0, 80_000.0 / target.size)  # O32: markers that close the gaps between points
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.1), sharey=True, constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=True):
        image = ax.scatter(
            np.mod(np.asarray(longitudes) + 180.0, 360.0) - 180.0, latitudes, c=evaluation.maps[name][:, f], s=size,
            vmin=vmin, vmax=vmax, cmap="viridis", linewidths=0, rasterized=True,
        )  # fmt: skip
        ax.set_title(evaluation.labels.get(name, name), fontsize=8)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.set_xlabel("longitude")
    axes[0].set_ylabel("latitude")
    fig.colorbar(image, ax=list(axes), shrink=0.9, label=f"analysis ensemble std of {field}")
    fig.suptitle(f"{field}, {evaluation.dates[0].isoformat()}: N_s = {evaluation.n_real} real members, N = "
                 f"{evaluation.n}")  # fmt: skip
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(summary: dict) -> str:
    """The summary as a text table (one row per ensemble)."""
    columns = ("fCRPS/full", "eCRPS/full", "ss/full", "reliab.", "std nMSE", "std MSE cut")
    width = max(20, *map(len, summary["ensembles"]))
    rows = [f"{'ensemble':<{width}} " + " ".join(f"{c:>11}" for c in columns)]
    for name, row in summary["ensembles"].items():
        cut = "" if name == "full" else f"{row['std_mse_reduction']:.1%}"
        values = [row[k] for k in ("crps_ratio", "crps_ens_ratio", "spread_skill_ratio", "reliability", "std_nmse")]
        rows.append(f"{name:<{width}} " + " ".join(f"{v:>11.4f}" for v in values) + f" {cut:>11}")
    return "\n".join(rows)


def variable_table(summary: dict) -> str:
    """Per variable (levels together), per ensemble but the full EDA: the ratios to the full EDA and the std MSE cut."""
    columns = ("fCRPS/full", "eCRPS/full", "ss/full", "std MSE cut")
    ensembles = {name: row for name, row in summary["ensembles"].items() if name != "full"}
    width = max(20, *map(len, ensembles))
    rows = [f"{'variable':<10} {'ensemble':<{width}} " + " ".join(f"{c:>11}" for c in columns)]
    for variable in next(iter(ensembles.values()))["by_variable"]:
        for name, row in ensembles.items():
            v = row["by_variable"][variable]
            cut = "" if name == "real" else f"{v['std_mse_reduction']:.1%}"
            values = [v[k] for k in ("crps_ratio", "crps_ens_ratio", "spread_skill_ratio")]
            rows.append(f"{variable:<10} {name:<{width}} " + " ".join(f"{x:>11.4f}" for x in values) + f" {cut:>11}")
    return "\n".join(rows)


def run_members(args: argparse.Namespace) -> int:
    """The ``evaluate members`` command (module docstring); returns 0."""
    from hybrid_eda.errors import UserInputError
    from hybrid_eda.evaluation.cli import default_map_field
    from hybrid_eda.evaluation.hybrid_members import (
        EmulatorSource,
        ModelSource,
        MoreRealMembers,
        absent_observation_files,
        evaluate_hybrid,
        read_cases,
    )
    from hybrid_eda.evaluation.hybrid_members import untrained_flow as make_untrained
    from hybrid_eda.evaluation.hybrid_spread import RescaledSpread, parse_spread
    from hybrid_eda.evaluation.local_enkf import LocalEnKFSource, parse_radii

    started = time.perf_counter()
    if args.real < 2:
        raise UserInputError(f"--real {args.real}: the generators need N_s >= 2 real analyses (e.g. --real 14)")
    if args.steps is not None and args.steps < 1:
        raise UserInputError(f"--steps must be >= 1, got {args.steps}")
    radii = [] if args.local_enkf is None else parse_radii(args.local_enkf)
    if args.checkpoint is None and not args.baselines and not radii:
        raise UserInputError("nothing to evaluate: give CHECKPOINT, keep --baselines or add --local-enkf KM")
    if args.spread and args.checkpoint is None:
        raise UserInputError("--spread rescales the members of CHECKPOINT; give a checkpoint")
    rescaled = [parse_spread(spec) for spec in args.spread]
    _, info = read_cases(args.test, args.dates)
    if not 2 <= args.real < info["members"]:
        raise UserInputError(f"--real {args.real} of the {info['members']} members of {args.test}: need 2 <= N_s < N")
    if radii:
        dates = info["dates"] if args.dates is None else [info["dates"][i] for i in args.dates]
        absent = absent_observation_files(args.test, dates)
        if absent:
            raise UserInputError(
                f"--local-enkf updates the backgrounds with each date's observations but {args.test} has no "
                f"observation file {absent[0]} ({len(absent)} of {len(dates)} dates): give a synthetic EDA folder "
                "written by `hybrid-eda synthetic` (it writes truth/obs_*.npz)"
            )
    extra = info["members"] - args.real if "more-real" in args.baselines else 0
    sources = []
    if args.checkpoint is not None:
        sources.append(ModelSource(_load_generator(args.checkpoint), "trained", "from the member generator",
                                   steps=args.steps))  # fmt: skip
        sources.extend(RescaledSpread(sources[0], factors) for factors in rescaled)
    # read the test EDA's observations if the generator or the local EnKF wants them
    observations = (bool(sources) and sources[0].uses_observations) or bool(radii)
    cases, _ = read_cases(args.test, args.dates, extra_members=extra, observations=observations)
    cases = iter(cases)
    first = next(cases)
    if "untrained" in args.baselines:
        core = make_untrained(info["grid"], first.backgrounds, steps=args.steps)
        sources.append(ModelSource(core, "untrained", UNTRAINED_LABEL))
    if "gaussian" in args.baselines:
        sources.append(EmulatorSource("gaussian", "from Gaussian resampling (pointwise)"))
    if "more-real" in args.baselines:
        sources.append(MoreRealMembers())
    sources.extend(LocalEnKFSource.from_grid(info["grid"], km) for km in radii)

    def all_cases():
        yield first
        yield from cases

    field = args.field or default_map_field(first.variables, tuple(int(v.rsplit("_", 1)[1]) for v in first.variables))
    if field not in first.variables:
        raise UserInputError(f"--field {field} is not a field of {args.test}; use one of {', '.join(first.variables)}")
    evaluation = evaluate_hybrid(all_cases(), sources, args.real, info["grid"].area_weights, seed=args.seed)
    summary = evaluation.summary()
    summary["source"] = {"test": str(args.test), "seed": info["seed"], "grid": info["grid"].name,
                         "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
                         "observations": observations,
                         "noise_seed": args.seed, "steps": args.steps, "spread": args.spread,
                         "local_enkf_km": radii,
                         "dates": args.dates}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    spread_rows = [s for s in sources if isinstance(s, RescaledSpread)]
    enkf_rows = [s for s in sources if isinstance(s, LocalEnKFSource)]
    mapped = [s for s in sources if not isinstance(s, RescaledSpread | LocalEnKFSource)]
    mapped += spread_rows[:1] + enkf_rows[:1]  # of those the first only
    names = ["real", *(f"hybrid:{s.name}" for s in mapped), "full"]
    write_std_maps(evaluation, args.out / "maps.png", field, names, info["grid"].longitudes, info["grid"].latitudes)
    summary["maps"] = {"field": field, "date": evaluation.dates[0].isoformat(), "ensembles": names}
    summary["timings_s"]["total"] = round(time.perf_counter() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    print(table(summary))
    print(variable_table(summary))
    for name, checks in summary["targets"].items():
        print(f"{name}: " + ", ".join(f"{key} {'yes' if ok else 'no'}" for key, ok in checks.items()))
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'maps.png'}")
    return 0
