"""The normalised-change-in-RMS-error figure of a forecast-impact experiment (the style of the talk's panels).

One panel per score (a variable, a level group, analysis or forecast RMSE), lead time on the x axis, one line
per experiment (each against the same reference run), error bars = the confidence interval of
:func:`~hybrid_eda.evaluation.significance.normalised_change`, filled markers where the change is significant
(the interval excludes 0), open markers where it is not, and the zero line. Below zero = smaller error than
the reference.

    changes = {"raw M=5": normalised_change(rmse_raw, rmse_ref, n_tests=12),   # arrays [row, lead]
               "emulator": normalised_change(rmse_emu, rmse_ref, n_tests=12)}
    fig = impact_figure(changes, leads=[0, 1, 2, 4], rows=["analysis", "x"], path="impact.png")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hybrid_eda.evaluation.significance import ScoreChange

__all__ = ["impact_figure"]


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only, works without a display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def impact_figure(
    changes: Mapping[str, ScoreChange],
    *,
    leads: Sequence[float],
    rows: Sequence[str],
    path: str | Path | None = None,
    reference: str = "reference",
    lead_label: str = "lead time",
    title: str | None = None,
    ncols: int = 1,
):
    """Draw (and optionally write as PNG) the normalised change of every experiment against the reference.

    Parameters
    ----------
    changes : mapping of str to ScoreChange
        Experiment name -> its change, every array ``[len(rows), len(leads)]`` (or ``[len(leads)]`` for one row).
    leads : sequence of float
        Lead times of the columns (the x axis; e.g. 0 for the analysis).
    rows : sequence of str
        Name of each panel (score or variable).
    path : path, optional
        Where to write the PNG (parent folders are made).
    reference : str
        Name of the reference run, for the axis label.
    lead_label, title : str
        The x-axis label and an optional figure title.
    ncols : int
        Panels per row of the figure.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per entry of ``rows``.
    """
    if not changes:
        raise ValueError("changes is empty: pass at least one experiment's ScoreChange")
    n_rows, n_leads = len(rows), len(leads)
    shape = (n_rows, n_leads)
    arrays = {}
    for name, change in changes.items():
        values = np.asarray(change.change, dtype=np.float64)
        if values.shape == (n_leads,) and n_rows == 1:
            values = values[None]
        if values.shape != shape:
            raise ValueError(
                f"experiment {name!r} has changes of shape {np.shape(change.change)}; the figure needs "
                f"[rows, leads] = {list(shape)} (one per panel and lead time)"
            )
        arrays[name] = (values, np.asarray(change.half_width, dtype=np.float64).reshape(shape),
                        np.asarray(change.significant, dtype=bool).reshape(shape))  # fmt: skip
    if ncols < 1:
        raise ValueError(f"ncols = {ncols}: use at least 1")

    plt = _pyplot()
    ncols = min(ncols, n_rows)
    nrows = math.ceil(n_rows / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 2.6 * nrows + 0.6), squeeze=False,
                             sharex=True)  # fmt: skip
    x = np.asarray(leads, dtype=np.float64)
    spacing = np.min(np.diff(np.sort(x))) if n_leads > 1 else 1.0
    offsets = (np.arange(len(arrays)) - (len(arrays) - 1) / 2) * 0.12 * spacing
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    level = next(iter(changes.values()))
    for i, row in enumerate(rows):
        ax = axes[i // ncols, i % ncols]
        ax.axhline(0.0, color="black", linewidth=0.8)
        for k, (name, (value, half, significant)) in enumerate(arrays.items()):
            colour = colours[k % len(colours)]
            xs = x + offsets[k]
            ax.errorbar(xs, value[i], yerr=half[i], color=colour, linewidth=1.2, capsize=3, label=name)
            ax.plot(xs[significant[i]], value[i][significant[i]], "o", color=colour, markersize=6)
            ax.plot(xs[~significant[i]], value[i][~significant[i]], "o", markerfacecolor="white", color=colour,
                    markersize=6)  # fmt: skip
        ax.set_title(row, fontsize=10)
        ax.grid(alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel(f"(RMSE - {reference}) / {reference}", fontsize=8)
        if i // ncols == nrows - 1 or i + ncols >= n_rows:
            ax.set_xlabel(lead_label)
    for j in range(n_rows, nrows * ncols):  # empty cells of the grid
        axes[j // ncols, j % ncols].set_axis_off()
    axes[0, 0].legend(fontsize=8, loc="best")
    note = (f"error bars: {level.confidence:.0%} confidence, Sidak for {level.n_tests} tests, AR(1)-inflated\n"
            "filled = significant, open = not")  # fmt: skip
    fig.suptitle(title + "\n" + note if title else note, fontsize=9)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
