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
    from hybrid_eda.l96.experiment import ExperimentResult, HybridResult, TableRow

__all__ = [
    "SCORE_KEYS",
    "run_summary",
    "hybrid_summary",
    "table_summary",
    "format_run",
    "format_table",
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

    ``diverged`` is ``True`` when the time-mean analysis RMSE exceeds the observation-error std: the filter
    lost track of the truth (a legitimate result for too small an ensemble, not an error).
    """
    config, out = result.config, result.output
    exps = out.experiments
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
            "diverged": bool(summary["analysis_rmse"] > config.obs_std),
            "analysis_rmse_std_over_batch": float(np.std([e["analysis_rmse"] for e in exps])),
        }
    )
    if config.batch > 1:
        summary["experiments"] = [{k: e[k] for k in (*SCORE_KEYS, "rank_histogram")} for e in exps]
    summary["settings"] = config.to_dict() | {"method_object": result.method, "members_cycled": members}
    summary["versions"] = versions()
    return summary


def hybrid_summary(result: HybridResult) -> dict[str, Any]:
    """JSON of a hybrid experiment: the ``full`` EDA and the ``hybrid`` cycle, each a :func:`run_summary`."""
    full, hybrid = run_summary(result.full), run_summary(result.hybrid)
    return {
        "emulator": result.hybrid.config.emulator,
        "n_real": result.hybrid.config.n_real,
        "members": result.full.config.members,
        "analysis_rmse_ratio": hybrid["analysis_rmse"] / full["analysis_rmse"],
        "full": full,
        "hybrid": hybrid,
        "versions": full["versions"],
    }


def table_summary(rows: Sequence[TableRow]) -> dict[str, Any]:
    """JSON of the emulator table: one entry per emulator with its best inflation and every inflation tried."""
    entries = []
    for row in rows:
        best = None if row.best is None else run_summary(row.best)
        entries.append(
            {
                "emulator": row.emulator,
                "best_inflation": row.best_inflation,
                "analysis_rmse": None if best is None else best["analysis_rmse"],
                "by_inflation": {f"{k:g}": v for k, v in row.by_inflation.items()},
                "errors": {f"{k:g}": v for k, v in row.errors.items()},
                "best": best,
            }
        )
    return {"rows": entries, "versions": versions()}


def format_run(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    expected = summary.get("expected_analysis_rmse")
    lines = [
        f"{summary['method']} N={summary['members']} inflation={summary['inflation']:g}"
        + (f" emulator={summary['emulator']} N_s={summary['n_real']}" if summary.get("emulator") else "")
        + f": {summary['cycles']} cycles ({summary['spinup']} spin-up), batch {summary['batch']}",
        f"  analysis RMSE {summary['analysis_rmse']:.4f}"
        + (f" (expected ~{expected:g})" if expected is not None else "")
        + f", spread {summary['analysis_spread']:.4f}, background RMSE {summary['background_rmse']:.4f}, "
        f"CRPS {summary['crps']:.4f}",
        f"  {summary['wall_seconds']:.2f} s, {summary['cycles_per_second']:.0f} cycles/s"
        + (" - the filter diverged (RMSE above the observation error)" if summary["diverged"] else ""),
    ]
    if summary["batch"] > 1:
        lines.append(
            "  per experiment: " + ", ".join(f"{e['analysis_rmse']:.3f}" for e in summary.get("experiments", []))
        )
    return "\n".join(lines)


def format_table(table: dict[str, Any]) -> str:
    """The emulator table as aligned text (one row per emulator, best inflation)."""
    header = (
        f"{'emulator':<20} {'inflation':>9} {'an. RMSE':>9} {'spread':>8} {'bg RMSE':>8} {'CRPS':>7} {'expected':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in table["rows"]:
        best = row["best"]
        if best is None:
            lines.append(f"{row['emulator']:<20} {'-':>9} {'non-finite at every inflation tried':>45}")
            continue
        expected = best.get("expected_analysis_rmse")
        lines.append(
            f"{row['emulator']:<20} {row['best_inflation']:>9g} {best['analysis_rmse']:>9.4f} "
            f"{best['analysis_spread']:>8.4f} {best['background_rmse']:>8.4f} {best['crps']:>7.4f} "
            f"{'-' if expected is None else f'{expected:g}':>9}"
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
    """Bar chart of the analysis RMSE of every emulator at its best inflation (log scale)."""
    plt = _pyplot()
    rows = [r for r in table["rows"] if r["analysis_rmse"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.2))
    names = [f"{r['emulator']} (inflation {r['best_inflation']:g})" for r in rows]
    values = [r["analysis_rmse"] for r in rows]
    ax.barh(names, values, color=[f"C{i}" for i in range(len(rows))])
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1.0, 2.0, 5.0]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("analysis RMSE (time mean after spin-up)")
    ax.set_title("hybrid EDA: emulators at their best inflation")
    return _save(fig, path, plt)


def _save(fig, path: str | Path, plt) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
