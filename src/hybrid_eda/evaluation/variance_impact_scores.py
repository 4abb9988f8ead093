"""Scores of the variance-impact experiment: RMS analysis error per variable and level group, and its normalised
change against the ``N``-member variances with confidence intervals across dates.

Fields of different units and sizes are pooled in units of their own background-error std: field ``f`` counts
with weight ``1 / <sigma_b^2>_f`` (its area- and date-mean true background-error variance), so a group's score

    RMS_g,s(d) = sqrt( mean_{f in g} MSE_d,s,f / <sigma_b^2>_f )

is ~1 for the control background and smaller for a good analysis, per date ``d`` and source ``s``. Over dates
``RMS_g,s = sqrt(mean_d RMS_g,s(d)^2)``. The normalised change of a source against the reference ``ensemble_N``
is that of the talk's forecast-impact panels,

    change = mean_d (RMS_s(d) - RMS_ref(d)) / mean_d RMS_ref(d),

with a confidence interval from the paired per-date differences (Student-t, the number of dates deflated for
their lag-1 autocorrelation: dates 6 h apart share weather and error regimes) and Sidak-corrected for the number
of groups tested (:func:`~hybrid_eda.evaluation.significance.normalised_change`, Geer 2016).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hybrid_eda.evaluation.significance import normalised_change
from hybrid_eda.evaluation.variance_impact import ImpactResult

__all__ = ["REFERENCE", "TOLERANCE", "change_entry", "group_rms", "groups", "impact_summary", "impact_table", "verdict"]

#: The source every other is compared with.
REFERENCE = "ensemble_N"
#: Largest acceptable increase of the emulator's analysis error over the reference (the issue's "done when").
TOLERANCE = 0.02


def group_rms(result: ImpactResult, fields: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-date normalised RMS ``[D]`` of every source (and ``background``) over ``fields`` (module docstring)."""
    index = np.asarray(fields, dtype=int)
    unit = result.sigma_b_ms[:, index].mean(axis=0)  # [f]: <sigma_b^2> over dates
    out = {s: np.sqrt((result.analysis_mse[:, k, index] / unit).mean(axis=-1)) for k, s in enumerate(result.sources)}
    out["background"] = np.sqrt((result.background_mse[:, index] / unit).mean(axis=-1))
    return out


def groups(result: ImpactResult) -> dict[str, dict[str, list[int]]]:
    """Fields of every group: ``overall`` (``all``), ``variable`` (by parameter), ``level_group`` (by level)."""
    variables: dict[str, list[int]] = {}
    levels: dict[str, list[int]] = {}
    for f, (param, group) in enumerate(zip(result.params, result.groups, strict=True)):
        variables.setdefault(param, []).append(f)
        levels.setdefault(str(group), []).append(f)
    return {"overall": {"all": list(range(len(result.variables)))}, "variable": variables,
            "level_group": dict(sorted(levels.items(), key=lambda kv: int(kv[0])))}  # fmt: skip


def change_entry(change) -> dict[str, Any]:
    """JSON-ready entry of one 0-d :class:`~hybrid_eda.evaluation.significance.ScoreChange`: ``change``, ``low``,
    ``high`` (fractions), ``significant``, ``p_value``, ``ess``, ``r1``."""
    value, half = float(change.change), float(change.half_width)
    return {"change": value, "low": value - half, "high": value + half, "significant": bool(change.significant),
            "p_value": float(change.p_value), "ess": round(float(change.ess), 2),
            "r1": round(float(change.r1), 3)}  # fmt: skip


def _scores(series: dict[str, np.ndarray], tests: int, confidence: float) -> dict[str, Any]:
    rms = {name: float(np.sqrt(np.mean(values**2))) for name, values in series.items()}
    change = {}
    if REFERENCE in series:
        change = {name: change_entry(normalised_change(values, series[REFERENCE], n_tests=tests,
                                                       confidence=confidence))
                  for name, values in series.items() if name not in (REFERENCE, "background")}  # fmt: skip
    return {"rms": rms, "change": change}


def impact_summary(result: ImpactResult, *, confidence: float = 0.95) -> dict[str, Any]:
    """JSON-ready scores: ``overall``, ``variable``, ``level_group`` (normalised RMS and changes against
    ``ensemble_N``), ``per_field`` (RMS in physical units), ``std_bias`` (area-mean std against ``sigma_b``'s,
    minus 1), ``std_relative_rms_error`` (RMS of ``std / sigma_b - 1``) and the ``verdict`` of the issue.

    The Sidak correction counts the tests of one table: the variables plus the level groups (per source).
    """
    if len(result.dates) < 3:
        raise ValueError("the confidence intervals need at least three dates; run on more test dates.")
    fields = groups(result)
    tests = len(fields["variable"]) + len(fields["level_group"])
    summary: dict[str, Any] = {}
    for kind, members in fields.items():
        block = {name: _scores(group_rms(result, fields), 1 if kind == "overall" else tests, confidence)
                 for name, fields in members.items()}  # fmt: skip
        summary[kind] = block["all"] if kind == "overall" else block
    per_field = {}
    for f, name in enumerate(result.variables):
        rms = {s: float(np.sqrt(result.analysis_mse[:, k, f].mean())) for k, s in enumerate(result.sources)}
        rms["background"] = float(np.sqrt(result.background_mse[:, f].mean()))
        per_field[name] = {"rms": rms, "rms_sigma_b": float(np.sqrt(result.sigma_b_ms[:, f].mean()))}
    summary["per_field"] = per_field
    truth = result.sources.index("sigma_b")
    summary["std_bias"] = {
        s: float(np.mean(result.std_mean[:, k] / result.std_mean[:, truth]) - 1.0) for k, s in enumerate(result.sources)
    }
    summary["std_relative_rms_error"] = {
        s: float(np.sqrt(result.std_error_ms[:, k].mean())) for k, s in enumerate(result.sources)
    }
    summary["verdict"] = verdict(summary)
    summary["confidence"] = confidence
    summary["sidak_tests"] = tests
    return summary


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's criteria on the overall score: emulator within :data:`TOLERANCE` of ``ensemble_N``, clearly
    (significantly) below ``raw_M``; what ``sigma_b`` would gain."""
    change = summary["overall"]["change"]
    out: dict[str, Any] = {"tolerance": TOLERANCE}
    if "raw_M" in change:
        out["raw_M_change"] = change["raw_M"]["change"]
    if "sigma_b" in change:
        out["sigma_b_change"] = change["sigma_b"]["change"]
    if "emulator" in change:
        emulator, raw = change["emulator"], change["raw_M"]
        rms = summary["overall"]["rms"]
        out["emulator_change"] = emulator["change"]
        out["emulator_within_tolerance"] = bool(emulator["change"] <= TOLERANCE)
        out["emulator_upper_bound_within_tolerance"] = bool(emulator["high"] <= TOLERANCE)
        out["emulator_below_raw_M"] = bool(rms["emulator"] < rms["raw_M"] and raw["low"] > emulator["high"])
        gap = raw["change"]
        out["gap_to_raw_M_closed"] = float(1.0 - emulator["change"] / gap) if gap > 0 else None
    return out


def _percent(value: dict[str, Any] | None) -> str:
    if value is None:
        return f"{'ref':>16}"
    mark = "*" if value["significant"] else " "
    return f"{100 * value['change']:+6.2f} [{100 * value['low']:+5.2f},{100 * value['high']:+5.2f}]{mark}"


def impact_table(summary: dict[str, Any]) -> str:
    """Plain-text tables: normalised RMS (units of ``sigma_b``) and change against ``ensemble_N`` in percent."""
    columns = [("all", summary["overall"])]
    columns += [(name, value) for name, value in summary["variable"].items()]
    columns += [(f"L{name}", value) for name, value in summary["level_group"].items()]
    sources = list(summary["overall"]["rms"])
    lines = ["normalised RMS analysis error (units of the background-error std; background ~1)"]
    lines.append(f"{'source':<16}" + "".join(f"{name:>8}" for name, _ in columns))
    for source in sources:
        lines.append(f"{source:<16}" + "".join(f"{value['rms'][source]:8.4f}" for _, value in columns))
    lines.append("")
    lines.append(f"change against {REFERENCE} in % [{summary['confidence']:.0%} interval; * significant; "
                 f"Sidak over {summary['sidak_tests']} tests except 'all']")  # fmt: skip
    changed = [s for s in sources if s not in ("background",)]
    lines.append(f"{'group':<8}" + "".join(f"{s:>36}" for s in changed))
    for name, value in columns:
        cells = "".join(f"{_percent(value['change'].get(s)):>36}" for s in changed)
        lines.append(f"{name:<8}" + cells)
    return "\n".join(lines)
