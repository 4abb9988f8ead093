"""Run a Lorenz-96 experiment: :func:`run_experiment` cycles an :class:`ExperimentConfig` and scores it.

    config = ExperimentConfig.from_preset("sakov2008", members=20, inflation=1.02, cycles=10_000, seed=3)
    result = run_experiment(config)             # full EDA
    result.summary()["analysis_rmse"]           # ~0.18

The config lives in :mod:`hybrid_eda.l96.config`, the DA methods in :mod:`hybrid_eda.l96.methods`, the hybrid EDA
against the full one (:func:`~hybrid_eda.l96.hybrid.run_hybrid`, :func:`~hybrid_eda.l96.hybrid.run_table`) in
:mod:`hybrid_eda.l96.hybrid`. ``ExperimentConfig`` is importable from here too, beside the runner that takes it
(the ``run:`` parameters of the anemoi-datasets source read both from this module).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybrid_eda.l96.archive import EDAArchive
from hybrid_eda.l96.config import ExperimentConfig
from hybrid_eda.l96.cycle import CycleOutput, CycleSettings, HybridSetting, run_cycles
from hybrid_eda.l96.emulators import get_member_source
from hybrid_eda.l96.methods import method_spec
from hybrid_eda.l96.seed_stats import SeedDistribution

__all__ = ["ExperimentConfig", "ExperimentResult", "run_experiment"]

LOGGER = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    """One experiment's configuration, cycling output and (optionally) EDA archive.

    Attributes
    ----------
    config : ExperimentConfig
        What was run.
    output : CycleOutput
        Scores (one dict per experiment of the batch), per-cycle series and timings.
    archive : EDAArchive or None
        Every cycle's members, truth and observations when asked for (``archive=True``).
    method : str
        ``repr`` of the method object.
    """

    config: ExperimentConfig
    output: CycleOutput
    archive: EDAArchive | None = None
    method: str = ""

    @property
    def cycles_per_second(self) -> float:
        return self.config.cycles / max(self.output.wall_seconds, 1e-12)

    def score(self, key: str) -> float:
        """Batch mean of a time-mean score, e.g. ``score("analysis_rmse")``."""
        return float(np.mean([e[key] for e in self.output.experiments]))

    def seed_distribution(self, key: str = "analysis_rmse") -> SeedDistribution:
        """A time-mean score of every experiment (seed) of the batch: median, band and the fraction that lost track."""
        return SeedDistribution.of([e[key] for e in self.output.experiments])

    def summary(self) -> dict[str, Any]:
        """The JSON summary (scores, spin-up, settings, timings, versions)."""
        from hybrid_eda.l96.report import run_summary

        return run_summary(self)


def run_experiment(
    config: ExperimentConfig, archive: bool = False, progress: bool = False, *, mask_diverged: bool = False
) -> ExperimentResult:
    """Run one experiment (or a batch) and score it.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment; with ``emulator`` set, the hybrid cycle (``none`` runs an ``n_real``-member EDA).
    archive : bool
        Keep every cycle's background and analysis members, the truth and the observations as an
        :class:`~hybrid_eda.l96.archive.EDAArchive` (``result.archive``; batch 1 only).
    progress : bool
        Show a progress bar when stderr is a terminal.
    mask_diverged : bool
        An experiment of the batch that blows up is recorded as lost (``inf`` scores, ``diverged_at_cycle``)
        instead of stopping the batch (the distributions over seeds of :mod:`hybrid_eda.l96.hybrid`).

    Raises
    ------
    FilterDivergenceError
        When the state became non-finite (unless ``mask_diverged``); the message names the cycle and what to try.
    """
    spec = method_spec(config.method)
    members, hybrid = config.members, None
    if config.emulator is not None:
        emulator = get_member_source(config.emulator)
        if emulator.reduces_ensemble:
            members = int(config.n_real)  # type: ignore[arg-type]
        else:
            hybrid = HybridSetting(n_real=int(config.n_real), emulator=emulator)  # type: ignore[arg-type]
    if archive and config.batch != 1:
        raise ValueError("an EDA archive keeps a single experiment; drop --batch or --archive.")
    method = spec.build(config)
    settings = CycleSettings.from_experiment(config, members=members, keep_members=archive, progress=progress)
    LOGGER.debug("cycling %s for %d cycles (%s)", method, config.cycles, config)
    output = run_cycles(
        config.model(), config.observations(), method, settings, hybrid=hybrid, mask_diverged=mask_diverged
    )
    result = ExperimentResult(config=config, output=output, method=repr(method))
    if archive:
        result.archive = _build_archive(result)
    return result


def _build_archive(result: ExperimentResult) -> EDAArchive:
    """The run's kept members, truth and observations as an archive (6 h of cycle time per 0.05 model time units)."""
    config, out = result.config, result.output
    cycle_steps = config.window * config.steps_per_obs
    settings = result.config.to_dict() | {"method_repr": result.method}
    return EDAArchive(
        truth=out.truth,  # type: ignore[arg-type]
        observations=out.observations,  # type: ignore[arg-type]
        obs_index=config.observations().index,
        background=out.background,  # type: ignore[arg-type]
        analysis=out.analysis,  # type: ignore[arg-type]
        settings=settings,
        cycle_hours=max(1, round(6 * cycle_steps * config.dt / 0.05)),
    )
