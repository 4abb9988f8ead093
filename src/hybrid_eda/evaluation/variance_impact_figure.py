"""The variance-impact figure: the normalised change of the RMS analysis error against the ``N``-member variances,
per variable and level group, one line per source with its Sidak-corrected interval (filled = significant), in
the talk's panel style (:func:`~hybrid_eda.evaluation.impact_figure.impact_figure`, groups on the x axis where
the forecast-impact panels have lead times)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybrid_eda.evaluation.variance_impact import ImpactResult

__all__ = ["write_impact_figure"]


def write_impact_figure(
    result: ImpactResult, path: Path, labels: dict[str, str] | None = None, *, confidence: float = 0.95
) -> Path:
    """One panel: x = the variables then the level groups (``L1`` at the top), y = change against
    ``ensemble_N`` of every other source; ``labels`` renames the sources. Writes a PNG at ``path``."""
    from hybrid_eda.evaluation.impact_figure import impact_figure
    from hybrid_eda.evaluation.significance import normalised_change
    from hybrid_eda.evaluation.variance_impact_scores import REFERENCE, TOLERANCE, group_rms, groups

    labels = labels or {}
    fields = groups(result)
    columns = [*fields["variable"].items(), *((f"L{k}", v) for k, v in fields["level_group"].items())]
    series = [group_rms(result, members) for _, members in columns]  # per column {source: [D]}
    others = [s for s in result.sources if s != REFERENCE]
    changes = {
        labels.get(source, source): normalised_change(
            np.stack([column[source] for column in series]), np.stack([column[REFERENCE] for column in series]),
            n_tests=len(columns), confidence=confidence,
        )  # [column]
        for source in others
    }  # fmt: skip
    figure = impact_figure(changes, leads=np.arange(len(columns)), rows=["RMS analysis error, units of sigma_b"],
                           reference=labels.get(REFERENCE, REFERENCE), lead_label="variable / level group",
                           title=f"{len(result.dates)} dates x {result.draws} control backgrounds, {result.grid}; "
                           f"dashed: +{100 * TOLERANCE:.0f}%")  # fmt: skip
    ax = figure.axes[0]
    ax.set_xticks(np.arange(len(columns)), [name for name, _ in columns])
    ax.axhline(TOLERANCE, color="grey", linewidth=0.8, linestyle="--")
    figure.set_size_inches(9.0, 4.2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
