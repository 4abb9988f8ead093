"""Record what an EDA hands a variance-fed 4D-Var each cycle: observations, N-member variances, M members, truth.

The EDA is cycled by the testbed's own harness (:func:`hybrid_eda.l96.cycle.run_cycles`); a thin
:class:`RecordingAssimilator` around the method keeps, at every window start,

    observations     y         [T, B, L, p]   (exactly the ones the EDA assimilated)
    variance         var_N(xb) [T, B, n]      unbiased (N - 1) variance of all N background members
    members          xb[:M]    [T, B, M, n]   the first M background members (a raw M-member EDA: the members
                                              of a perturbed-observation EDA are exchangeable)
    background_mean  mean(xb)  [T, B, n]

and the mean background covariance over the cycles from ``spinup`` on (``[B, n, n]``, for a static correlation).
The truth is regenerated at every model step from each experiment's own truth stream
(:func:`truth_trajectory`, bit for bit the truth of ``run_cycles``, tested), so a forecast from any cycle can be
verified at any lead.

Glossary: ``T`` cycles, ``B`` experiments (seeds), ``N`` EDA members, ``M`` subset size, ``n`` state size,
``L`` observation times per window, ``p`` observations per time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.l96.base import Assimilator
from hybrid_eda.l96.config import ExperimentConfig
from hybrid_eda.l96.cycle import CycleSettings, run_cycles, spin_up_truth
from hybrid_eda.l96.methods import method_spec
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.seeding import experiment_streams

__all__ = ["EDARecord", "RecordingAssimilator", "record_eda", "truth_trajectory"]


class RecordingAssimilator(Assimilator):
    """Runs ``method`` unchanged and keeps, per call, the inputs a variance-fed control needs.

    Parameters
    ----------
    method : Assimilator
        The EDA (e.g. :class:`~hybrid_eda.l96.var4d.Var4DEDA`).
    subset : int
        Number ``M`` of leading background members kept.
    spinup : int
        Calls (cycles) before the background covariance starts being averaged.
    """

    def __init__(self, method: Assimilator, subset: int, spinup: int = 0) -> None:
        super().__init__(method.model, method.obs)
        self.method, self.subset, self.spinup = method, int(subset), int(spinup)
        self.window, self.steps_per_obs = method.window, method.steps_per_obs
        self.calls: list[dict[str, np.ndarray]] = []
        self._cov_sum: np.ndarray | None = None
        self._cov_count = 0

    def analyse(
        self, background: np.ndarray, observations: np.ndarray, rng: Any, *, n_analyses: int | None = None
    ) -> np.ndarray:
        """Record, then ``method.analyse``: ``[B, N, n], [B, L, p] -> [B, N, n]``."""
        xb = np.asarray(background, dtype=float)
        anomalies = xb - xb.mean(axis=-2, keepdims=True)  # [B, N, n]
        self.calls.append(
            {
                "observations": np.array(observations, dtype=float),
                "variance": xb.var(axis=-2, ddof=1),
                "members": xb[..., : self.subset, :].copy(),
                "background_mean": xb.mean(axis=-2),
            }
        )
        # The first call is run_cycles' warm-up (dropped by record_eda), so cycle c is call c + 1.
        if len(self.calls) > self.spinup + 1:
            cov = np.einsum("...ki,...kj->...ij", anomalies, anomalies) / (xb.shape[-2] - 1)  # [B, n, n]
            self._cov_sum = cov if self._cov_sum is None else self._cov_sum + cov
            self._cov_count += 1
        if n_analyses is None:
            return self.method.analyse(background, observations, rng)
        return self.method.analyse(background, observations, rng, n_analyses=n_analyses)

    def mean_covariance(self) -> np.ndarray | None:
        """``[B, n, n]`` mean background covariance over the recorded cycles from ``spinup`` on."""
        return None if self._cov_sum is None else self._cov_sum / self._cov_count


@dataclass
class EDARecord:
    """One recorded EDA pass over ``B`` seeds (arrays as in the module docstring).

    Attributes
    ----------
    observations, variance, members, background_mean : np.ndarray
        ``[T, B, L, p]``, ``[T, B, n]``, ``[T, B, M, n]``, ``[T, B, n]``.
    mean_covariance : np.ndarray
        ``[B, n, n]`` mean background covariance over the cycles from ``spinup`` on.
    truth : np.ndarray
        ``[T * cycle_steps + extra_steps + 1, B, n]`` truth at every model step from cycle 0.
    eda_analysis_rmse : np.ndarray
        ``[T, B]`` analysis RMSE of the EDA mean (the harness's series).
    lost_at : np.ndarray
        ``[B]`` cycle at which an EDA blew up (-1: never).
    settings : dict
        The EDA's :class:`~hybrid_eda.l96.config.ExperimentConfig` and the subset size.
    wall_seconds : float
        Time the EDA cycling took.
    """

    observations: np.ndarray
    variance: np.ndarray
    members: np.ndarray
    background_mean: np.ndarray
    mean_covariance: np.ndarray
    truth: np.ndarray
    eda_analysis_rmse: np.ndarray
    lost_at: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def cycles(self) -> int:
        return int(self.variance.shape[0])

    @property
    def seeds(self) -> list[int]:
        first = int(self.settings["seed"])
        return list(range(first, first + self.variance.shape[1]))

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (arrays, settings as JSON); returns the path."""
        path = Path(path)
        arrays = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)}
        np.savez(path, **arrays, meta=json.dumps({"settings": self.settings, "wall_seconds": self.wall_seconds}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EDARecord:
        with np.load(Path(path)) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in data.files if k != "meta"}
        return cls(**arrays, settings=meta["settings"], wall_seconds=meta["wall_seconds"])


def truth_trajectory(model: Lorenz96, seed: int, batch: int, n_steps: int, truth_spinup_steps: int) -> np.ndarray:
    """The truth of ``run_cycles`` (same seed, batch, spin-up) at every model step from cycle 0.

    Returns ``[n_steps + 1, B, n]``; row ``c * window * steps_per_obs`` is the truth at cycle ``c``.
    """
    rng = experiment_streams(seed, batch)["truth"]
    x = spin_up_truth(model, batch, truth_spinup_steps, rng)  # [B, n]
    out = np.empty((n_steps + 1,) + x.shape)
    out[0] = x
    for step in range(n_steps):
        out[step + 1] = x = model.forecast(x, 1)
    return out


def record_eda(config: ExperimentConfig, subset: int, extra_steps: int = 0) -> EDARecord:
    """Cycle the EDA of ``config`` (all ``config.batch`` seeds) with :func:`run_cycles` and record it.

    Parameters
    ----------
    config : ExperimentConfig
        The EDA (method, members N, inflation, window, B, cycles, spin-up, seed, batch = seeds).
    subset : int
        Number ``M`` of leading background members kept (``2 <= M <= N``).
    extra_steps : int
        Truth steps kept after the last cycle (the longest forecast lead to verify).
    """
    if not 2 <= subset <= int(config.members):  # type: ignore[operator]
        raise ValueError(
            f"the subset must have 2 <= M <= N = {config.members} members to give a variance, got M={subset}."
        )
    method = RecordingAssimilator(method_spec(config.method).build(config), subset, spinup=int(config.spinup))
    settings = CycleSettings.from_experiment(config)
    model = config.model()
    output = run_cycles(model, config.observations(), method, settings, mask_diverged=True)
    calls = method.calls[1:]  # the first call is run_cycles' warm-up
    if len(calls) != settings.cycles:
        raise RuntimeError(f"recorded {len(calls)} cycles, expected {settings.cycles}: the harness changed.")
    cycle_steps = int(config.window) * int(config.steps_per_obs)  # type: ignore[arg-type]
    stacked = {k: np.stack([c[k] for c in calls]) for k in calls[0]}
    n_steps = settings.cycles * cycle_steps + int(extra_steps)
    truth = truth_trajectory(model, config.seed, config.batch, n_steps, settings.truth_spinup_steps)
    lost = [e.get("diverged_at_cycle") for e in output.experiments]
    return EDARecord(
        **stacked,
        mean_covariance=method.mean_covariance(),  # type: ignore[arg-type]
        truth=truth,
        eda_analysis_rmse=output.series["analysis_rmse"],
        lost_at=np.array([-1 if c is None else c for c in lost]),
        settings=config.to_dict() | {"subset": int(subset), "cycle_steps": cycle_steps},
        wall_seconds=output.wall_seconds,
    )
