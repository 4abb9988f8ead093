"""Cycle deterministic 4D-Vars fed with given variances against a recorded EDA pass, and verify their forecasts.

Each control ``k`` runs, on the recorded seeds, truth and observations of an
:class:`~hybrid_eda.l96.eda_record.EDARecord`::

    xa_k(t)   = 4D-Var(xb_k(t), y(t); B = D^1/2 C D^1/2),    D = s D_k(t)
    xb_k(t+1) = M^{window * steps_per_obs}(xa_k(t))

with one fixed correlation ``C`` and one scale ``s`` for all controls; the variances ``D_k`` come from a
:class:`~hybrid_eda.l96.variance_sources.VarianceSource`. All controls start from the EDA's background mean at
cycle 0 and see exactly the observations the EDA assimilated, so their differences are paired cycle by cycle.
The controls do not feed back into the EDA, which is why they can be cycled after it (and an emulator row be
added without re-running the EDA).

Forecast errors: from every scored cycle's control analysis, RMSE over variables against the truth at lead
``l`` model steps (lead 0 = the analysis; one step = 6 h for ``dt = 0.05``).

Glossary: ``K`` controls, ``T`` cycles, ``B`` seeds, ``n`` state size, ``L`` observation times, ``p``
observations per time, ``T_s`` scored cycles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hybrid_eda.l96.eda_record import EDARecord
from hybrid_eda.l96.var4d_given_b import Var4DGivenB

__all__ = ["ControlRun", "cycle_controls", "forecast_errors"]

#: A control state this large (or non-finite) has blown up (Lorenz-96 stays within about +-20).
_LOST_STATE = 1e4


@dataclass
class ControlRun:
    """Analyses of ``K`` controls cycled against one EDA record.

    Attributes
    ----------
    analysis : np.ndarray
        ``[T, K, B, n]`` control analyses at every window start.
    lost_at : np.ndarray
        ``[K, B]`` cycle at which a control blew up (then parked on the truth), -1 = never.
    wall_seconds : float
        Time the cycling took.
    """

    analysis: np.ndarray
    lost_at: np.ndarray
    wall_seconds: float


def cycle_controls(record: EDARecord, method: Var4DGivenB, variances: np.ndarray) -> ControlRun:
    """Cycle ``K`` deterministic 4D-Vars with variances ``[K, T, B, n]`` (already scaled) over ``record``.

    ``method`` must have the EDA's window and steps per observation; its correlation is the fixed ``C``.
    """
    d = np.asarray(variances, dtype=float)
    n_cycles, batch, n = record.variance.shape
    if d.ndim != 4 or d.shape[1:] != (n_cycles, batch, n):
        raise ValueError(f"variances must be [K, T, B, n] = [K, {n_cycles}, {batch}, {n}], got shape {d.shape}.")
    cycle_steps = int(record.settings["cycle_steps"])
    if method.window * method.steps_per_obs != cycle_steps or method.window != record.observations.shape[-2]:
        raise ValueError(
            f"the control's window ({method.window} x {method.steps_per_obs} steps) must be the EDA's "
            f"({record.observations.shape[-2]} observation times, {cycle_steps} steps per cycle)."
        )
    k = d.shape[0]
    start = time.perf_counter()
    xb = np.broadcast_to(record.background_mean[0], (k, batch, n)).copy()  # [K, B, n]
    analysis = np.empty((n_cycles, k, batch, n))
    lost_at = np.full((k, batch), -1)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(n_cycles):
            blown = ~(np.abs(xb).max(axis=-1) <= _LOST_STATE)  # [K, B], NaN rows too
            if blown.any():
                lost_at[blown & (lost_at < 0)] = t
                xb[blown] = np.broadcast_to(record.truth[t * cycle_steps], (k, batch, n))[blown]
            y = np.broadcast_to(record.observations[t], (k,) + record.observations.shape[1:])  # [K, B, L, p]
            xa = method.analyse(xb[..., None, :], y, variances=d[:, t])[..., 0, :]  # [K, B, n]
            analysis[t] = xa
            xb = method.model.forecast(xa, cycle_steps)
    return ControlRun(analysis=analysis, lost_at=lost_at, wall_seconds=time.perf_counter() - start)


def forecast_errors(
    record: EDARecord, run: ControlRun, model_forecast, leads: tuple[int, ...], spinup: int
) -> np.ndarray:
    """RMSE over variables of forecasts from the scored analyses at ``leads`` model steps.

    Parameters
    ----------
    record : EDARecord
        Its truth must reach ``leads`` past the last cycle (``record_eda(..., extra_steps=max(leads))``).
    run : ControlRun
        The controls' analyses.
    model_forecast : callable
        ``(x [..., n], steps) -> [..., n]``, e.g. ``Lorenz96.forecast``.
    leads : tuple of int
        Non-negative, increasing lead times in model steps (0 = the analysis).
    spinup : int
        First cycles not scored.

    Returns
    -------
    np.ndarray
        ``[len(leads), K, B, T_s]`` per-cycle RMSE.
    """
    leads = tuple(int(v) for v in leads)
    if any(b <= a for a, b in zip(leads, leads[1:], strict=False)) or leads[0] < 0:
        raise ValueError(f"leads must be increasing non-negative model steps, got {leads}; use e.g. 0,1,2,4,8,20.")
    cycle_steps = int(record.settings["cycle_steps"])
    n_cycles = run.analysis.shape[0]
    steps = np.arange(spinup, n_cycles) * cycle_steps  # [T_s]
    if steps[-1] + leads[-1] >= record.truth.shape[0]:
        raise ValueError(
            f"the record's truth ends at step {record.truth.shape[0] - 1}; lead {leads[-1]} from the last cycle "
            f"needs step {steps[-1] + leads[-1]}: record with extra_steps >= {leads[-1]}."
        )
    x = run.analysis[spinup:]  # [T_s, K, B, n]
    out = np.empty((len(leads),) + x.shape[1:3] + (x.shape[0],))
    done = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for i, lead in enumerate(leads):
            if lead > done:
                x = model_forecast(x, lead - done)
                done = lead
            truth = record.truth[steps + lead][:, None]  # [T_s, 1, B, n]
            out[i] = np.sqrt(np.mean((x - truth) ** 2, axis=-1)).transpose(1, 2, 0)  # [K, B, T_s]
    return out
