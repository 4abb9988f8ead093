"""Exact perturbed-observation analysis of one field (one variable at one model level).

Background errors are ``e_b = sigma_b * u`` with ``u`` a unit-variance isotropic field of spectrum ``C_l``, so
the background-error covariance is ``B = D C D`` with ``D = diag(sigma_b)`` and ``C`` applied spectrally
(``C v = synthesis(C_l adjoint_synthesis(v))``). Observations are ``y = H x_t + eps_o`` at a subset of grid
points (``H`` selects them), ``eps_o ~ N(0, R)``, ``R = diag(sigma_o^2)``. Member ``i`` gets the exact
Kalman update with perturbed observations ``eps_i ~ N(0, R)``:

    x_a,i = x_b,i + B H^T (H B H^T + R)^-1 (y + eps_i - H x_b,i)

Subtracting the truth, only errors enter: ``d_i = eps_o + eps_i - H e_b,i`` and ``e_a,i = e_b,i + B H^T w_i``
with ``w_i = S^-1 d_i``. ``S = D_o C_oo D_o + R`` (``p x p``, ``C_oo`` from the Legendre series of ``C_l``) is
factorised once (Cholesky) for all members; ``B H^T w = D C (H^T D_o w)`` costs two transforms per member.

The update uses the observations at the same level only. With vertically uncorrelated errors
(``errors.vertical_length = 0``) this is the exact 3D BLUE; with vertical correlation it is the exact
level-by-level update (an analysis with zero vertical localisation radius), still linear with known
statistics. Everything is float64.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from hybrid_eda.synthetic.fields import SphericalTransform, correlation_table

__all__ = ["observation_correlations", "perturbed_obs_update", "unit_vectors"]


def unit_vectors(latitudes: np.ndarray, longitudes: np.ndarray) -> np.ndarray:
    """Cartesian unit vectors ``[..., 3]`` of points given in degrees."""
    lat, lon = np.radians(latitudes), np.radians(longitudes)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def observation_correlations(spectrum: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Correlation matrix ``C_oo [p, p]`` of a unit-variance field of spectrum ``C_l`` at ``points [p, 3]``.

    Angular distances come from chord lengths (accurate for close points); ``c(gamma)`` from
    :func:`~hybrid_eda.synthetic.fields.correlation_table` (within ~1e-9 of the Legendre series).
    """
    from scipy.spatial.distance import cdist

    chord = cdist(points, points)  # [p, p]
    gamma = 2.0 * np.arcsin(np.clip(0.5 * chord, 0.0, 1.0))
    return correlation_table(spectrum)(gamma)


def perturbed_obs_update(
    transform: SphericalTransform,
    spectrum: np.ndarray,
    correlations: np.ndarray,
    obs_index: np.ndarray,
    sigma_b: np.ndarray,
    obs_std: np.ndarray,
    background_errors: np.ndarray,
    obs_error: np.ndarray,
    perturbations: np.ndarray,
) -> np.ndarray:
    """Analysis errors of every member from their background errors.

    Parameters
    ----------
    transform : SphericalTransform
    spectrum : np.ndarray
        ``[lmax+1]`` unit-variance spectrum of the background-error correlation ``C``.
    correlations : np.ndarray
        ``[p, p]`` ``C`` between the observed points (:func:`observation_correlations`).
    obs_index : np.ndarray
        ``[p]`` observed grid points.
    sigma_b : np.ndarray
        ``[G]`` background-error std.
    obs_std : np.ndarray
        ``[p]`` observation-error std.
    background_errors : np.ndarray
        ``[N, G]`` ``x_b,i - x_t``.
    obs_error : np.ndarray
        ``[p]`` the actual observation error ``y - H x_t`` (shared by all members).
    perturbations : np.ndarray
        ``[N, p]`` observation perturbations ``eps_i``.

    Returns
    -------
    np.ndarray
        ``[N, G]`` analysis errors ``x_a,i - x_t``.
    """
    if obs_index.size == 0:
        return background_errors.copy()
    sigma_o_b = sigma_b[obs_index]  # [p]
    s_matrix = sigma_o_b[:, None] * correlations * sigma_o_b[None, :]  # [p, p]
    s_matrix[np.diag_indices_from(s_matrix)] += obs_std**2
    innovations = obs_error[None, :] + perturbations - background_errors[:, obs_index]  # [N, p]
    factor = scipy.linalg.cho_factor(s_matrix, lower=True, overwrite_a=True, check_finite=False)
    weights = scipy.linalg.cho_solve(factor, innovations.T, check_finite=False).T  # [N, p]
    impulses = np.zeros_like(background_errors)  # [N, G]: H^T D_o w
    impulses[:, obs_index] = weights * sigma_o_b[None, :]
    return background_errors + sigma_b[None, :] * transform.apply_spectrum(impulses, spectrum)
