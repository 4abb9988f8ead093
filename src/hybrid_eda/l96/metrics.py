"""Per-cycle scores of a Lorenz-96 ensemble against the truth, and their time average over a run.

For an ensemble ``x_1 .. x_N`` (``[..., N, n]``) and the truth ``y`` (``[..., n]``), per cycle:

- RMSE of the ensemble mean: ``sqrt(mean_k (xbar_k - y_k)^2)``;
- spread: ``sqrt(mean_k s_k^2)`` with ``s_k^2`` the unbiased (``N - 1``) ensemble variance of variable ``k``;
- rank of the truth among the members, per variable: the number of members below it (``0 .. N``, a rank
  histogram has ``N + 1`` bins). Ties (a member exactly equal to the truth: probability zero for a continuous
  ensemble) are broken uniformly at random among the tied positions;
- fair CRPS (Ferro 2014), averaged over variables::

      CRPS_fair = mean_i |x_i - y| - sum_{i,j} |x_i - x_j| / (2 N (N - 1))

  whose expectation does not depend on ``N`` for exchangeable members. :func:`fair_crps` uses the sorted
  members, ``sum_{i,j} |x_i - x_j| = 2 sum_i (2 i - N - 1) x_(i)``, so it costs ``O(N log N)``. The compiled
  kernel behind :class:`ScoreAccumulator` sums the pairs directly up to N = 256 members (a branch-free loop
  vectorised over variables beats sorting 20-100 values, see ``PAIR_LOOP_MAX_MEMBERS`` in ``_kernels``) and
  sorts above that; the tests check both against each other and against a double loop.

Time averages follow DAPPER: the mean over scored cycles of the per-cycle RMSE (and spread, CRPS).
A reliable ensemble has ``E[(xbar - y)^2] = (1 + 1/N) E[s^2]``, so its spread/RMSE ratio is close to
``sqrt(N / (N + 1))`` (0.976 for N = 20), not exactly 1. With a single member (deterministic methods)
the spread is 0 and the CRPS is the absolute error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybrid_eda.l96 import _kernels
from hybrid_eda.l96.seeding import BatchGenerator

__all__ = ["LOST_TRACK_RMSE", "ScoreAccumulator", "fair_crps", "rank_histogram", "rmse_of_mean", "spread", "truth_rank"]

LOGGER = logging.getLogger(__name__)

#: A run whose time-mean analysis RMSE exceeds this (the observation-error std of the presets) lost track of the
#: truth: it does worse than the observations alone. Distributions over seeds report the fraction above it.
LOST_TRACK_RMSE = 1.0


def rmse_of_mean(ens: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RMSE over variables of the ensemble mean: ``[..., N, n], [..., n] -> [...]``."""
    return np.sqrt(np.mean((ens.mean(axis=-2) - truth) ** 2, axis=-1))


def spread(ens: np.ndarray) -> np.ndarray:
    """Square root of the variable-mean unbiased ensemble variance: ``[..., N, n] -> [...]`` (0 for N = 1)."""
    if ens.shape[-2] < 2:
        return np.zeros(ens.shape[:-2])
    return np.sqrt(np.mean(ens.var(axis=-2, ddof=1), axis=-1))


def fair_crps(ens: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Fair CRPS (Ferro 2014) averaged over variables: ``[..., N, n], [..., n] -> [...]``."""
    n_mem = ens.shape[-2]
    mae = np.mean(np.abs(ens - truth[..., None, :]), axis=-2)  # [..., n]
    if n_mem < 2:
        return mae.mean(axis=-1)
    ranked = np.sort(ens, axis=-2)  # [..., N, n]
    weights = 2.0 * np.arange(1, n_mem + 1) - n_mem - 1.0  # [N]
    pair = np.einsum("i,...ik->...k", weights, ranked)  # sum_{i,j} |x_i - x_j| / 2, [..., n]
    return np.mean(mae - pair / (n_mem * (n_mem - 1.0)), axis=-1)


def truth_rank(ens: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of the truth among the members, per variable: ``[..., N, n], [..., n] -> [..., n]`` in ``0 .. N``.

    The rank counts the members strictly below the truth; ties add a uniform draw from ``0 .. #tied``.
    """
    below = np.sum(ens < truth[..., None, :], axis=-2)
    tied = np.sum(ens == truth[..., None, :], axis=-2)
    if np.any(tied):
        below = below + rng.integers(0, tied + 1)
    return below


def rank_histogram(ranks: np.ndarray, n_members: int) -> np.ndarray:
    """Counts of the ranks ``0 .. N`` (``N + 1`` bins) over all entries of ``ranks``."""
    return np.bincount(np.ravel(ranks), minlength=n_members + 1)


#: Columns of the running sums: (rmse, spread, crps) of the background, then of the analysis.
_COLUMNS = ("background_rmse", "background_spread", "background_crps", "analysis_rmse", "analysis_spread", "crps")


@dataclass
class ScoreAccumulator:
    """Time-averaged scores of a cycling run, fed once per cycle with ``(background, analysis, truth)``.

    Cheap per call: one compiled kernel per ensemble computes all scores and adds them to running sums.
    Inputs may carry leading batch dims of independent experiments (``[..., N, n]``, truth ``[..., n]``);
    each experiment is scored separately.

    Parameters
    ----------
    spinup : int
        Number of first calls to :meth:`update` that are not scored.
    keep_series : bool
        Also keep every scored cycle's values (for time-series plots), see :meth:`series`.
    rng : np.random.Generator or BatchGenerator, optional
        Breaks rank ties (rare). A :class:`~hybrid_eda.l96.seeding.BatchGenerator` holds one generator per
        experiment (flattened batch order) and breaks each experiment's ties from its own, so an experiment's
        rank histogram does not depend on the batch it ran in (the cycle passes each experiment's ``ranks``
        stream); a plain Generator is shared by the batch. Default: a generator seeded with 0 (reproducible).
    """

    spinup: int = 0
    keep_series: bool = False
    rng: np.random.Generator | BatchGenerator | None = None
    cycles_seen: int = field(default=0, init=False)
    _shape: tuple[int, ...] | None = field(default=None, init=False, repr=False)
    _totals: list[np.ndarray] = field(default_factory=list, init=False, repr=False)  # 2 x [K, 3]
    _last: list[np.ndarray] = field(default_factory=list, init=False, repr=False)  # 2 x [K, 3]
    _hists: list[np.ndarray] = field(default_factory=list, init=False, repr=False)  # 2 x [K, N+1]
    _series: list[np.ndarray] = field(default_factory=list, init=False, repr=False)  # T x [K, 6]

    def __post_init__(self) -> None:
        if self.spinup < 0:
            raise ValueError(f"spinup must be >= 0 cycles, got {self.spinup}.")
        if self.rng is None:
            self.rng = np.random.default_rng(0)

    @property
    def cycles_scored(self) -> int:
        return max(self.cycles_seen - self.spinup, 0)

    def update(self, background: np.ndarray, analysis: np.ndarray, truth: np.ndarray) -> None:
        """Score one cycle: ``background, analysis [..., N, n]`` against ``truth [..., n]``."""
        self.cycles_seen += 1
        if self.cycles_seen <= self.spinup:
            return
        bg = np.asarray(background, dtype=np.float64)
        an = np.asarray(analysis, dtype=np.float64)
        tr = np.asarray(truth, dtype=np.float64)
        if self._shape is None:
            self._allocate(bg, an, tr)
        elif bg.shape != self._shape or an.shape != self._shape or tr.shape != self._shape[:-2] + self._shape[-1:]:
            raise ValueError(
                f"cycle {self.cycles_seen}: background {bg.shape}, analysis {an.shape} and truth {tr.shape} "
                f"differ from the shapes of the first scored cycle ({self._shape}); use one accumulator per run."
            )
        n_mem, n = self._shape[-2:]
        tr2 = np.ascontiguousarray(tr).reshape(-1, n)  # [K, n]
        for which, ens in enumerate((bg, an)):
            ens3 = np.ascontiguousarray(ens).reshape(-1, n_mem, n)  # [K, N, n]
            ties = _kernels.score_ensemble(ens3, tr2, self._last[which], self._totals[which], self._hists[which])
            if ties:
                self._add_tied_ranks(ens3, tr2, self._hists[which])
        if self.keep_series:
            self._series.append(np.concatenate(self._last, axis=1))  # [K, 6]

    def _allocate(self, bg: np.ndarray, an: np.ndarray, tr: np.ndarray) -> None:
        if bg.ndim < 2 or bg.shape != an.shape or tr.shape != bg.shape[:-2] + bg.shape[-1:]:
            raise ValueError(
                f"scores need background and analysis [..., N, n] of equal shapes and truth [..., n], "
                f"got {bg.shape}, {an.shape} and {tr.shape}."
            )
        self._shape = bg.shape
        n_exp = int(np.prod(bg.shape[:-2], dtype=np.int64))
        n_mem = bg.shape[-2]
        self._totals = [np.zeros((n_exp, 3)) for _ in range(2)]
        self._last = [np.zeros((n_exp, 3)) for _ in range(2)]
        self._hists = [np.zeros((n_exp, n_mem + 1), dtype=np.int64) for _ in range(2)]
        if isinstance(self.rng, BatchGenerator) and self.rng.batch != n_exp:
            raise ValueError(
                f"the tie-break rng holds {self.rng.batch} generators for {n_exp} experiments {bg.shape[:-2]}; "
                "pass one generator per experiment (flattened batch order) or a single shared one."
            )

    def _add_tied_ranks(self, ens: np.ndarray, truth: np.ndarray, hist: np.ndarray) -> None:
        """Rank the (experiment, variable) pairs the kernel skipped because a member equals the truth."""
        tied = np.any(ens == truth[:, None, :], axis=1)  # [K, n]
        exp_idx, var_idx = np.nonzero(tied)  # [P], [P] in (experiment, variable) order
        if isinstance(self.rng, BatchGenerator):  # experiment k's ties from experiment k's generator
            groups = [(exp_idx == k, self.rng[k]) for k in np.unique(exp_idx)]
        else:
            groups = [(slice(None), self.rng)]
        for rows, rng in groups:
            e, v = exp_idx[rows], var_idx[rows]
            ranks = truth_rank(ens[e, :, v][:, :, None], truth[e, v][:, None], rng)  # [P_k, 1]
            np.add.at(hist, (e, ranks[:, 0]), 1)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading batch dims of the scored arrays (``()`` for a single experiment)."""
        if self._shape is None:
            raise ValueError("no cycle has been scored yet.")
        return self._shape[:-2]

    def summaries(self) -> list[dict[str, Any]]:
        """One summary per experiment (flattened batch order); see :meth:`summary`."""
        t = self.cycles_scored
        if t == 0 or self._shape is None:
            raise ValueError(
                f"no cycle scored yet: {self.cycles_seen} cycles seen with spin-up {self.spinup}; "
                "run more cycles than the spin-up."
            )
        means = np.concatenate(self._totals, axis=1) / t  # [K, 6]
        out = []
        for k in range(means.shape[0]):
            s: dict[str, Any] = {name: float(means[k, c]) for c, name in enumerate(_COLUMNS)}
            s["spread_rmse_ratio"] = _ratio(s["analysis_spread"], s["analysis_rmse"])
            s["background_spread_rmse_ratio"] = _ratio(s["background_spread"], s["background_rmse"])
            s["rank_histogram"] = [int(c) for c in self._hists[1][k]]
            s["background_rank_histogram"] = [int(c) for c in self._hists[0][k]]
            s["cycles_scored"] = t
            s["spinup_cycles"] = self.spinup
            out.append(s)
        return out

    def summary(self) -> dict[str, Any]:
        """Time-averaged scores of a single experiment.

        Returns
        -------
        dict
            ``analysis_rmse``, ``analysis_spread``, ``background_rmse``, ``background_spread``, ``crps``
            (analysis, fair), ``background_crps``, ``spread_rmse_ratio`` (analysis spread / RMSE),
            ``background_spread_rmse_ratio``, ``rank_histogram`` (analysis, ``N + 1`` ints),
            ``background_rank_histogram``, ``cycles_scored``, ``spinup_cycles``.
        """
        if self._shape is not None and len(self._shape) > 2:
            raise ValueError(
                f"these scores hold a batch of experiments {self._shape[:-2]}; use summaries() for one dict each."
            )
        return self.summaries()[0]

    def series(self) -> dict[str, np.ndarray]:
        """Per-cycle scores of the scored cycles, each ``[T, *batch]`` (needs ``keep_series=True``)."""
        if not self.keep_series:
            raise ValueError("per-cycle scores were not kept; create the accumulator with keep_series=True.")
        if not self._series:
            return {name: np.empty((0,)) for name in _COLUMNS}
        stacked = np.stack(self._series)  # [T, K, 6]
        batch = self.batch_shape
        return {name: stacked[:, :, c].reshape((-1, *batch)) for c, name in enumerate(_COLUMNS)}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")
