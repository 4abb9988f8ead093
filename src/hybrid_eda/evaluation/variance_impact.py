"""Emulated variances inside the analysis: the exact linear analysis of the synthetic global EDA with ``B`` from
four sources of background-error std, scored against the known truth.

For every held-out date and field (variable ``v`` at model level ``k``) a *control* background

    x_b = x_t + e_b,   e_b = sigma_b u,

``u`` a fresh unit-variance draw of the known error correlation (the variable's spectrum ``C_l``, AR(1) between
levels as the EDA's members; independent of the members: the high-resolution background is another
realisation), is analysed with the EDA's own observations of that date (``y = H x_t + eps_o``: the same points
and the same errors the members assimilated) by the exact linear update

    x_a = x_b + B_s H^T (H B_s H^T + R)^-1 (y - H x_b),   B_s = D_s C D_s,   D_s = diag(std of source s),

and scored by its area-weighted mean squared error ``|x_a - x_t|^2``. The sources ``s`` of the std:

==================  ========================================================================================
``sigma_b``         the true background-error std: ``B_s = B``, the BLUE (what is left to gain)
``ensemble_N``      the std (``ddof=1``) of the ``N`` members (the operational reference, 50 at ECMWF)
``raw_M``           the std of the first ``M`` members (the members the emulator sees)
``emulator``        the emulator fed by those ``M`` members: its predictive mean of ``s_N`` (the MSE-optimal
                    estimate of the reference std, what ``evaluate variance`` scores)
``emulator_median`` the same emulator's predictive median (``exp(mu)`` for the log-normal head; lower than the
                    mean by ``exp(sigma^2 / 2)``): how much the choice of point matters
==================  ========================================================================================

Everything else is shared: the control backgrounds (``draws`` per date, common to all sources, so the sources'
differences are far less noisy than their levels), the observations, ``C`` and ``R``. Only errors enter the
update (``y - H x_b = eps_o - H e_b``), so it is :func:`~hybrid_eda.synthetic.analysis.perturbed_obs_update`
with zero perturbations: ``S_s = D_s,o C_oo D_s,o + R`` is factorised once per source and field for all draws.
As in the EDA, the update uses the observations of the same level only (the exact BLUE per level).

    result = run_variance_impact(config_from_manifest(manifest), n=50, m=5, predictor=predictor, draws=8)
    result.analysis_mse      # [date, source, field] area-weighted MSE of x_a (mean over draws)
    result.background_mse    # [date, field] the same of x_b

The scores (normalised changes against ``ensemble_N`` per variable and level group, with confidence intervals
across dates) are in :mod:`~hybrid_eda.evaluation.variance_impact_scores`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from hybrid_eda.errors import UserInputError

__all__ = [
    "SOURCES",
    "ImpactResult",
    "LevelAnalysis",
    "check_impact_settings",
    "control_background_errors",
    "run_variance_impact",
]

LOGGER = logging.getLogger(__name__)

#: Sources of the std in ``B_s``, in table order (module docstring); the emulator rows only with a predictor.
SOURCES = ("sigma_b", "ensemble_N", "raw_M", "emulator", "emulator_median")
#: Stream purpose of the control backgrounds (the EDA's own streams use 0..3 after its seed).
_CONTROL = 11


@dataclass(frozen=True, eq=False)
class LevelAnalysis:
    """The linear analysis of one field with ``B_s = D_s C D_s``: what every source shares.

    Attributes
    ----------
    transform : SphericalTransform
    spectrum : np.ndarray
        ``[lmax+1]`` unit-variance spectrum of ``C``.
    correlations : np.ndarray
        ``[p, p]`` ``C`` between the observed points.
    obs_index : np.ndarray
        ``[p]`` observed grid points.
    obs_std : np.ndarray
        ``[p]`` observation-error std (``R = diag(obs_std^2)``).
    """

    transform: Any
    spectrum: np.ndarray
    correlations: np.ndarray
    obs_index: np.ndarray
    obs_std: np.ndarray

    def errors(self, std: np.ndarray, background_errors: np.ndarray, obs_error: np.ndarray) -> np.ndarray:
        """Analysis errors ``x_a - x_t`` ``[K, G]`` for ``B = D C D``, ``D = diag(std [G])``.

        ``background_errors [K, G]`` are ``x_b - x_t``; ``obs_error`` is ``y - H x_t``, ``[p]`` (one set of
        observations for all ``K`` backgrounds) or ``[K, p]`` (one each). One Cholesky factorisation of
        ``S = D_o C_oo D_o + R`` for all ``K``.
        """
        from hybrid_eda.synthetic.analysis import perturbed_obs_update

        std = np.asarray(std, dtype=np.float64)
        if not np.all(np.isfinite(std)) or np.any(std <= 0):
            raise ValueError("the std of B must be positive and finite at every point; floor it before the analysis.")
        shared = np.zeros(self.obs_index.size)
        each = np.broadcast_to(obs_error, (background_errors.shape[0], self.obs_index.size))  # [K, p]
        return perturbed_obs_update(self.transform, self.spectrum, self.correlations, self.obs_index, std,
                                    self.obs_std, background_errors, shared, each)  # fmt: skip


def control_background_errors(
    eda, state, param: str, draws: int, seed: int
) -> tuple[tuple[int, ...], Callable[[int, np.ndarray], np.ndarray]]:
    """Control-background errors of ``param`` at one date: ``draws`` fresh realisations of the known statistics.

    Returns the model levels of ``param`` and ``errors(level, sigma_b [G]) -> [draws, G]``, to be called level
    by level in order (the unit fields are AR(1) between levels with the EDA's ``vertical_rho``, as its members).
    Seeded by ``(EDA seed, seed, date index, variable)``: the same for every source, independent of the members.
    """
    from hybrid_eda.synthetic.fields import random_alm
    from hybrid_eda.synthetic.variables import VARIABLE_NAMES, VARIABLES

    rng = np.random.default_rng([int(eda.config.seed), int(seed), _CONTROL, int(state.index),
                                 VARIABLE_NAMES.index(param)])  # fmt: skip
    spectrum, rho = eda.error_spectra[param], eda.vertical_rho
    levels = tuple(VARIABLES[param].levels(eda.config.levels))
    noise: list[np.ndarray] = []

    def errors(level: int, sigma_b: np.ndarray) -> np.ndarray:
        fresh = random_alm(rng, spectrum, eda.transform, (draws,))  # [K, nalm]
        noise.append(fresh if not noise else rho * noise[-1] + np.sqrt(1.0 - rho**2) * fresh)
        return sigma_b * eda.transform.synthesis(noise[-1])  # [K, G]

    return levels, errors


@dataclass(frozen=True, eq=False)
class ImpactResult:
    """Analysis and background errors of every date, source and field.

    Attributes
    ----------
    sources : tuple of str
        Rows of :attr:`analysis_mse` (a subset of :data:`SOURCES`, in that order).
    variables, params, levels, groups : tuple
        Fields ``{param}_{level}``, their parameter, model level and level group (single-level ``lnsp`` joins
        the lowest model level).
    dates : tuple of datetime
    area_weights : np.ndarray
        ``[G]`` quadrature weights of the grid.
    analysis_mse : np.ndarray
        ``[D, S, F]`` area-weighted mean squared analysis error (mean over the draws), physical units squared.
    background_mse : np.ndarray
        ``[D, F]`` the same of the control backgrounds.
    sigma_b_ms : np.ndarray
        ``[D, F]`` area mean of ``sigma_b^2`` (the expected background MSE; the unit of the pooled scores).
    std_mean : np.ndarray
        ``[D, S, F]`` area-weighted mean of each source's std (biases: e.g. ``raw_M`` is ~6% low at M = 5).
    std_error_ms : np.ndarray
        ``[D, S, F]`` area-weighted mean of ``(std / sigma_b - 1)^2``: how far each source's std is from the
        truth. Near the BLUE the analysis error grows with its square (second order: ``B = B_true`` minimises
        it), which is why a ~10% noisy 50-member std costs a few tenths of a percent.
    n, m, draws, seed : int
    grid : str
    seconds : dict
        Wall time of the generator, the emulator and the analyses.
    """

    sources: tuple[str, ...]
    variables: tuple[str, ...]
    params: tuple[str, ...]
    levels: tuple[int, ...]
    groups: tuple[int, ...]
    dates: tuple[datetime, ...]
    area_weights: np.ndarray
    analysis_mse: np.ndarray
    background_mse: np.ndarray
    sigma_b_ms: np.ndarray
    std_mean: np.ndarray
    std_error_ms: np.ndarray
    n: int
    m: int
    draws: int
    seed: int
    grid: str
    seconds: dict


def check_impact_settings(config, n: int, m: int, draws: int) -> None:
    """Refuse ``n`` above the EDA's members, ``m >= n``, ``m < 2`` or ``draws < 1`` (:class:`UserInputError`)."""
    from hybrid_eda.evaluation.floor import check_sizes

    if n > config.members:
        raise UserInputError(
            f"N = {n} reference members asked but the synthetic EDA has {config.members}; use N <= {config.members} "
            "(or write an EDA with more members: hybrid-eda synthetic --members 50)"
        )
    if m >= n:
        raise UserInputError(
            f"M = {m} seen members must be fewer than the N = {n} reference members (the M are a subset of the N); "
            "e.g. M = 5, N = 50"
        )
    try:
        check_sizes(n, m)
    except ValueError as err:
        raise UserInputError(str(err)) from None
    if draws < 1:
        raise UserInputError(f"draws = {draws}: use at least one control background per date (e.g. 8)")


def _emulator_stds(run, members: np.ndarray, variables: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Predictive mean and median of ``s_N`` ``[G, F]`` (fields in ``variables`` order) from ``members [M, G, F]``."""
    run.parts.clear()
    run(members, variables)
    distribution = run.prediction(variables).distribution  # [1, G, F]
    return {"emulator": distribution.mean()[0], "emulator_median": distribution.quantile(0.5)[0]}


def run_variance_impact(
    config,
    *,
    n: int | None = None,
    m: int = 5,
    predictor: Callable[[np.ndarray], Any] | None = None,
    draws: int = 8,
    seed: int = 0,
    dates: Sequence[int] | None = None,
) -> ImpactResult:
    """The experiment of the module docstring on the synthetic EDA of ``config``.

    Parameters
    ----------
    config : SyntheticEDAConfig
        The EDA (e.g. :func:`~hybrid_eda.evaluation.data.config_from_manifest` of a folder's manifest); it is
        regenerated exactly (float64), as :func:`~hybrid_eda.evaluation.data.from_synthetic` does.
    n : int, optional
        Reference members (default all of ``config.members``): the first ``n``.
    m : int
        Seen members: the first ``m`` (< ``n``), fed to the emulator and to ``raw_M``.
    predictor : callable, optional
        The emulator (contract of :mod:`~hybrid_eda.evaluation.emulator`: members ``[date, M, grid, field]`` ->
        distribution of ``s_N``); without one only ``sigma_b``, ``ensemble_N`` and ``raw_M`` are run.
    draws : int
        Control backgrounds per date (shared by all sources).
    seed : int
        Seed of the control backgrounds (with the EDA's seed, the date and the variable).
    dates : sequence of int, optional
        Date indices (default all).

    Returns
    -------
    ImpactResult

    Raises
    ------
    UserInputError
        If ``n`` exceeds the EDA's members, ``m >= n`` or ``m < 2``, or ``draws < 1``; the emulator's own checks
        (fields) come from :class:`~hybrid_eda.evaluation.emulator.EmulatorRun`.
    """
    from hybrid_eda.evaluation.data import _field_groups
    from hybrid_eda.evaluation.emulator import EmulatorRun
    from hybrid_eda.synthetic.analysis import observation_correlations, unit_vectors
    from hybrid_eda.synthetic.eda import SyntheticEDA

    n = int(config.members if n is None else n)
    check_impact_settings(config, n, int(m), int(draws))
    sources = SOURCES if predictor is not None else SOURCES[:3]
    run = EmulatorRun("emulator", predictor) if predictor is not None else None
    eda = SyntheticEDA(config)
    weights = np.asarray(eda.grid.area_weights, dtype=np.float64)
    points = unit_vectors(eda.grid.latitudes, eda.grid.longitudes)  # [G, 3]
    wanted = set(range(len(config.dates)) if dates is None else (int(i) for i in dates))
    if not wanted or not wanted <= set(range(len(config.dates))):
        raise UserInputError(f"date indices must be in 0..{len(config.dates) - 1}; got {sorted(wanted)}")
    seconds = {"generator": 0.0, "emulator": 0.0, "analysis": 0.0}
    rows: list[dict[str, np.ndarray]] = []
    kept: list[datetime] = []
    names: list[str] = []

    def area_mean(values: np.ndarray) -> np.ndarray:
        return values @ weights / weights.sum()

    clock = time.perf_counter()
    for state in eda.states():
        if state.index not in wanted:
            if state.index > max(wanted):
                break
            continue
        blocks = [
            {"param": b.param, "level": b.level, "name": b.name, "sigma_b": b.sigma_b, "obs_std": b.obs_std,
             "obs_error": b.observations - b.truth[state.obs_index], "seen": b.backgrounds[:m].astype(np.float32),
             "ensemble_N": b.backgrounds[:n].std(axis=0, ddof=1), "raw_M": b.backgrounds[:m].std(axis=0, ddof=1)}
            for b in eda.fields(state)
        ]  # fmt: skip
        names = [b["name"] for b in blocks]
        now = time.perf_counter()
        seconds["generator"] += now - clock
        clock = now
        if run is not None:
            emulated = _emulator_stds(run, np.stack([b.pop("seen") for b in blocks], axis=-1), tuple(names))
            for f, block in enumerate(blocks):
                block.update({key: np.maximum(value[:, f], 1e-300) for key, value in emulated.items()})
            now = time.perf_counter()
            seconds["emulator"] += now - clock
            clock = now
        mse = np.empty((len(sources), len(blocks)))
        std_mean = np.empty((len(sources), len(blocks)))
        std_error = np.empty((len(sources), len(blocks)))
        background = np.empty(len(blocks))
        by_param: dict[str, list[int]] = {}
        for f, block in enumerate(blocks):
            by_param.setdefault(block["param"], []).append(f)
        for param, fields in by_param.items():
            spectrum = eda.error_spectra[param]
            correlations = observation_correlations(spectrum, points[state.obs_index])  # [p, p]
            levels, draw = control_background_errors(eda, state, param, int(draws), seed)
            if tuple(blocks[f]["level"] for f in fields) != levels:
                raise AssertionError(f"levels of {param} out of order")  # pragma: no cover - the generator's order
            for f in fields:
                block = blocks[f]
                errors_b = draw(block["level"], block["sigma_b"])  # [K, G]
                background[f] = area_mean(errors_b**2).mean()
                analysis = LevelAnalysis(eda.transform, spectrum, correlations, state.obs_index, block["obs_std"])
                for s, source in enumerate(sources):
                    errors_a = analysis.errors(block[source], errors_b, block["obs_error"])  # [K, G]
                    mse[s, f] = area_mean(errors_a**2).mean()
                    std_mean[s, f] = area_mean(block[source])
                    std_error[s, f] = area_mean((block[source] / block["sigma_b"] - 1.0) ** 2)
        sigma_b_ms = np.array([area_mean(b["sigma_b"] ** 2) for b in blocks])
        rows.append({"analysis_mse": mse, "background_mse": background, "std_mean": std_mean,
                     "std_error_ms": std_error, "sigma_b_ms": sigma_b_ms})  # fmt: skip
        kept.append(state.date)
        now = time.perf_counter()
        seconds["analysis"] += now - clock
        clock = now
        LOGGER.info("variance impact %s: %d fields x %d sources x %d draws", state.date.isoformat(), len(blocks),
                    len(sources), draws)  # fmt: skip
    params, levels = zip(*(name.rsplit("_", 1) for name in names), strict=True)
    levels = tuple(int(k) for k in levels)
    return ImpactResult(
        sources=sources,
        variables=tuple(names),
        params=tuple(params),
        levels=levels,
        groups=_field_groups(params, levels, config.levels),
        dates=tuple(kept),
        area_weights=weights,
        **{key: np.stack([row[key] for row in rows]) for key in rows[0]},
        n=n,
        m=int(m),
        draws=int(draws),
        seed=int(seed),
        grid=eda.grid.name,
        seconds={key: round(value, 2) for key, value in seconds.items()},
    )
