"""Spread-calibrated hybrid rows: a source's generated members with their anomalies rescaled, per variable.

``hybrid-eda evaluate members CKPT --spread 0.9 "t=0.9,q=0.85"`` adds one row per spec,
``hybrid:trained*<spec>``: the trained generator's N - N_s members of each date (the same draws as the
``hybrid:trained`` row, not generated again), their anomalies about **their own mean** multiplied by the spec's
factor for the field's variable (a field ``t_3`` is variable ``t``; variables not named keep factor 1). Their mean,
and so the hybrid mean's share from them, is unchanged: only the spread they carry changes, as with the Lorenz-96
cycle's ``generator:...,spread=A`` knob (:mod:`hybrid_eda.l96.learned_emulator`).

A factor is a calibration and must be tuned on data the test never saw: e.g. the training EDA's validation dates
(``--test`` the seed-1 training EDA, ``--dates`` its validation indices), then applied to the held-out EDA.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from hybrid_eda.errors import UserInputError
from hybrid_eda.evaluation.hybrid_members import HybridCase, MemberSource, variable_of

__all__ = ["RescaledSpread", "field_factors", "parse_spread", "variable_of"]

#: Key of a spec's factor for every variable it does not name (``"0.9"`` is ``{"*": 0.9}``).
ALL = "*"


def parse_spread(spec: str) -> dict[str, float]:
    """``"0.9"`` -> ``{"*": 0.9}``; ``"t=0.9,q=0.85"`` -> ``{"t": 0.9, "q": 0.85}``; ``"0.95,t=0.9"`` both.

    Raises
    ------
    UserInputError
        A factor that is not a finite number > 0, a variable named twice, or an empty spec.
    """
    factors: dict[str, float] = {}
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        name, _, value = part.rpartition("=")
        name = name.strip() or ALL
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not (math.isfinite(factor) and factor > 0):
            raise UserInputError(
                f"--spread {spec!r}: {part!r} is not a factor > 0; give A (every variable) or VAR=A pairs, e.g. "
                "--spread 0.9 or --spread t=0.9,q=0.85"
            )
        if name in factors:
            raise UserInputError(f"--spread {spec!r} gives {'the default' if name == ALL else name} twice")
        factors[name] = factor
    if not factors:
        raise UserInputError(f"--spread {spec!r} holds no factor; e.g. --spread 0.9 or --spread t=0.9,q=0.85")
    return factors


def field_factors(factors: Mapping[str, float], fields: Sequence[str]) -> np.ndarray:
    """The factor of each field ``[F]`` (its variable's, else the spec's default, else 1).

    Raises
    ------
    UserInputError
        The spec names a variable none of ``fields`` belongs to (a typo would silently leave it at 1).
    """
    variables = [variable_of(f) for f in fields]
    unknown = sorted(set(factors) - {ALL} - set(variables))
    if unknown:
        raise UserInputError(
            f"--spread names {', '.join(unknown)}, not a variable of the EDA; its variables: "
            f"{', '.join(dict.fromkeys(variables))}"
        )
    default = factors.get(ALL, 1.0)
    return np.array([factors.get(v, default) for v in variables], dtype=np.float64)


def _label(factors: Mapping[str, float]) -> str:
    return ",".join(f"{v:g}" if k == ALL else f"{k}={v:g}" for k, v in factors.items())


class RescaledSpread(MemberSource):
    """The members of ``base`` with their anomalies about their own mean scaled per field (module docstring).

    Parameters
    ----------
    base : MemberSource
        The source whose members are rescaled; listed before this one, its members of the same date are reused
        (``base.last``), else generated here with this row's seed.
    factors : dict or str
        ``{variable: factor}`` (``"*"``: every other variable), or a spec for :func:`parse_spread`.
    """

    def __init__(self, base: MemberSource, factors: Mapping[str, float] | str) -> None:
        self.base = base
        self.factors = parse_spread(factors) if isinstance(factors, str) else dict(factors)
        for name, factor in self.factors.items():
            if not (math.isfinite(factor) and factor > 0):
                raise UserInputError(f"spread factor of {name} must be a finite number > 0, got {factor}")
        self.name = f"{base.name}*{_label(self.factors)}"
        self.label = f"{base.label}, spread x {_label(self.factors)}"

    def members(self, case: HybridCase, n_real: int, seed: int) -> np.ndarray:
        """``[N - N_s, G, F]``: ``mean + factor_f (x - mean)`` of ``base``'s members ``x`` of this case (``x`` itself
        where the factor is 1)."""
        last = self.base.last
        if last is not None and last[0] == case.date and last[1] == n_real:
            members = last[2]
        else:
            members = self.base.members(case, n_real, seed)
        scale = field_factors(self.factors, case.variables)  # [F]
        mean = members.mean(axis=0, keepdims=True)
        return np.where(scale == 1.0, members, mean + scale * (members - mean))  # factor 1: the draws bit for bit

    def _generate(self, starts, guides, guide_backgrounds, seed):  # pragma: no cover - members() is overridden
        raise NotImplementedError
