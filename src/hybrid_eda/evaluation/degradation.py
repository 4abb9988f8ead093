"""How the scores degrade away from the training physics: shifted synthetic test EDAs and the degradation block.

    shift = parse_shift("fronts4=errors.front_factor=4")          # NAME=SECTION.KEY=VALUE[,SECTION.KEY=VALUE...]
    config = shifted_config(test_config, shift)                    # same grid, dates, members and seed
    block = degradation({"test": summary, "fronts4": shifted_summary}, reference="test")
    print(degradation_table(block))

A shift changes physics parameters of :class:`~hybrid_eda.synthetic.config.SyntheticEDAConfig` (``--set`` of
``hybrid-eda synthetic``) of the in-distribution test EDA; by default it keeps that EDA's seed and dates, so
the truth's flow and the error draws are the same and the change of the scores is the physics' (a paired
comparison; ``seed=N`` among the items draws another realisation). It is regenerated in memory (the generator
is deterministic), so no GRIB is written.

The block (``summary["degradation"]``): ``reference`` (the in-distribution set's name) and ``sets``, one entry per
test set with its ``source``, ``overrides``, ``seed``, ``test_dates``, the ``nmse``, ``gap_closed``,
``improvement_over_filter``, ``coverage_90`` / ``coverage_90_sharp`` (overall / on sharp features) and ``crps``
of every estimator, and, for the other sets, ``change``: ``nmse`` relative (``nmse / nmse_reference - 1``),
``gap_closed`` and ``coverage_90`` as differences (``x - x_reference``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hybrid_eda.errors import UserInputError

__all__ = ["Shift", "degradation", "degradation_table", "parse_shift", "shifted_config"]

#: Per-estimator entries of a set, read from its summary.
_SCORES = ("nmse", "gap_closed", "improvement_over_filter", "crps")


@dataclass(frozen=True)
class Shift:
    """A named change of the test EDA's physics.

    Attributes
    ----------
    name : str
        Name of the shifted test set (a key of the degradation block).
    overrides : tuple of str
        ``SECTION.KEY=VALUE`` items (:func:`~hybrid_eda.synthetic.config.config_with_overrides`).
    seed : int or None
        Seed of the shifted EDA (``None``: the test EDA's own).
    """

    name: str
    overrides: tuple[str, ...]
    seed: int | None = None


def parse_shift(text: str) -> Shift:
    """``NAME=SECTION.KEY=VALUE[,SECTION.KEY=VALUE...][,seed=N]`` -> :class:`Shift`.

    Raises
    ------
    UserInputError
        For a missing name or items, a malformed seed, or items that are not ``SECTION.KEY=VALUE``.
    """
    name, sep, rest = str(text).partition("=")
    name = name.strip()
    example = "e.g. --shift fronts4=errors.front_factor=4 or --shift short=errors.length_scale_km=300,seed=7"
    if not sep or not name or "." in name or not rest.strip():
        raise UserInputError(f"--shift {text!r} must be NAME=SECTION.KEY=VALUE[,SECTION.KEY=VALUE...]; {example}")
    overrides, seed = [], None
    for item in (part.strip() for part in rest.split(",")):
        key, eq, value = item.partition("=")
        if key.strip() == "seed":
            try:
                seed = int(value)
            except ValueError:
                raise UserInputError(f"--shift {name}: seed={value!r} is not an integer; {example}") from None
            if seed < 0:
                raise UserInputError(f"--shift {name}: seed must be >= 0, got {seed}")
            continue
        if not eq or "." not in key:
            raise UserInputError(f"--shift {name}: {item!r} is not SECTION.KEY=VALUE; {example}")
        overrides.append(item)
    if not overrides and seed is None:
        raise UserInputError(f"--shift {name} changes nothing; {example}")
    return Shift(name, tuple(overrides), seed)


def shifted_config(config, shift: Shift):
    """``config`` (a :class:`~hybrid_eda.synthetic.config.SyntheticEDAConfig`) with the physics of ``shift``.

    Raises
    ------
    UserInputError
        For an unknown key or an invalid value (the message lists the valid keys).
    """
    from hybrid_eda.synthetic.config import config_with_overrides

    try:
        shifted = config_with_overrides(config, list(shift.overrides))
        if shift.seed is not None:
            shifted = dataclasses.replace(shifted, seed=shift.seed)
    except ValueError as err:
        raise UserInputError(f"--shift {shift.name}: {err}") from None
    return shifted


def _entry(summary: Mapping) -> dict:
    entry = {key: dict(summary.get(key) or {}) for key in _SCORES}
    coverage = summary.get("coverage_90") or {}
    entry["coverage_90"] = {k: (v or {}).get("overall") for k, v in coverage.items()}
    entry["coverage_90_sharp"] = {k: (v or {}).get("sharp") for k, v in coverage.items()}
    return entry


def _change(value, reference, relative: bool):
    if value is None or reference is None:
        return None
    if relative:
        return value / reference - 1.0 if reference > 0 else None
    return value - reference


def degradation(summaries: Mapping[str, Mapping], reference: str, sources: Mapping[str, Mapping] | None = None) -> dict:
    """The degradation block (module docstring) of the summaries of several test sets.

    Parameters
    ----------
    summaries : mapping
        ``{set name: VarianceEvaluation.summary()}``, the reference among them.
    reference : str
        The in-distribution set.
    sources : mapping, optional
        ``{set name: {"source": ..., "overrides": [...], "seed": ...}}`` copied into each entry.
    """
    if reference not in summaries:
        raise ValueError(f"reference set {reference!r} is not among {', '.join(summaries)}.")
    entries = {}
    base = _entry(summaries[reference])
    for name, summary in summaries.items():
        entry = {**dict((sources or {}).get(name, {})), "test_dates": summary["settings"]["test_dates"]}
        entry.update(_entry(summary))
        if name != reference:
            entry["change"] = {
                key: {
                    estimator: _change(value, base[key].get(estimator), relative=key == "nmse")
                    for estimator, value in entry[key].items()
                }
                for key in ("nmse", "gap_closed", "coverage_90", "coverage_90_sharp")
            }
        entries[name] = entry
    return {"reference": reference, "sets": entries}


def _cell(value, change, kind: str) -> str:
    if value is None:
        return "-"
    text = f"{value:.4f}" if kind == "nmse" else (f"{value:.1%}" if kind == "gap" else f"{value:.3f}")
    if change is None:
        return text
    return text + (f" ({change:+.0%})" if kind == "nmse" else f" ({change * 100:+.1f})" if kind == "gap" else
                   f" ({change:+.3f})")  # fmt: skip


def degradation_table(block: Mapping, estimators: Sequence[str] | None = None) -> str:
    """The printed form of the block: nMSE (relative change), gap closed and coverage (changes) per set."""
    sets = block["sets"]
    names = list(sets)
    reference = sets[block["reference"]]
    rows_of = estimators or [k for k, v in reference["nmse"].items() if v is not None]
    parts = []
    tables = (("nmse", "nmse", "nMSE (change vs {ref})"), ("gap_closed", "gap", "gap closed (change, points)"),
              ("coverage_90", "cov", "90% coverage (change)"))  # fmt: skip
    for key, kind, title in tables:
        shown = [e for e in rows_of if any(sets[n][key].get(e) is not None for n in names)]
        if not shown:
            continue
        width = max(17, *(len(n) + 2 for n in names))
        lines = [f"{title.format(ref=block['reference']):<30}" + "".join(f"{n:>{width}}" for n in names)]
        for estimator in shown:
            cells = [_cell(sets[n][key].get(estimator), sets[n].get("change", {}).get(key, {}).get(estimator), kind)
                     for n in names]  # fmt: skip
            lines.append(f"{estimator:<30}" + "".join(f"{c:>{width}}" for c in cells))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
