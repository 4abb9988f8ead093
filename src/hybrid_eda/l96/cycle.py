"""The Lorenz-96 cycling harness: truth run, synthetic observations, DA cycles, scores; full, reduced or hybrid EDA.

One cycle ``k`` at time ``t_k``::

    y_l   = H x^t(t_k + l * steps_per_obs * dt) + eps,     l = 0 .. window-1     (observations of the window)
    x^a   = method.analyse(x^b, y)                                             (analysis at t_k)
    x^a[:N_s] = method.analyse(x^b, y, n_analyses=N_s)                          (hybrid: N_s real analyses only)
    x^a[N_s:] = emulator.generate(x^b[N_s:], x^a[:N_s], ..., guide_backgrounds=x^b[:N_s], observations=y)
    x^b  <- M^{window * steps_per_obs}(x^a)                                     (background at t_{k+1})

The truth and observations are generated block by block from their own random streams, so every method,
ensemble size and emulator run with the same seed sees the same truth and the same observations (a paired
comparison). In a hybrid cycle the analyses of the emulated members are never computed; only the ``oracle``
upper bound makes the cycle compute all N and is handed the hidden ones (its hybrid is the full EDA).

Seeds: experiment ``k`` of a batch of ``B`` with seed ``s`` draws every random number (truth, observations,
initial ensemble, method, emulator, rank ties) from ``SeedSequence(s + k).spawn(6)`` (:mod:`hybrid_eda.l96.seeding`),
so it is, bit for bit, the single run with seed ``s + k`` whatever ``B`` is.

Scores are computed once per block of cycles, vectorised over ``[cycles, B, N, n]``, so the per-cycle cost
is the method, the forecast and two copies. Cycles before ``spinup`` are run but left out of the scores.

Glossary: ``B`` batch of independent experiments, ``N`` members, ``N_s`` real members, ``n`` state size,
``L`` observation times per window, ``p`` observations per time, ``T`` cycles.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybrid_eda.l96 import metrics
from hybrid_eda.l96.base import Assimilator, FilterDivergenceError
from hybrid_eda.l96.emulators import MemberEmulator, UpperBound
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.presets import ExperimentSettings
from hybrid_eda.l96.seeding import STREAMS, BatchGenerator, experiment_streams
from hybrid_eda.l96.spread_relaxation import check_rtps, relax_to_prior_spread

__all__ = [
    "CycleSettings",
    "CycleOutput",
    "HybridSetting",
    "check_memory",
    "estimate_memory_bytes",
    "memory_parts",
    "run_cycles",
    "spin_up_truth",
]

LOGGER = logging.getLogger(__name__)

#: Bytes of background + analysis members buffered per block of cycles before the block is scored.
_BLOCK_BYTES = 16 * 2**20
_MAX_BLOCK = 250
#: Per-cycle series kept for the time-series plots (spin-up included).
SERIES_KEYS = ("analysis_rmse", "analysis_spread", "background_rmse", "background_spread")


@dataclass(frozen=True)
class CycleSettings:
    """How long to cycle and how to start.

    Parameters
    ----------
    cycles : int
        Number of DA cycles run (spin-up included).
    spinup : int
        First cycles left out of the scores.
    members : int
        Ensemble size N (1 for a deterministic method).
    batch : int
        Number B of independent experiments advanced together in one vectorised call.
    seed : int
        Seed ``s`` of the first experiment: experiment ``k`` of the batch draws all its random streams (truth,
        observations, initial ensemble, method, emulator) from ``SeedSequence(s + k)``, so it is the single run
        with seed ``s + k`` (:mod:`hybrid_eda.l96.seeding`).
    init_spread : float
        Standard deviation of the initial ensemble around the initial truth.
    truth_spinup_steps : int
        Model steps from a perturbed rest state onto the attractor before cycle 0.
    keep_members : bool
        Keep every cycle's background and analysis members (for the EDA archive; batch 1 only).
    progress : bool
        Show a tqdm progress bar (on stderr, only when it is a terminal).
    rtps : float
        Relaxation to prior spread of every analysis, all members (:mod:`hybrid_eda.l96.spread_relaxation`).
    """

    cycles: int
    spinup: int
    members: int
    batch: int = 1
    seed: int = 0
    init_spread: float = ExperimentSettings.init_spread  # the one default, in presets.ExperimentSettings
    truth_spinup_steps: int = 2000
    keep_members: bool = False
    progress: bool = False
    rtps: float = ExperimentSettings.rtps

    @classmethod
    def from_experiment(cls, config: Any, **overrides: Any) -> CycleSettings:
        """The cycle of an :class:`~hybrid_eda.l96.config.ExperimentConfig` (cycles, spin-up, members, batch, seed,
        initial spread, RTPS), with ``overrides`` (e.g. ``members`` of an N_s-only EDA, ``keep_members``,
        ``progress``)."""
        fields = {
            "cycles": int(config.cycles),
            "spinup": int(config.spinup),
            "members": int(config.members),
            "batch": int(config.batch),
            "seed": int(config.seed),
            "init_spread": float(config.init_spread),
            "rtps": float(config.rtps),
        }
        return cls(**(fields | overrides))

    def __post_init__(self) -> None:
        check_rtps(self.rtps)
        if self.cycles < 1:
            raise ValueError(f"cycles must be at least 1, got {self.cycles}; use e.g. --cycles 10000.")
        if not 0 <= self.spinup < self.cycles:
            raise ValueError(
                f"spin-up must be between 0 and cycles - 1 = {self.cycles - 1}, got {self.spinup}; "
                "lower --spinup or run more --cycles."
            )
        if self.members < 1 or self.batch < 1:
            raise ValueError(f"members and batch must be positive, got members={self.members}, batch={self.batch}.")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}; use e.g. --seed 0.")
        if self.keep_members and self.batch != 1:
            raise ValueError("keeping an EDA archive needs a single experiment; drop --batch or --archive.")
        if not self.init_spread > 0:
            raise ValueError(f"init_spread must be positive, got {self.init_spread}; use e.g. 1.0.")


@dataclass(frozen=True)
class HybridSetting:
    """The hybrid cycle: members ``0 .. n_real-1`` real, the others from ``emulator`` (or an upper bound)."""

    n_real: int
    emulator: MemberEmulator | UpperBound


@dataclass
class CycleOutput:
    """Scores and time series of one cycling run (or a batch of them).

    Attributes
    ----------
    experiments : list of dict
        Time-mean scores over the scored cycles, one dict per experiment of the batch
        (:meth:`hybrid_eda.l96.metrics.ScoreAccumulator.summaries`).
    series : dict
        Per-cycle ``[T, B]`` series: ``analysis_rmse``, ``analysis_spread``, ``background_rmse``,
        ``background_spread``.
    wall_seconds : float
        Time spent cycling (truth and observations, methods, forecasts and scoring).
    setup_seconds : float
        Truth spin-up and one warm-up cycle (JIT compilation), not included in ``wall_seconds``.
    analysis_seconds : float
        Part of ``wall_seconds`` spent in the method's analyses (in a hybrid cycle: the N_s real ones only).
    emulation_seconds : float
        Part of ``wall_seconds`` spent emulating members (hybrid cycles).
    analyses_per_cycle : int
        Analyses the method computed per experiment and cycle (N, or N_s in a hybrid cycle with an emulator).
    truth, observations, background, analysis : np.ndarray or None
        ``[T, n]``, ``[T, p]``, ``[T, N, n]``, ``[T, N, n]`` when members were kept (batch 1).
    """

    experiments: list[dict[str, Any]]
    series: dict[str, np.ndarray]
    wall_seconds: float
    setup_seconds: float = 0.0
    analysis_seconds: float = 0.0
    emulation_seconds: float = 0.0
    analyses_per_cycle: int = 0
    truth: np.ndarray | None = None
    observations: np.ndarray | None = None
    background: np.ndarray | None = None
    analysis: np.ndarray | None = None


def spin_up_truth(model: Lorenz96, batch: int, steps: int, rng: np.random.Generator | BatchGenerator) -> np.ndarray:
    """Initial truths on the attractor: ``F`` plus small noise, integrated ``steps`` steps; returns ``[B, n]``."""
    x = model.forcing + 0.01 * rng.standard_normal((batch, model.n))  # [B, n]
    with np.errstate(over="ignore", invalid="ignore"):
        return model.forecast(x, steps)


def _truth_block(
    model: Lorenz96,
    obs: ObservationOperator,
    truth: np.ndarray,
    n_cycles: int,
    window: int,
    steps_per_obs: int,
    rng: np.random.Generator | BatchGenerator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth at ``n_cycles`` cycle times from ``truth`` ``[B, n]`` and the observations of each window.

    The observation errors are drawn as ``[B, c, L, p]``, experiment first, so experiment ``k`` takes its
    block's numbers from its own stream in cycle order, whatever the batch and the block size.

    Returns ``(truth_at_cycles [c, B, n], observations [c, B, L, p], truth_after [B, n])``.
    """
    at_cycles = np.empty((n_cycles,) + truth.shape)  # [c, B, n]
    obs_states = np.empty((truth.shape[0], n_cycles, window, truth.shape[1]))  # [B, c, L, n]
    x = truth
    for c in range(n_cycles):
        at_cycles[c] = x
        for lag in range(window):
            if lag:
                x = model.forecast(x, steps_per_obs)
            obs_states[:, c, lag] = x
        x = model.forecast(x, steps_per_obs)
    y = obs.sample(obs_states, rng).swapaxes(0, 1)  # [c, B, L, p]
    return at_cycles, np.ascontiguousarray(y), x


def _check_truth(truth: np.ndarray, model: Lorenz96, when: str) -> None:
    """The truth run itself must stay finite; otherwise the model, not the filter, is unstable."""
    if not np.isfinite(truth).all():
        raise FilterDivergenceError(
            f"the Lorenz-96 truth run became non-finite (NaN or inf) during {when}: the model is numerically "
            f"unstable with dt={model.dt}, forcing={model.forcing}. Use a smaller time step (--dt, e.g. 0.05) "
            "or the preset's forcing."
        )


def _divergence(cycle: int, problem: str, settings: CycleSettings, bad: np.ndarray) -> FilterDivergenceError:
    """The error raised when a state blew up to non-finite values (``problem`` says which and how)."""
    which = "" if settings.batch == 1 else f" in experiment(s) {np.flatnonzero(bad).tolist()[:10]} of the batch"
    return FilterDivergenceError(
        f"at cycle {cycle}{which} the Lorenz-96 {problem}: the filter diverged. "
        f"Try more members (--members, now {settings.members}; 14 is the minimum without localisation at n=40), "
        "more inflation (--inflation, e.g. 1.04-1.10), a smaller model time step, or another --seed."
    )


def run_cycles(
    model: Lorenz96,
    obs: ObservationOperator,
    method: Assimilator,
    settings: CycleSettings,
    hybrid: HybridSetting | None = None,
    *,
    mask_diverged: bool = False,
) -> CycleOutput:
    """Cycle ``method`` against a truth run and score it.

    Parameters
    ----------
    model : Lorenz96
        The model of both the truth and the forecasts (a perfect-model twin experiment).
    obs : ObservationOperator
        Observation network and error statistics.
    method : Assimilator
        The DA method; its ``window`` and ``steps_per_obs`` set the cycle length.
    settings : CycleSettings
        Cycles, spin-up, members, batch and seed.
    hybrid : HybridSetting, optional
        Replace members ``n_real .. N-1`` of every analysis by the emulator's output; the method then computes
        the ``n_real`` real analyses only (all N for an upper bound, which is handed the others).
    mask_diverged : bool
        Let an experiment of the batch blow up without stopping the others: it is parked on finite values,
        its scores become ``inf`` (``diverged_at_cycle`` says when) and its series NaN from then on.

    Returns
    -------
    CycleOutput
        Time-mean scores, per-cycle series and, when kept, every cycle's members.

    Raises
    ------
    FilterDivergenceError
        When the background or analysis becomes non-finite (unless ``mask_diverged``); the message names the cycle.
    """
    n_members, batch, n = settings.members, settings.batch, model.n
    window, steps_per_obs = int(method.window), int(method.steps_per_obs)
    if hybrid is not None and not 1 <= hybrid.n_real < n_members:
        raise ValueError(
            f"--n-real must be between 1 and members - 1 = {n_members - 1}, got {hybrid.n_real}; "
            "keep at least one real and one emulated member."
        )
    check_memory(
        memory_parts(batch, n_members, n, obs.p, window, settings.cycles, settings.keep_members),
        f"cycling {batch} experiment(s) of {n_members} members for {settings.cycles} cycles",
    )
    # Experiment k draws from SeedSequence(seed + k) only: it is the single run with seed + k.
    streams = experiment_streams(settings.seed, batch)
    truth_rng, obs_rng, init_rng, method_rng, emulator_rng, ranks_rng = (streams[name] for name in STREAMS)
    setup_start = time.perf_counter()
    truth = spin_up_truth(model, batch, settings.truth_spinup_steps, truth_rng)  # [B, n]
    _check_truth(truth, model, "its spin-up")
    ens = truth[:, None, :] + settings.init_spread * init_rng.standard_normal((batch, n_members, n))  # [B, N, n]
    _warm_up(model, obs, _AnalysisStep(method, hybrid, n_members), ens, window)
    start = time.perf_counter()

    block = max(1, min(_MAX_BLOCK, _BLOCK_BYTES // (16 * batch * n_members * n)))
    accumulator = metrics.ScoreAccumulator(spinup=settings.spinup, rng=ranks_rng)  # each experiment's own ties
    series = {k: np.empty((settings.cycles, batch)) for k in SERIES_KEYS}
    kept = _allocate_kept(settings, obs, n_members, n)
    bg_buf = np.empty((block, batch, n_members, n))  # [c, B, N, n]
    an_buf = np.empty((block, batch, n_members, n))  # [c, B, N, n]
    progress = _progress_bar(settings)
    step = _AnalysisStep(method, hybrid, n_members, rtps=settings.rtps)
    lost_at = np.full(batch, -1)  # cycle at which an experiment blew up (mask_diverged), -1 = never
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            for first in range(0, settings.cycles, block):
                count = min(block, settings.cycles - first)
                truth_c, y_c, truth = _truth_block(model, obs, truth, count, window, steps_per_obs, obs_rng)
                _check_truth(truth, model, f"cycles {first}-{first + count}")
                for c in range(count):
                    cycle = first + c
                    xb = ens  # [B, N, n]
                    size = np.abs(xb).max()
                    if mask_diverged and not size <= _LOST_STATE:
                        blown = ~(np.abs(xb).max(axis=(-2, -1)) <= _LOST_STATE)  # NaN rows too
                        xb = _retire(xb, blown, truth_c[c], lost_at, cycle)
                    elif not np.isfinite(size):
                        raise _divergence(
                            cycle,
                            "background became non-finite (NaN or inf)",
                            settings,
                            ~np.isfinite(xb).all(axis=(-2, -1)),
                        )
                    try:
                        xa = step(xb, y_c[c], method_rng, emulator_rng)  # [B, N, n]
                    except (np.linalg.LinAlgError, FloatingPointError, FilterDivergenceError) as err:
                        # Finite but astronomically large members overflow inside the method.
                        problem = f"analysis failed on members as large as {float(size):.3g} ({err})"
                        raise _divergence(cycle, problem, settings, np.ones(batch, bool)) from err
                    if not np.isfinite(xa.sum()):
                        bad = ~np.isfinite(xa).all(axis=(-2, -1))
                        if not mask_diverged:
                            raise _divergence(cycle, "analysis became non-finite (NaN or inf)", settings, bad)
                        xa = _retire(xa, bad, truth_c[c], lost_at, cycle)
                    accumulator.update(xb, xa, truth_c[c])
                    bg_buf[c] = xb
                    an_buf[c] = xa
                    ens = model.forecast(xa, window * steps_per_obs)
                cycles = slice(first, first + count)
                _block_series(series, cycles, bg_buf[:count], an_buf[:count], truth_c)
                if kept is not None:
                    kept["truth"][cycles] = truth_c[:, 0]
                    kept["observations"][cycles] = y_c[:, 0, 0]
                    kept["background"][cycles] = bg_buf[:count, 0]
                    kept["analysis"][cycles] = an_buf[:count, 0]
                progress.update(count)
    finally:
        progress.close()
    wall = time.perf_counter() - start
    return CycleOutput(
        experiments=_mark_lost(accumulator.summaries(), series, lost_at),
        series=series,
        wall_seconds=wall,
        setup_seconds=start - setup_start,
        analysis_seconds=step.analysis_seconds,
        emulation_seconds=step.emulation_seconds,
        analyses_per_cycle=step.n_analyses or n_members,
        **(kept or {}),
    )


class _AnalysisStep:
    """One analysis of the cycle, timed: the method's analyses, then (hybrid) the emulated members.

    A plain cycle asks the method for all N analyses. A hybrid cycle with an emulator asks it for the N_s real
    analyses only (``n_analyses=N_s``): the analyses of the emulated members are never computed, so the
    emulator cannot read them, and the saving shows in ``analysis_seconds``. Only an upper bound
    (:class:`~hybrid_eda.l96.emulators.UpperBound`) makes the cycle compute all N and hands it the hidden ones.
    With ``rtps > 0`` the whole analysis ensemble (real and emulated members together) then has its spread relaxed
    towards the background's (:func:`~hybrid_eda.l96.spread_relaxation.relax_to_prior_spread`).
    """

    def __init__(self, method: Assimilator, hybrid: HybridSetting | None, n_members: int, rtps: float = 0.0) -> None:
        self.method, self.hybrid, self.rtps = method, hybrid, float(rtps)
        self.bound = hybrid is not None and isinstance(hybrid.emulator, UpperBound)
        #: Analyses asked of the method per experiment (None: all N).
        self.n_analyses = None if hybrid is None or self.bound else hybrid.n_real
        self.n_members = n_members
        self.analysis_seconds = 0.0
        self.emulation_seconds = 0.0

    def analyse(self, xb: np.ndarray, y: np.ndarray, rng: Any) -> np.ndarray:
        if self.n_analyses is None:
            return self.method.analyse(xb, y, rng)
        return self.method.analyse(xb, y, rng, n_analyses=self.n_analyses)

    def __call__(self, xb: np.ndarray, y: np.ndarray, method_rng: Any, emulator_rng: Any) -> np.ndarray:
        """``xb [B, N, n]``, ``y [B, L, p]`` -> ``xa [B, N, n]``."""
        return relax_to_prior_spread(xb, self._analyse_all(xb, y, method_rng, emulator_rng), self.rtps)

    def _analyse_all(self, xb: np.ndarray, y: np.ndarray, method_rng: Any, emulator_rng: Any) -> np.ndarray:
        t0 = time.perf_counter()
        xa_method = self.analyse(xb, y, method_rng)  # [B, N, n] or [B, N_s, n]
        t1 = time.perf_counter()
        self.analysis_seconds += t1 - t0
        if self.hybrid is None:
            return xa_method
        n_s = self.hybrid.n_real
        xa = np.empty(xb.shape)  # [B, N, n]
        xa[:, :n_s] = xa_method[:, :n_s]
        if self.bound:
            # The upper bound, and only it, is handed the analyses of the members it stands in for.
            xa[:, n_s:] = self.hybrid.emulator.members(xa_method[:, n_s:], xb[:, n_s:])  # type: ignore[union-attr]
        else:
            xa[:, n_s:] = _emulate(self.hybrid, xb, xa_method, y.copy(), emulator_rng)
        self.emulation_seconds += time.perf_counter() - t1
        return xa


#: In a masked batch, a member this large (or non-finite) means its experiment blew up: Lorenz-96 states stay
#: within about +-20 on the attractor, and an RK4 step from 1e4 overflows within a few steps anyway.
_LOST_STATE = 1e4


def _retire(ens: np.ndarray, bad: np.ndarray, truth: np.ndarray, lost_at: np.ndarray, cycle: int) -> np.ndarray:
    """Mark the experiments ``bad [B]`` lost at ``cycle`` and park them on the truth (finite placeholders).

    The placeholders keep the vectorised batch finite; the lost experiments' scores are replaced by
    :func:`_mark_lost`, and their random streams are their own, so the other experiments are untouched.
    """
    ens = ens.copy()
    new = bad & (lost_at < 0)
    lost_at[new] = cycle
    ens[bad] = truth[bad][:, None, :]
    return ens


def _mark_lost(experiments: list[dict[str, Any]], series: dict[str, np.ndarray], lost_at: np.ndarray) -> list:
    """Scores of experiments that blew up: infinite errors, no histogram, NaN series from the cycle it happened."""
    for b, cycle in enumerate(lost_at):
        e = experiments[b]
        e["diverged_at_cycle"] = None if cycle < 0 else int(cycle)
        if cycle < 0:
            continue
        for key, value in e.items():
            if isinstance(value, float):
                e[key] = np.inf if "ratio" not in key else np.nan
            elif key.endswith("rank_histogram"):
                e[key] = [0] * len(value)
        for values in series.values():
            values[cycle:, b] = np.nan
    return experiments


def _warm_up(model: Lorenz96, obs: ObservationOperator, step: _AnalysisStep, ens: np.ndarray, window: int) -> None:
    """One throw-away analysis and forecast (own generator, copies) so JIT compilation is not timed."""
    y = np.broadcast_to(obs.apply(ens.mean(axis=-2))[:, None, :], (ens.shape[0], window, obs.p))  # [B, L, p]
    with np.errstate(over="ignore", invalid="ignore"):
        model.forecast(step.analyse(ens.copy(), np.ascontiguousarray(y), np.random.default_rng(0)), 1)


def _block_series(
    series: dict[str, np.ndarray], cycles: slice, bg: np.ndarray, an: np.ndarray, truth: np.ndarray
) -> None:
    """Per-cycle RMSE and spread of a block: ``bg, an [c, B, N, n]``, ``truth [c, B, n]`` -> ``series[k][cycles]``."""
    series["analysis_rmse"][cycles] = metrics.rmse_of_mean(an, truth)
    series["analysis_spread"][cycles] = metrics.spread(an)
    series["background_rmse"][cycles] = metrics.rmse_of_mean(bg, truth)
    series["background_spread"][cycles] = metrics.spread(bg)


def _emulate(hybrid: HybridSetting, xb: np.ndarray, xa_real: np.ndarray, y: np.ndarray, rng: Any) -> np.ndarray:
    """Members ``N_s .. N-1`` from the emulator.

    ``xb [B, N, n]`` all backgrounds, ``xa_real [B, N_s, n]`` the real analyses (the only ones computed),
    ``y [B, L, p]`` the window's observations; returns ``[B, N - N_s, n]``.
    """
    n_s, n_emulated = hybrid.n_real, xb.shape[-2] - hybrid.n_real
    emulator = hybrid.emulator
    if getattr(emulator, "supports_batch", True):
        return emulator.generate(  # type: ignore[union-attr]
            xb[:, n_s:], xa_real, n_emulated, rng, guide_backgrounds=xb[:, :n_s], observations=y
        )
    return np.stack(
        [
            emulator.generate(  # type: ignore[union-attr]
                xb[b, n_s:],
                xa_real[b],
                n_emulated,
                rng[b],  # experiment b's own stream
                guide_backgrounds=xb[b, :n_s],
                observations=y[b],
            )
            for b in range(xb.shape[0])
        ]
    )


def memory_parts(
    batch: int, members: int, n: int, p: int, window: int, cycles: int, keep_members: bool = False
) -> dict[str, int]:
    """Estimated peak memory of :func:`run_cycles` in bytes, by the arrays it and the methods allocate.

    ``ensembles [B, N, n]``: those alive in a cycle (background, analysis, forecast, the method's copies, ~6) and
    the two block buffers; ``method work``: the filters' ``[B, N, N]`` transforms, or 4D-Var's ``[B, N, m, L p]``
    and ``[B, N, m, m]`` matrices (``m = n + N``, a hybrid B); ``truth and observations`` of a block; the
    per-cycle ``series [T, B]``; with ``keep_members``, the ``archive`` ``2 x [T, N, n]``.
    """
    f8 = 8
    ens = batch * members * n * f8
    block = max(1, min(_MAX_BLOCK, _BLOCK_BYTES // max(1, 2 * ens)))
    if window > 1 or members == 1:  # 4D-Var: tangent-linear columns, G and the Gauss-Newton Hessians
        m = n + members
        work_name = f"4D-Var matrices [B, N, m, m] = [{batch}, {members}, {m}, {m}]"
        work = 3 * batch * members * m * (window * p + m + n) * f8
    else:
        work_name = f"the filter's transforms [B, N, N] = [{batch}, {members}, {members}]"
        work = 6 * batch * members * members * f8
    parts = {
        f"ensembles [B, N, n] = [{batch}, {members}, {n}]": (6 + 2 * block) * ens,
        work_name: work,
        "truth and observations of a block": batch * block * window * (n + 2 * p) * f8,
        f"series [T, B] = [{cycles}, {batch}]": 5 * cycles * batch * f8,
    }
    if keep_members:
        parts[f"archive 2 x [T, N, n] = [{cycles}, {members}, {n}]"] = cycles * (2 * members * n + n + p) * f8
    return parts


def estimate_memory_bytes(
    batch: int, members: int, n: int, p: int, window: int, cycles: int, keep_members: bool = False
) -> int:
    """Total of :func:`memory_parts`: the estimated peak memory of :func:`run_cycles` in bytes."""
    return int(sum(memory_parts(batch, members, n, p, window, cycles, keep_members).values()))


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation now (psutil, else ``sysconf``); ``None`` when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError):  # pragma: no cover - psutil ships with anemoi
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None


def check_memory(parts: dict[str, int], what: str) -> None:
    """Refuse, before allocating, a run whose estimated memory (:func:`memory_parts`) exceeds what is available.

    Raises
    ------
    ValueError
        Naming the estimate, its largest part and the fix.
    """
    needed, available = sum(parts.values()), available_memory_bytes()
    if available is not None and needed > available:
        largest = max(parts, key=parts.__getitem__)
        raise ValueError(
            f"{what} needs about {_gib(needed)} of memory ({largest}: {_gib(parts[largest])}) but only "
            f"{_gib(available)} is available; lower --members or --batch (or --cycles, with --archive)."
        )


def _gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB"


def _allocate_kept(
    settings: CycleSettings, obs: ObservationOperator, n_members: int, n: int
) -> dict[str, np.ndarray] | None:
    """Arrays for every cycle's truth, first observation time and members (batch 1 only)."""
    if not settings.keep_members:
        return None
    t = settings.cycles
    return {
        "truth": np.empty((t, n)),
        "observations": np.empty((t, obs.p)),
        "background": np.empty((t, n_members, n)),
        "analysis": np.empty((t, n_members, n)),
    }


class _NoProgress:
    def update(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(settings: CycleSettings):
    """A tqdm bar on stderr when asked for and stderr is a terminal, else a no-op."""
    if not settings.progress or not sys.stderr.isatty():
        return _NoProgress()
    import shutil

    from tqdm import tqdm

    # Explicit width: tqdm's own probe reports 0 columns on some pseudo-terminals and then prints nothing.
    width = shutil.get_terminal_size((100, 24)).columns or 100
    return tqdm(
        total=settings.cycles, unit="cycle", desc="L96 cycling", file=sys.stderr, mininterval=0.5, ncols=min(width, 120)
    )
