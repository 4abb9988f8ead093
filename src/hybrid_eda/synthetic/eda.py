"""The synthetic global EDA: truth, known sigma_b, background members and perturbed-observation analyses.

For every date (``config.dates``) and every field (variable ``v`` at model level ``k``):

1. **truth** ``x_t = mean_v(p_k, lat) + A_v(p_k) u_k`` (``q``, ``o3``: ``ref * exp(a u_k - a^2/2)``), where
   ``u_k = sum_j c_kj f_vj`` mixes ``K`` independent unit-variance spectral fields ``f_vj`` that drift and evolve
   in time (:class:`~hybrid_eda.synthetic.fields.SpectralOU`) with smooth vertical weights ``c_kj``;
2. **sigma_b** from :class:`~hybrid_eda.synthetic.errors.ErrorModel` (large scale x fronts of the truth x latent);
3. **backgrounds** ``x_b,i = x_t + sigma_b * u_i`` for ``i = 1..N``, ``u_i`` unit-variance isotropic fields
   (Gaussian correlation, AR(1) between levels): the members' sample std converges to ``sigma_b``;
4. **observations** ``y = x_t + eps_o`` at ``observations.count`` points drawn with uneven coverage (dense
   "land", sparse "ocean" and southern extratropics), the same points at every level;
5. **analyses** ``x_a,i``: the exact perturbed-observation update of each member
   (:func:`~hybrid_eda.synthetic.analysis.perturbed_obs_update`).

Randomness: one ``numpy.random.Generator`` per purpose, seeded from ``(seed, purpose, date index, ...)``:
static fields, truth innovations per date, observations per (date, variable, level), and one stream per
(date, member, variable). So the truth does not depend on ``N``, the levels written or the variable subset, and
member ``i`` of an ``N``-member EDA equals member ``i`` of an ``M``-member EDA (``i <= M``) with the same seed.
The truth at date ``n`` is reached by ``n`` steps from the stationary initial state at ``start``.

Memory: :meth:`SyntheticEDA.fields` yields one field (all members, one level) at a time; only the spectral
noise state of the current variable (``[N, nalm]`` complex) is carried between levels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from hybrid_eda.synthetic.analysis import observation_correlations, perturbed_obs_update, unit_vectors
from hybrid_eda.synthetic.config import SyntheticEDAConfig
from hybrid_eda.synthetic.errors import ErrorModel, front_indicator
from hybrid_eda.synthetic.fields import (
    SpectralOU,
    SphericalTransform,
    gaussian_spectrum,
    power_law_spectrum,
    random_alm,
    vertical_mode_weights,
)
from hybrid_eda.synthetic.grids import GaussianGrid, make_grid
from hybrid_eda.synthetic.variables import VARIABLE_NAMES, VARIABLES, model_level_pressures, reference_field

__all__ = ["DateState", "FieldBlock", "SyntheticEDA", "SyntheticEDASample", "generate"]

LOGGER = logging.getLogger(__name__)

# Purposes of the random streams (first entry after the seed).
_STATIC, _TRUTH, _OBS, _MEMBER = 0, 1, 2, 3


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


@dataclass(frozen=True, eq=False)
class DateState:
    """Everything about one date that all fields share.

    Attributes
    ----------
    index, date :
        Position in ``config.dates`` and the analysis date.
    flow : dict
        ``{variable: [K, G]}`` unit-variance truth modes.
    t_gradient : np.ndarray
        ``[K, 2, G]`` gradients of the temperature modes (front indicator).
    latent : np.ndarray
        ``[K2, G]`` unit-variance latent modes of sigma_b.
    obs_index : np.ndarray
        ``[p]`` observed grid points (sorted).
    """

    index: int
    date: datetime
    flow: dict[str, np.ndarray]
    t_gradient: np.ndarray
    latent: np.ndarray
    obs_index: np.ndarray


@dataclass(frozen=True, eq=False)
class FieldBlock:
    """One variable at one model level for one date: truth, sigma_b, all members, observations.

    Attributes
    ----------
    param, level :
        GRIB ``shortName`` and model level (1-based).
    truth, sigma_b : np.ndarray
        ``[G]``.
    backgrounds, analyses : np.ndarray
        ``[N, G]`` float64.
    observations, obs_std : np.ndarray
        ``[p]`` observed values ``y`` and their error std, at ``DateState.obs_index``.
    """

    param: str
    level: int
    truth: np.ndarray
    sigma_b: np.ndarray
    backgrounds: np.ndarray
    analyses: np.ndarray
    observations: np.ndarray
    obs_std: np.ndarray

    @property
    def name(self) -> str:
        """anemoi-datasets' variable name ``{param}_{level}``."""
        return f"{self.param}_{self.level}"


class SyntheticEDA:
    """Generator of the synthetic EDA described in the module docstring.

    Parameters
    ----------
    config : SyntheticEDAConfig
    """

    def __init__(self, config: SyntheticEDAConfig) -> None:
        self.config = config
        self.grid: GaussianGrid = make_grid(config.grid)
        self.transform = SphericalTransform(self.grid, nthreads=config.threads)
        lmax = self.transform.lmax
        levels = config.levels
        self.pressures = model_level_pressures(levels)  # [L] Pa
        self.flow_weights = vertical_mode_weights(levels, config.flow.vertical_modes, config.flow.vertical_decay)
        self.latent_weights = vertical_mode_weights(levels, config.errors.latent_vertical_modes)  # [L, K2]
        self.error_model = ErrorModel(config.errors, self.grid.latitudes)
        self._points = unit_vectors(self.grid.latitudes, self.grid.longitudes)  # [G, 3]

        flow = config.flow
        self.flow_processes = {
            name: SpectralOU(
                self.transform,
                power_law_spectrum(lmax, spec.flow_l0, spec.flow_slope),
                flow.decorrelation_hours,
                flow.l_tau,
                flow.superrotation_ms,
                flow.rossby_waves,
            )
            for name, spec in VARIABLES.items()
        }
        errors = config.errors
        self.latent_process = SpectralOU(
            self.transform,
            power_law_spectrum(lmax, errors.latent_l0, errors.latent_slope),
            errors.latent_decorrelation_hours,
            l_tau=1e6,  # every scale of the latent field keeps the same (long) memory
            superrotation_ms=flow.superrotation_ms / 2,
            rossby=False,
        )
        self.error_spectra = {
            name: gaussian_spectrum(lmax, errors.length_scale_km * spec.length_factor)
            for name, spec in VARIABLES.items()
        }
        if errors.vertical_length > 0:
            self.vertical_rho = float(np.exp(-1.0 / (levels * errors.vertical_length)))
        else:
            self.vertical_rho = 0.0
        self._make_static()

    # ------------------------------------------------------------------------------------------------ static
    def _make_static(self) -> None:
        """Synthetic land mask, orography and observation-coverage density (fixed for all dates)."""
        rng = _rng(self.config.seed, _STATIC)
        spectrum = power_law_spectrum(self.transform.lmax, 6.0, 3.0)
        land_field, height_field = self.transform.synthesis(random_alm(rng, spectrum, self.transform, (2,)))
        obs = self.config.observations
        self.land = land_field > np.quantile(land_field, 1.0 - obs.land_fraction)  # [G] bool
        self.elevation = np.where(self.land, 1500.0 * (1.0 + np.tanh(height_field)), 0.0)  # [G] m
        density = np.where(self.land, 1.0, obs.ocean_density) * np.where(
            self.grid.latitudes < -30.0, obs.southern_density, 1.0
        )
        self.coverage = density / density.sum()  # [G] probability of observing each point

    # ------------------------------------------------------------------------------------------------ dates
    def _spectral_states(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Truth and latent spectral states at every date, in order."""
        seed, dt = self.config.seed, float(self.config.frequency_hours)
        k_flow, k_latent = self.config.flow.vertical_modes, self.config.errors.latent_vertical_modes
        flow: dict[str, np.ndarray] = {}
        latent = np.empty(0)
        for index in range(len(self.config.dates)):
            rng = _rng(seed, _TRUTH, index)
            if index == 0:
                flow = {name: proc.initial(rng, (k_flow,)) for name, proc in self.flow_processes.items()}
                latent = self.latent_process.initial(rng, (k_latent,))
            else:
                flow = {name: proc.step(flow[name], rng, dt) for name, proc in self.flow_processes.items()}
                latent = self.latent_process.step(latent, rng, dt)
            yield flow, latent

    def _date_state(self, index: int, flow: dict[str, np.ndarray], latent: np.ndarray) -> DateState:
        maps = {name: self.transform.synthesis(flow[name]) for name in VARIABLE_NAMES}  # {v: [K, G]}
        obs = self.config.observations
        rng = _rng(self.config.seed, _OBS, index)
        obs_index = np.sort(rng.choice(self.grid.npoints, size=obs.count, replace=False, p=self.coverage))
        return DateState(
            index=index,
            date=self.config.dates[index],
            flow=maps,
            t_gradient=self.transform.gradient(flow["t"]),  # [K, 2, G]
            latent=self.transform.synthesis(latent),  # [K2, G]
            obs_index=obs_index,
        )

    def states(self) -> Iterator[DateState]:
        """The shared state of every date, in order (one truth integration for all dates)."""
        for index, (flow, latent) in enumerate(self._spectral_states()):
            yield self._date_state(index, flow, latent)

    def state(self, date: datetime | str | int) -> DateState:
        """The shared state of one date (integrates the truth from ``start``)."""
        index = self.config.date_index(date)
        for i, (flow, latent) in enumerate(self._spectral_states()):
            if i == index:
                return self._date_state(index, flow, latent)
        raise AssertionError("unreachable: date_index checked the range")  # pragma: no cover

    # ------------------------------------------------------------------------------------------------ fields
    def _row(self, param: str, level: int) -> int:
        """Row of the level in the vertical tables (lnsp, on model level 1, lives at the surface)."""
        return self.config.levels - 1 if VARIABLES[param].single_level else level - 1

    def reference(self, param: str, level: int) -> np.ndarray:
        """Mean (vo, d, t, lnsp) or reference (q, o3) field ``[G]`` of ``param`` at ``level``."""
        pressure = self.pressures[self._row(param, level)]
        return reference_field(param, np.array([[pressure]]), self.grid.latitudes, self.elevation)[0]

    def truth_and_sigma(self, state: DateState, param: str, level: int) -> tuple[np.ndarray, np.ndarray]:
        """True field and exact ``sigma_b``, both ``[G]``, of ``param`` at model level ``level`` (1-based)."""
        spec = VARIABLES[param]
        row = self._row(param, level)
        pressure = float(self.pressures[row])
        unit = self.flow_weights[row] @ state.flow[param]  # [G]
        reference = self.reference(param, level)  # [G]
        amplitude = float(spec.amplitude(np.asarray(pressure)))
        if spec.multiplicative:
            truth = reference * np.exp(amplitude * unit - 0.5 * amplitude**2)
        else:
            truth = reference + amplitude * unit
        gradient = np.tensordot(self.flow_weights[row], state.t_gradient, axes=(0, 0))  # [2, G]
        indicator = front_indicator(gradient, self.grid.area_weights)
        latent = self.latent_weights[row] @ state.latent  # [G]
        return truth, self.error_model.sigma_b(spec, pressure, truth, indicator, latent)

    def fields(self, state: DateState, variables: tuple[str, ...] | None = None) -> Iterator[FieldBlock]:
        """Every field of one date, variable by variable and level by level (all members at once)."""
        config, seed, n_members = self.config, self.config.seed, self.config.members
        obs_index = state.obs_index
        obs_points = self._points[obs_index]
        rho = self.vertical_rho
        for param in variables or config.variables:
            spec, var_id = VARIABLES[param], VARIABLE_NAMES.index(param)
            spectrum = self.error_spectra[param]
            correlations = observation_correlations(spectrum, obs_points)  # [p, p]
            member_rngs = [_rng(seed, _MEMBER, state.index, i + 1, var_id) for i in range(n_members)]
            noise = np.empty(0)
            for level in spec.levels(config.levels):
                truth, sigma_b = self.truth_and_sigma(state, param, level)
                fresh = np.stack([random_alm(r, spectrum, self.transform) for r in member_rngs])  # [N, nalm]
                noise = fresh if noise.size == 0 else rho * noise + np.sqrt(1.0 - rho**2) * fresh
                background_errors = sigma_b * self.transform.synthesis(noise)  # [N, G]
                pressure = float(self.pressures[self._row(param, level)])
                reference = self.reference(param, level)[obs_index]  # [p]
                obs_std = config.observations.error_ratio * self.error_model.reference_sigma(spec, pressure, reference)
                obs_rng = _rng(seed, _OBS, state.index, var_id, level)
                obs_error = obs_std * obs_rng.standard_normal(obs_index.size)  # [p]
                perturbations = obs_std * np.stack([r.standard_normal(obs_index.size) for r in member_rngs])  # [N, p]
                analysis_errors = perturbed_obs_update(
                    self.transform,
                    spectrum,
                    correlations,
                    obs_index,
                    sigma_b,
                    obs_std,
                    background_errors,
                    obs_error,
                    perturbations,
                )
                yield FieldBlock(
                    param=param,
                    level=level,
                    truth=truth,
                    sigma_b=sigma_b,
                    backgrounds=truth + background_errors,
                    analyses=truth + analysis_errors,
                    observations=truth[obs_index] + obs_error,
                    obs_std=obs_std,
                )


@dataclass(frozen=True, eq=False)
class SyntheticEDASample:
    """One date of the synthetic EDA in memory (``[..., ens, grid, var]`` layout).

    Attributes
    ----------
    date : datetime
    variables : tuple of str
        anemoi-datasets names ``{param}_{level}`` of the last axis, variable-major (``vo_1, vo_2, ..., o3_L``).
    latitudes, longitudes : np.ndarray
        ``[G]`` degrees.
    truth, sigma_b : np.ndarray
        ``[G, F]`` float64.
    backgrounds, analyses : np.ndarray
        ``[N, G, F]`` float64.
    obs_index : np.ndarray
        ``[p]`` observed grid points.
    observations, obs_std : np.ndarray
        ``[p, F]``.
    """

    date: datetime
    variables: tuple[str, ...]
    latitudes: np.ndarray
    longitudes: np.ndarray
    truth: np.ndarray
    sigma_b: np.ndarray
    backgrounds: np.ndarray
    analyses: np.ndarray
    obs_index: np.ndarray
    observations: np.ndarray
    obs_std: np.ndarray


def generate(
    config: SyntheticEDAConfig, date: datetime | str | int = 0, *, max_bytes: float = 4 * 2**30
) -> SyntheticEDASample:
    """Generate one date of the synthetic EDA in memory (for tests and small grids).

    Parameters
    ----------
    config : SyntheticEDAConfig
    date : datetime, str or int
        One of ``config.dates`` or its index (default: the first date).
    max_bytes : float
        Refuse configurations whose arrays would exceed this (default 4 GiB).

    Returns
    -------
    SyntheticEDASample
        Holds ``2 N + 2`` float64 arrays of ``G x F`` values.

    Raises
    ------
    ValueError
        If the sample would need more than ``max_bytes``: use :func:`~hybrid_eda.synthetic.write_synthetic_eda`,
        which streams field by field, for large grids and ensembles.
    """
    n_fields = sum(len(VARIABLES[v].levels(config.levels)) for v in config.variables)
    size = (2 * config.members + 2) * config.npoints * n_fields * 8
    if size > max_bytes:
        raise ValueError(
            f"generate() would hold {size / 2**30:.1f} GiB in memory ({config.members} members x {n_fields} fields "
            f"x {config.npoints} points in float64); use write_synthetic_eda(), which streams field by field, or "
            "fewer levels/members (or raise max_bytes)."
        )
    eda = SyntheticEDA(config)
    state = eda.state(date)
    blocks = list(eda.fields(state))
    stack = np.stack
    return SyntheticEDASample(
        date=state.date,
        variables=tuple(b.name for b in blocks),
        latitudes=eda.grid.latitudes,
        longitudes=eda.grid.longitudes,
        truth=stack([b.truth for b in blocks], axis=-1),  # [G, F]
        sigma_b=stack([b.sigma_b for b in blocks], axis=-1),  # [G, F]
        backgrounds=stack([b.backgrounds for b in blocks], axis=-1),  # [N, G, F]
        analyses=stack([b.analyses for b in blocks], axis=-1),  # [N, G, F]
        obs_index=state.obs_index,
        observations=stack([b.observations for b in blocks], axis=-1),  # [p, F]
        obs_std=stack([b.obs_std for b in blocks], axis=-1),  # [p, F]
    )
