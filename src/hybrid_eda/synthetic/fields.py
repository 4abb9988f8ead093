"""Spherical-harmonic random fields on Gaussian grids, and their evolution in time.

Conventions (ducc0's, i.e. healpy's): a real field is ``f(x) = sum_{l, m >= 0} a_lm Y_lm(x) + c.c.`` for
``m > 0`` with orthonormal ``Y_lm``; coefficients are stored ``m``-major, index ``m (2 lmax + 1 - m) / 2 + l``.
An isotropic Gaussian random field with angular power spectrum ``C_l`` has ``a_l0 ~ N(0, C_l)`` and real and
imaginary parts of ``a_lm`` (``m > 0``) ``~ N(0, C_l / 2)``; its covariance between points at angular
distance ``gamma`` is

    c(gamma) = sum_l (2 l + 1) / (4 pi) C_l P_l(cos gamma),

so ``C_l`` normalised by ``sum_l (2 l + 1) C_l / (4 pi)`` gives a field of unit variance everywhere, exactly
(the fields are band-limited at ``lmax``; nothing is truncated after the fact).

``ducc0.sht.synthesis`` evaluates such fields exactly at the points of any iso-latitude grid (rings with
fewer points than ``2 m + 1`` included), and ``adjoint_synthesis`` is its exact adjoint, which gives the
covariance operator ``C v = synthesis(C_l * adjoint_synthesis(v))`` used by the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ducc0
import numpy as np

from hybrid_eda.synthetic.grids import GaussianGrid

__all__ = [
    "EARTH_RADIUS_KM",
    "SpectralOU",
    "SphericalTransform",
    "correlation_function",
    "correlation_table",
    "gaussian_spectrum",
    "power_law_spectrum",
    "random_alm",
    "unit_variance",
    "vertical_mode_weights",
]

EARTH_RADIUS_KM = 6371.0
#: Earth's angular velocity (rad / hour), for Rossby-wave phase speeds.
EARTH_OMEGA_PER_HOUR = 7.2921e-5 * 3600.0


@dataclass(frozen=True, eq=False)
class SphericalTransform:
    """Spherical-harmonic synthesis and its adjoint on one Gaussian grid, band-limited at ``lmax``.

    Parameters
    ----------
    grid : GaussianGrid
        The grid whose points the fields live on.
    lmax : int, optional
        Truncation; default ``2 n - 1`` (linear truncation, e.g. T159 on N80).
    nthreads : int
        Threads for ducc0 (1 on small shared machines).
    """

    grid: GaussianGrid
    lmax: int = -1
    nthreads: int = 1
    ell: np.ndarray = field(init=False, repr=False)
    em: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lmax = 2 * self.grid.n - 1 if self.lmax < 0 else self.lmax
        object.__setattr__(self, "lmax", lmax)
        ell = np.concatenate([np.arange(m, lmax + 1) for m in range(lmax + 1)])
        em = np.concatenate([np.full(lmax + 1 - m, m) for m in range(lmax + 1)])
        object.__setattr__(self, "ell", ell)
        object.__setattr__(self, "em", em)
        geometry = {
            "theta": self.grid.colatitudes,
            "nphi": self.grid.pl.astype(np.uint64),
            "phi0": np.zeros(2 * self.grid.n),
            "ringstart": self.grid.ringstart.astype(np.uint64),
            "lmax": lmax,
            "spin": 0,
            "nthreads": self.nthreads,
        }
        object.__setattr__(self, "_geometry", geometry)

    @property
    def nalm(self) -> int:
        """Number of stored complex coefficients, ``(lmax + 1)(lmax + 2) / 2``."""
        return int(self.ell.size)

    def synthesis(self, alm: np.ndarray) -> np.ndarray:
        """Grid values of the fields ``alm [..., nalm]`` (complex) -> ``[..., G]`` (float64)."""
        alm = np.asarray(alm, dtype=np.complex128)
        lead = alm.shape[:-1]
        flat = alm.reshape(-1, 1, self.nalm)  # [T, 1, nalm]: ducc0's (ntrans, ncomp, nalm)
        out = ducc0.sht.synthesis(alm=flat, **self._geometry)  # [T, 1, G]
        return out.reshape(*lead, self.grid.npoints)

    def adjoint_synthesis(self, values: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`synthesis`: ``[..., G]`` -> ``[..., nalm]``, ``a_lm = sum_x conj(Y_lm(x)) v(x)``."""
        values = np.asarray(values, dtype=np.float64)
        lead = values.shape[:-1]
        flat = np.ascontiguousarray(values.reshape(-1, 1, self.grid.npoints))  # [T, 1, G]
        out = ducc0.sht.adjoint_synthesis(map=flat, **self._geometry)  # [T, 1, nalm]
        return out.reshape(*lead, self.nalm)

    def gradient(self, alm: np.ndarray) -> np.ndarray:
        """Gradient on the unit sphere, ``(d/dtheta, d/(sin theta dphi))``: ``[..., nalm]`` -> ``[..., 2, G]``."""
        alm = np.asarray(alm, dtype=np.complex128)
        lead = alm.shape[:-1]
        flat = alm.reshape(-1, 1, self.nalm)  # [T, 1, nalm]
        geometry = {k: v for k, v in self._geometry.items() if k != "spin"}
        out = ducc0.sht.synthesis_deriv1(alm=flat, **geometry)  # [T, 2, G]
        return out.reshape(*lead, 2, self.grid.npoints)

    def apply_spectrum(self, values: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        """Covariance operator ``C v = synthesis(C_l adjoint_synthesis(v))`` of the spectrum ``[lmax+1]``.

        ``values [..., G]`` -> ``[..., G]``; ``C[x, y] = correlation_function(spectrum, cos gamma_xy)``.
        """
        return self.synthesis(self.adjoint_synthesis(values) * spectrum[self.ell])


def unit_variance(spectrum: np.ndarray) -> np.ndarray:
    """Scale ``C_l [lmax+1]`` so that the field's point variance ``sum (2l+1) C_l / (4 pi)`` is exactly 1."""
    ell = np.arange(spectrum.size)
    return spectrum / (np.sum((2 * ell + 1) * spectrum) / (4.0 * np.pi))


def gaussian_spectrum(lmax: int, length_scale_km: float) -> np.ndarray:
    """Unit-variance spectrum ``C_l ~ exp(-l (l+1) L^2 / (2 a^2))``: correlation ``~ exp(-d^2 / (2 L^2))``."""
    ell = np.arange(lmax + 1)
    scale = length_scale_km / EARTH_RADIUS_KM
    return unit_variance(np.exp(-0.5 * ell * (ell + 1) * scale**2))


def power_law_spectrum(lmax: int, l0: float, slope: float) -> np.ndarray:
    """Unit-variance spectrum ``C_l ~ (1 + (l / l0)^2)^(-slope / 2)`` without the mean (``C_0 = 0``)."""
    ell = np.arange(lmax + 1)
    spectrum = (1.0 + (ell / l0) ** 2) ** (-0.5 * slope)
    spectrum[0] = 0.0
    return unit_variance(spectrum)


def correlation_function(spectrum: np.ndarray, cos_gamma: np.ndarray) -> np.ndarray:
    """Covariance ``sum_l (2l+1)/(4 pi) C_l P_l(cos gamma)`` of a spectrum at angular distances (any shape)."""
    ell = np.arange(spectrum.size)
    return np.polynomial.legendre.legval(np.clip(cos_gamma, -1.0, 1.0), (2 * ell + 1) * spectrum / (4.0 * np.pi))


def correlation_table(spectrum: np.ndarray, samples_per_degree: int = 200):
    """The covariance of :func:`correlation_function` as a fast interpolant in the angular distance (radians).

    ``c(gamma)`` is tabulated at ``samples_per_degree * lmax`` points on ``[0, pi]`` and interpolated with a
    cubic spline. ``c`` is a polynomial of degree ``lmax`` in ``cos gamma``, so its fourth derivative in
    ``gamma`` is at most ``lmax^4 c(0)`` and the spline error is below ``(5/384) (pi / samples_per_degree)^4``
    (~ 1e-9 for the default), far below anything the analysis or float32 output can see.
    """
    from scipy.interpolate import CubicSpline

    lmax = max(spectrum.size - 1, 1)
    gamma = np.linspace(0.0, np.pi, samples_per_degree * lmax + 1)
    return CubicSpline(gamma, correlation_function(spectrum, np.cos(gamma)))


def random_alm(rng: np.random.Generator, spectrum: np.ndarray, transform: SphericalTransform, shape=()) -> np.ndarray:
    """Coefficients of independent isotropic Gaussian fields with power spectrum ``C_l``: ``[*shape, nalm]``."""
    draws = rng.standard_normal((*shape, 2, transform.nalm))  # [*shape, re/im, nalm]
    scale = np.sqrt(spectrum[transform.ell] * np.where(transform.em == 0, 1.0, 0.5))  # [nalm]
    alm = (draws[..., 0, :] + 1j * np.where(transform.em == 0, 0.0, draws[..., 1, :])) * scale
    return alm


def vertical_mode_weights(levels: int, n_modes: int, decay: float = 1.0) -> np.ndarray:
    """Unit-norm mixing weights of ``n_modes`` vertical modes at ``levels`` model levels: ``[L, K]``.

    Mode ``j`` varies as ``cos(pi j s)`` in ``s = (k - 1/2) / L`` (top 0, surface 1) with weight
    ``(1 + j)^-decay``; each row is normalised so that mixing ``K`` independent unit-variance fields gives
    unit variance at every level, with correlation between levels falling off smoothly with distance.
    """
    s = (np.arange(levels) + 0.5) / levels  # [L]
    j = np.arange(n_modes)  # [K]
    weights = np.cos(np.pi * s[:, None] * j[None, :]) * (1.0 + j) ** (-decay)  # [L, K]
    return weights / np.linalg.norm(weights, axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class SpectralOU:
    """A stationary, isotropic Gaussian field evolving in time: a drifting Ornstein-Uhlenbeck process per ``a_lm``.

    Over a step of ``dt`` hours every coefficient is rotated eastwards by its zonal phase speed and relaxed
    towards zero with scale-dependent memory, then refreshed with the right amount of new noise:

        a_lm(t + dt) = rho_l exp(-i m c_l dt) a_lm(t) + sqrt(1 - rho_l^2) xi_lm,   xi ~ spectrum C_l,
        rho_l = exp(-dt (1 + l / l_tau) / tau),    c_l = U / a - 2 Omega / (l (l + 1))

    (super-rotation ``U`` plus the Rossby-Haurwitz dispersion ``2 Omega / (l (l+1))`` westwards), so the
    marginal distribution stays ``C_l`` at every time: the field is stationary with exactly known statistics.

    Parameters
    ----------
    transform : SphericalTransform
    spectrum : np.ndarray
        ``[lmax+1]`` power spectrum (e.g. unit variance).
    decorrelation_hours : float
        Memory ``tau`` of the largest scales.
    l_tau : float
        Degree at which the memory has halved.
    superrotation_ms : float
        Eastward drift ``U`` of all scales (m/s); Rossby dispersion adds westward drift at large scales.
    rossby : bool
        Whether to add the Rossby-Haurwitz phase speed.
    """

    transform: SphericalTransform
    spectrum: np.ndarray
    decorrelation_hours: float
    l_tau: float = 10.0
    superrotation_ms: float = 10.0
    rossby: bool = True

    def initial(self, rng: np.random.Generator, shape=()) -> np.ndarray:
        """A draw from the stationary distribution: ``[*shape, nalm]`` complex."""
        return random_alm(rng, self.spectrum, self.transform, shape)

    def step(self, state: np.ndarray, rng: np.random.Generator, dt_hours: float) -> np.ndarray:
        """Advance ``state [*shape, nalm]`` by ``dt_hours``; returns a new array."""
        ell, em = self.transform.ell, self.transform.em
        rho = np.exp(-dt_hours * (1.0 + ell / self.l_tau) / self.decorrelation_hours)  # [nalm]
        speed = self.superrotation_ms * 3.6 / EARTH_RADIUS_KM * np.ones(ell.shape)  # rad / hour
        if self.rossby:
            speed -= 2.0 * EARTH_OMEGA_PER_HOUR / np.maximum(ell * (ell + 1), 1)
        propagator = rho * np.exp(-1j * em * speed * dt_hours)  # [nalm]
        noise = random_alm(rng, self.spectrum, self.transform, state.shape[:-1])
        return propagator * state + np.sqrt(1.0 - rho**2) * noise
