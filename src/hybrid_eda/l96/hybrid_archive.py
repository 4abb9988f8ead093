"""Record a Lorenz-96 cycle as EDA archives, one per seed; a hybrid cycle with the full filter's analyses as targets.

DAgger-style training data for the member generator: a generator trained on the full EDA's archive sees, in the
hybrid cycle, backgrounds that the hybrid itself produced (forecasts of N_s real and N - N_s emulated analyses),
a distribution it was never trained on. :func:`record_archives` runs the hybrid cycle of ``config`` (its
``emulator``, e.g. ``generator:checkpoint=PATH``, and ``n_real``) exactly as
:func:`~hybrid_eda.l96.experiment.run_experiment` does, and at every cycle ``t`` keeps::

    background[t]   xb          [N, n]   the N backgrounds the hybrid cycle had (members 0 .. N_s-1 real)
    analysis[t]     A(xb, y)    [N, n]   the FULL filter's analyses of all N members from those backgrounds:
                                         same observations, each member its own perturbation drawn as the
                                         filter draws them (from a copy of the cycle's method stream)
    observations[t] y           [p]      the first observation time of the window
    truth[t]                    [n]

The cycle itself continues with the hybrid ensemble (N_s real analyses + emulated members): the full analysis is
computed on the side, from a copy of the method's random stream, so the recorded backgrounds are bit for bit those
of ``run_experiment`` with the same config (tested). For a deterministic filter (ETKF) the first N_s targets are
the hybrid's real analyses; for the perturbed-observation EnKF they share the first N_s x p normals of the draw
but are centred over all N members instead of the N_s real ones. Without an emulator the archive is the plain EDA
(targets = the analyses the cycle used), for any batch.

Every experiment of the batch (seeds ``seed .. seed + batch - 1``) gives one archive; a seed that loses track is
refused (its backgrounds would be placeholders). :meth:`~hybrid_eda.l96.archive.EDAArchive.concatenate` joins
several into one training archive.

Glossary: ``T`` cycles, ``B`` experiments (seeds), ``N`` members, ``N_s`` real members, ``n`` state size,
``L`` observation times per window, ``p`` observations per time.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from hybrid_eda.l96.archive import EDAArchive
from hybrid_eda.l96.base import Assimilator
from hybrid_eda.l96.config import ExperimentConfig
from hybrid_eda.l96.cycle import CycleSettings, HybridSetting, run_cycles
from hybrid_eda.l96.eda_record import truth_trajectory
from hybrid_eda.l96.emulators import UpperBound, get_member_source
from hybrid_eda.l96.methods import method_spec

__all__ = ["FullTargetRecorder", "record_archives"]


class FullTargetRecorder(Assimilator):
    """Runs ``method`` unchanged for the cycle and keeps, per call, the backgrounds and the full filter's analyses.

    When the cycle asks for ``n_analyses = N_s`` analyses (a hybrid cycle), the full N-member analysis is computed
    first from a deep copy of ``rng``, so the cycle's own stream advances exactly as without the recorder.

    Parameters
    ----------
    method : Assimilator
        The EDA (ETKF, EnKF, 4D-Var EDA).
    """

    def __init__(self, method: Assimilator) -> None:
        super().__init__(method.model, method.obs)
        self.method = method
        self.window, self.steps_per_obs = method.window, method.steps_per_obs
        #: One dict per call: ``background [B, N, n]``, ``analysis [B, N, n]``, ``observations [B, p]``.
        self.calls: list[dict[str, np.ndarray]] = []

    def analyse(
        self, background: np.ndarray, observations: np.ndarray, rng: Any, *, n_analyses: int | None = None
    ) -> np.ndarray:
        """Record, then ``method.analyse``: ``[B, N, n], [B, L, p] -> [B, N or N_s, n]``."""
        xb = np.array(background, dtype=float)
        if n_analyses is None or n_analyses == xb.shape[-2]:
            out = self.method.analyse(background, observations, rng)
            full = out
        else:
            full = self.method.analyse(background, observations, copy.deepcopy(rng))
            out = self.method.analyse(background, observations, rng, n_analyses=n_analyses)
        self.calls.append(
            {
                "background": xb,
                "analysis": np.array(full, dtype=float),
                "observations": np.array(np.asarray(observations)[..., 0, :], dtype=float),
            }
        )
        return out


def record_archives(config: ExperimentConfig) -> list[EDAArchive]:
    """Cycle ``config`` (full EDA or hybrid) and return one :class:`EDAArchive` per seed of its batch.

    Parameters
    ----------
    config : ExperimentConfig
        The cycle: method, members N, inflation, cycles, seed and batch; with ``emulator`` and ``n_real``, the
        hybrid cycle whose backgrounds are kept (targets: the full filter's analyses of them).

    Returns
    -------
    list of EDAArchive
        ``config.batch`` archives of ``config.cycles`` cycles each (spin-up included), ``background`` and
        ``analysis`` ``[T, N, n]``; ``settings`` records the config, the seed and what the targets are.

    Raises
    ------
    ValueError
        For an upper bound (``oracle``) or an emulator that shrinks the ensemble (``none``): they have no hybrid
        backgrounds to learn from; and when a seed loses track, naming it and the fix.
    """
    hybrid = None
    if config.emulator is not None:
        source = get_member_source(config.emulator)
        if source.reduces_ensemble or isinstance(source, UpperBound):
            raise ValueError(
                f"recording a hybrid archive needs an emulator of members, got {config.emulator!r} (an upper bound "
                "or the N_s-member EDA); use a generator checkpoint, `generator:untrained=true` or e.g. `gaussian`."
            )
        hybrid = HybridSetting(n_real=int(config.n_real), emulator=source)  # type: ignore[arg-type]
    recorder = FullTargetRecorder(method_spec(config.method).build(config))  # type: ignore[arg-type]
    settings = CycleSettings.from_experiment(config)
    model = config.model()
    output = run_cycles(model, config.observations(), recorder, settings, hybrid=hybrid, mask_diverged=True)
    calls = recorder.calls[1:]  # the first call is run_cycles' warm-up
    if len(calls) != settings.cycles:
        raise RuntimeError(f"recorded {len(calls)} cycles, expected {settings.cycles}: the harness changed.")
    lost = {config.seed + b: e["diverged_at_cycle"] for b, e in enumerate(output.experiments)}
    lost = {seed: cycle for seed, cycle in lost.items() if cycle is not None}
    if lost:
        raise ValueError(
            f"seed(s) {sorted(lost)} lost track (at cycle(s) {[lost[s] for s in sorted(lost)]}) while recording "
            f"{config.emulator or 'the full EDA'} with inflation {config.inflation}: their backgrounds would be "
            "placeholders. Raise `inflation`, use more `n_real`, or record other seeds."
        )
    stacked = {key: np.stack([c[key] for c in calls]) for key in calls[0]}  # [T, B, ...]
    cycle_steps = int(config.window) * int(config.steps_per_obs)  # type: ignore[arg-type]
    truth = truth_trajectory(
        model, config.seed, config.batch, settings.cycles * cycle_steps, settings.truth_spinup_steps
    )[::cycle_steps][: settings.cycles]  # [T, B, n]
    targets = "the analyses the cycle used" if hybrid is None else "full-filter analyses of the hybrid backgrounds"
    common = config.to_dict() | {"targets": targets, "recorded_by": "hybrid_eda.l96.hybrid_archive"}
    return [
        EDAArchive(
            truth=truth[:, b],
            observations=stacked["observations"][:, b],
            obs_index=config.observations().index,
            background=stacked["background"][:, b],
            analysis=stacked["analysis"][:, b],
            settings=common | {"seed": config.seed + b, "batch": 1, "batch_seed": config.seed},
            cycle_hours=max(1, round(6 * cycle_steps * float(config.dt) / 0.05)),  # type: ignore[arg-type]
        )
        for b in range(config.batch)
    ]
