"""JSON summaries, text tables and PNG plots of Lorenz-96 experiments.

Every experiment writes a JSON summary (scores, spin-up, settings, timings, versions); plots use matplotlib's
Agg backend (no display needed) and are written only when asked for.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from hybrid_eda.l96.experiment import ExperimentResult
    from hybrid_eda.l96.hybrid import HybridResult, TableRow

__all__ = [
    "SCORE_KEYS",
    "run_summary",
    "hybrid_summary",
    "table_summary",
    "format_run",
    "format_table",
    "format_hybrid",
    "write_json",
    "versions",
    "plot_run",
    "plot_hybrid",
    "plot_table",
]

LOGGER = logging.getLogger(__name__)

#: Time-mean scores reported for every run (batch means at the top level of the JSON).
SCORE_KEYS = (
    "analysis_rmse",
    "analysis_spread",
    "background_rmse",
    "background_spread",
    "spread_rmse_ratio",
    "background_spread_rmse_ratio",
    "crps",
    "background_crps",
)


def versions() -> dict[str, str]:
    """Versions of the software and the machine that produced a result."""
    import numba
    import scipy

    from hybrid_eda import __version__

    threads = {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS") if k in os.environ}
    return {
        "hybrid_eda": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        **threads,
    }


def run_summary(result: ExperimentResult) -> dict[str, Any]:
    """The JSON summary of one run (batch means at the top, per-experiment scores under ``experiments``).

    A batch of B experiments is B seeds (``seed .. seed + B - 1``): the batch mean of a marginal setting is
    misleading when one seed lost track, so the summary also gives the distribution over seeds of the analysis
    RMSE: ``analysis_rmse_median``, ``analysis_rmse_band`` (10th-90th percentile), ``lost_track_fraction``
    (time-mean analysis RMSE above ``lost_track_rmse``, :data:`hybrid_eda.l96.metrics.LOST_TRACK_RMSE`).
    ``diverged`` is ``True`` when the median lost track (a legitimate result for too small an ensemble, not an
    error). ``expected_analysis_rmse`` is the preset's median for this setting, ``expected_band`` its band.
    """
    from hybrid_eda.l96.metrics import LOST_TRACK_RMSE

    config, out = result.config, result.output
    exps = out.experiments
    dist = result.seed_distribution()
    summary: dict[str, Any] = {key: float(np.mean([e[key] for e in exps])) for key in SCORE_KEYS}
    summary["rank_histogram"] = np.sum([e["rank_histogram"] for e in exps], axis=0).astype(int).tolist()
    summary["background_rank_histogram"] = (
        np.sum([e["background_rank_histogram"] for e in exps], axis=0).astype(int).tolist()
    )
    expected = config.expected()
    members = len(summary["rank_histogram"]) - 1
    summary.update(
        {
            "method": config.method,
            "members": members,
            "inflation": config.inflation,
            "emulator": config.emulator,
            "n_real": config.n_real,
            "cycles": config.cycles,
            "spinup": config.spinup,
            "scored_cycles": config.cycles - config.spinup,
            "batch": config.batch,
            "seed": config.seed,
            "wall_seconds": out.wall_seconds,
            "setup_seconds": out.setup_seconds,
            "cycles_per_second": result.cycles_per_second,
            "experiment_cycles_per_second": result.cycles_per_second * config.batch,
            "expected_analysis_rmse": None if expected is None else expected.analysis_rmse,
            "expected_source": None if expected is None else expected.source,
            "expected_band": None if expected is None or expected.band is None else list(expected.band),
            "expected_lost_track": None if expected is None else expected.lost_track,
            "analysis_rmse_median": dist.median,
            "analysis_rmse_band": [dist.low, dist.high],
            "lost_track_fraction": dist.lost_fraction,
            "lost_track_rmse": LOST_TRACK_RMSE,
            "diverged": bool(dist.median > LOST_TRACK_RMSE),
            "analysis_rmse_std_over_batch": float(np.std([e["analysis_rmse"] for e in exps])),
        }
    )
    if config.batch > 1:
        summary["experiments"] = [{k: e[k] for k in (*SCORE_KEYS, "rank_histogram")} for e in exps]
    summary["settings"] = config.to_dict() | {"method_object": result.method, "members_cycled": members}
    summary["versions"] = versions()
    return summary


def _timing(out: Any) -> dict[str, Any]:
    return {
        "analysis_seconds": out.analysis_seconds,
        "emulation_seconds": out.emulation_seconds,
        "analyses_per_cycle": out.analyses_per_cycle,
    }


def hybrid_summary(result: HybridResult) -> dict[str, Any]:
    """JSON of a hybrid experiment over a batch of seeds.

    ``full`` and ``hybrid`` are :func:`run_summary` entries, each with its ``distribution`` over seeds (median,
    10-90% band, fraction lost) and its timing; ``timing`` compares the analysis time of the full EDA's N
    analyses (for 4D-Var: minimisations) with the hybrid's N_s.
    """
    from hybrid_eda.l96.emulators import BOUNDS, get_member_source

    full, hybrid = run_summary(result.full), run_summary(result.hybrid)
    for entry, res in ((full, result.full), (hybrid, result.hybrid)):
        entry["distribution"] = res.seed_distribution().to_dict()
        entry["timing"] = _timing(res.output)
    d_full, d_hybrid = full["distribution"], hybrid["distribution"]
    t_full, t_hybrid = result.full.output.analysis_seconds, result.hybrid.output.analysis_seconds
    emulator = result.hybrid.config.emulator
    return {
        "emulator": emulator,
        "kind": "upper bound" if emulator in BOUNDS else get_member_source(emulator).label,
        "n_real": result.hybrid.config.n_real,
        "members": result.full.config.members,
        "seeds": list(range(result.full.config.seed, result.full.config.seed + result.full.config.batch)),
        "median_analysis_rmse_ratio": d_hybrid["median"] / d_full["median"],
        "analysis_rmse_ratio": hybrid["analysis_rmse"] / full["analysis_rmse"],
        "timing": {
            "full_analysis_seconds": t_full,
            "hybrid_analysis_seconds": t_hybrid,
            "hybrid_emulation_seconds": result.hybrid.output.emulation_seconds,
            "full_analyses_per_cycle": result.full.output.analyses_per_cycle,
            "hybrid_analyses_per_cycle": result.hybrid.output.analyses_per_cycle,
            "analysis_time_ratio": t_hybrid / t_full if t_full > 0 else None,
        },
        "full": full,
        "hybrid": hybrid,
        "versions": full["versions"],
    }


def format_hybrid(summary: dict[str, Any]) -> str:
    """The hybrid experiment for the terminal: both distributions over seeds and the analysis timings."""
    t = summary["timing"]
    seeds = summary["seeds"]
    lines = [
        f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}), analysis RMSE median [10%, 90%] and seeds that lost track "
        f"(RMSE > {summary['full']['distribution']['lost_track_rmse']:g}):"
    ]
    for name in ("full", "hybrid"):
        d = summary[name]["distribution"]
        label = "full EDA" if name == "full" else f"{summary['emulator']} ({summary['kind']})"
        lines.append(
            f"  {label:<28} {_num(d['median'])} [{_num(d['low'])}, {_num(d['high'])}], lost {d['lost_fraction']:.0%}"
        )
    ratio = t["analysis_time_ratio"]
    lines.append(
        f"  analysis time: full {t['full_analyses_per_cycle']} analyses/cycle {t['full_analysis_seconds']:.2f} s, "
        f"hybrid {t['hybrid_analyses_per_cycle']} analyses/cycle {t['hybrid_analysis_seconds']:.2f} s"
        + ("" if ratio is None else f" ({ratio:.2f} of the full)")
        + f", emulation {t['hybrid_emulation_seconds']:.2f} s"
    )
    return "\n".join(lines)


def _num(x: float | None) -> str:
    """A score for a table cell: ``inf`` (blew up) as ``inf``."""
    return "inf" if x is None or not np.isfinite(x) else f"{x:.3f}"


def table_summary(rows: Sequence[TableRow]) -> dict[str, Any]:
    """JSON of the table: per row its kind, best inflation, distribution over seeds and every inflation tried."""
    entries = []
    grid: list[float] = sorted({k for row in rows for k in (*row.by_inflation, *row.errors)})
    for row in rows:
        best = None if row.best is None else run_summary(row.best)
        dist = row.distribution
        entries.append(
            {
                "emulator": row.emulator,
                "kind": row.kind,
                "best_inflation": row.best_inflation,
                "median_analysis_rmse": None if dist is None else dist.median,
                "band": None if dist is None else [dist.low, dist.high],
                "lost_fraction": None if dist is None else dist.lost_fraction,
                "analysis_rmse": None if best is None else best["analysis_rmse"],
                "analysis_seconds": None if row.best is None else row.best.output.analysis_seconds,
                "by_inflation": {f"{k:g}": v.to_dict() for k, v in row.by_inflation.items()},
                "errors": {f"{k:g}": v for k, v in row.errors.items()},
                "best": best,
            }
        )
    seeds = rows[0].best.config.batch if rows and rows[0].best is not None else None
    return {
        "inflation_grid": grid,
        "seeds": seeds,
        "lost_track_rmse": _lost_track_rmse(),
        "band_percentiles": [10, 90],
        "rows": entries,
        "versions": versions(),
    }


def _lost_track_rmse() -> float:
    from hybrid_eda.l96.metrics import LOST_TRACK_RMSE

    return LOST_TRACK_RMSE


def format_run(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    expected = summary.get("expected_analysis_rmse")
    band = summary.get("expected_band")
    if expected is not None:
        expected_text = (
            f"expected ~{expected:g}" if band is None else f"expected median {expected:g} [{band[0]:g}, {band[1]:g}]"
        )
    lines = [
        f"{summary['method']} N={summary['members']} inflation={summary['inflation']:g}"
        + (f" emulator={summary['emulator']} N_s={summary['n_real']}" if summary.get("emulator") else "")
        + f": {summary['cycles']} cycles ({summary['spinup']} spin-up), batch {summary['batch']}",
        f"  analysis RMSE {summary['analysis_rmse']:.4f}"
        + (f" ({expected_text})" if expected is not None else "")
        + f", spread {summary['analysis_spread']:.4f}, background RMSE {summary['background_rmse']:.4f}, "
        f"CRPS {summary['crps']:.4f}",
        f"  {summary['wall_seconds']:.2f} s, {summary['cycles_per_second']:.0f} cycles/s"
        + (" - the filter lost track (median RMSE above the lost-track threshold)" if summary["diverged"] else ""),
    ]
    if summary["batch"] > 1:
        low, high = summary["analysis_rmse_band"]
        lines.append(
            f"  over {summary['batch']} seeds ({summary['seed']}-{summary['seed'] + summary['batch'] - 1}): median "
            f"{_num(summary['analysis_rmse_median'])} [10%: {_num(low)}, 90%: {_num(high)}], "
            f"lost track (RMSE > {summary['lost_track_rmse']:g}) {summary['lost_track_fraction']:.0%}"
        )
        lines.append(
            "  per experiment: " + ", ".join(f"{e['analysis_rmse']:.3f}" for e in summary.get("experiments", []))
        )
    return "\n".join(lines)


def format_table(table: dict[str, Any]) -> str:
    """The table as aligned text: one row per configuration at its best inflation, distribution over seeds."""
    width = max([20, *(len(row["emulator"]) for row in table["rows"])])  # spec names carry parameters
    header = (
        f"{'configuration':<{width}} {'kind':<16} {'inflation':>9} {'median':>7} {'10%':>7} {'90%':>7} {'lost':>6} "
        f"{'an. s':>7}"
    )
    lines = [
        f"analysis RMSE over {table.get('seeds')} seeds, best inflation (fewest lost, then lowest median) of "
        f"{', '.join(f'{g:g}' for g in table['inflation_grid'])}; lost = RMSE > {table['lost_track_rmse']:g} "
        "or blown up",
        header,
        "-" * len(header),
    ]
    for row in table["rows"]:
        if row["best_inflation"] is None:
            lines.append(
                f"{row['emulator']:<{width}} {row['kind']:<16} {'-':>9} {'failed at every inflation tried':>40}"
            )
            continue
        low, high = row["band"]
        lines.append(
            f"{row['emulator']:<{width}} {row['kind']:<16} {row['best_inflation']:>9g} "
            f"{_num(row['median_analysis_rmse']):>7} {_num(low):>7} {_num(high):>7} "
            f"{row['lost_fraction']:>6.0%} {row['analysis_seconds']:>7.1f}"
        )
    return "\n".join(lines)


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write ``data`` as indented JSON (non-finite floats as ``null``), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2) + "\n")
    return path


def _finite(obj: Any) -> Any:
    """Replace NaN/inf by None so the file is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ------------------------------------------------------------------------------------------------------------
# plots


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only, works without a display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Running mean over ``width`` cycles (same length, shorter windows at the start)."""
    if width <= 1 or x.size < width:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    out = np.empty_like(x)
    out[width - 1 :] = (c[width:] - c[:-width]) / width
    out[: width - 1] = c[1:width] / np.arange(1, width)
    return out


def _series_axes(ax, result: ExperimentResult, label: str = "", colour: str | None = None) -> None:
    series, config = result.output.series, result.config
    t = np.arange(config.cycles)
    width = max(1, config.cycles // 200)
    rmse = series["analysis_rmse"].mean(axis=1)
    spread = series["analysis_spread"].mean(axis=1)
    ax.plot(t, _smooth(rmse, width), color=colour or "C0", label=f"{label}analysis RMSE")
    ax.plot(t, _smooth(spread, width), color=colour or "C1", ls="--", label=f"{label}analysis spread")
    ax.axvspan(0, config.spinup, color="0.9", zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel("cycle" + (f" (running mean over {width})" if width > 1 else ""))
    ax.set_ylabel("RMSE / spread")


def _rank_axes(ax, histogram: Sequence[int], title: str, colour: str = "C0") -> None:
    counts = np.asarray(histogram, dtype=float)
    freq = counts / max(counts.sum(), 1.0)
    ax.bar(np.arange(counts.size), freq, color=colour, width=0.9)
    ax.axhline(1.0 / counts.size, color="k", lw=0.8, ls=":")
    ax.set_xlabel("rank of the truth among the members")
    ax.set_ylabel("frequency")
    ax.set_title(title)


def plot_run(result: ExperimentResult, path: str | Path | None = None, folder: str | Path | None = None) -> list[Path]:
    """RMSE/spread time series and the analysis rank histogram.

    ``path`` writes one PNG with both panels; ``folder`` writes ``timeseries.png`` and ``rank_histogram.png``.
    Returns the files written.
    """
    plt = _pyplot()
    summary_title = f"{result.config.method} N={len(result.output.experiments[0]['rank_histogram']) - 1}"
    hist = np.sum([e["rank_histogram"] for e in result.output.experiments], axis=0)
    written: list[Path] = []
    if path is not None:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
        _series_axes(a1, result)
        a1.legend(loc="upper right")
        a1.set_title(f"{summary_title}, inflation {result.config.inflation:g} (spin-up shaded)")
        _rank_axes(a2, hist, "analysis rank histogram")
        written.append(_save(fig, path, plt))
    if folder is not None:
        folder = Path(folder)
        fig, ax = plt.subplots(figsize=(9, 4))
        _series_axes(ax, result)
        ax.legend(loc="upper right")
        ax.set_title(f"{summary_title}, inflation {result.config.inflation:g} (spin-up shaded)")
        written.append(_save(fig, folder / "timeseries.png", plt))
        fig, ax = plt.subplots(figsize=(5, 4))
        _rank_axes(ax, hist, f"{summary_title}: analysis rank histogram")
        written.append(_save(fig, folder / "rank_histogram.png", plt))
    return written


def plot_hybrid(result: HybridResult, path: str | Path) -> Path:
    """Full vs hybrid: RMSE/spread time series on one axis and both rank histograms."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [2, 1, 1]})
    _series_axes(axes[0], result.full, "full: ", "C0")
    _series_axes(axes[0], result.hybrid, "hybrid: ", "C3")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"full EDA vs hybrid ({result.hybrid.config.emulator}, N_s={result.hybrid.config.n_real})")
    for ax, res, name, colour in ((axes[1], result.full, "full", "C0"), (axes[2], result.hybrid, "hybrid", "C3")):
        hist = np.sum([e["rank_histogram"] for e in res.output.experiments], axis=0)
        _rank_axes(ax, hist, f"{name}: analysis rank histogram", colour)
    return _save(fig, path, plt)


def plot_table(table: dict[str, Any], path: str | Path) -> Path:
    """Median analysis RMSE over seeds of every row at its best inflation, with the 10-90% band (log scale)."""
    plt = _pyplot()
    rows = [
        r for r in table["rows"] if r["median_analysis_rmse"] is not None and np.isfinite(r["median_analysis_rmse"])
    ]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.2))
    names = [f"{r['emulator']}{_bound_note(r['kind'])} ({r['best_inflation']:g})" for r in rows]
    values = [r["median_analysis_rmse"] for r in rows]
    cap = 10.0  # a band reaching a blown-up seed (inf) is drawn to the edge
    capped = [[cap if b is None else min(b, cap) for b in r["band"]] for r in rows]
    lows = [v - band[0] for band, v in zip(capped, values, strict=True)]
    highs = [band[1] - v for band, v in zip(capped, values, strict=True)]
    ax.barh(names, values, color=[f"C{i}" for i in range(len(rows))], xerr=[lows, highs], capsize=3)
    for y, (v, r) in enumerate(zip(values, rows, strict=True)):
        ax.text(v, y, f" {v:.3f}, lost {r['lost_fraction']:.0%}", va="bottom", fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1.0, 2.0, 5.0]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"analysis RMSE, median over {table.get('seeds')} seeds and 10-90% band")
    ax.set_title("hybrid EDA: each row at its best inflation")
    return _save(fig, path, plt)


def _bound_note(kind: str) -> str:
    """`` (upper bound)`` or `` (knows the filter)`` after a row name in a plot; nothing for emulators."""
    return f" ({kind})" if kind in ("upper bound", "knows the filter") else ""


def _save(fig, path: str | Path, plt) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
