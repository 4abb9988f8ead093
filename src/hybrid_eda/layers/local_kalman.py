"""Localised perturbed-observation ensemble Kalman update on the sphere, and the observation-error std it needs.

Member ``j`` of the ``k`` members to update, field ``f`` (one variable at one level; each field its own observed
points, the finite entries of ``observations[..., f]``):

    x_a,j = x_j + P H^T (H P H^T + R)^-1 (y + s_o e_j - H x_j),
    P = rho o (X X^T / (N - 1)),        R = s_o^2 I,

with ``X [G, N]`` the anomalies of the ``N`` members of the covariance ensemble (e.g. all backgrounds of an EDA:
the members to update and the guides' backgrounds), ``rho`` the Gaspari-Cohn (1999) correlation of half-width
``radius`` (zero beyond ``2 radius``) on great-circle distances, and ``e_j`` unit normals at the observed points
(``perturbations``; None: the deterministic part ``x_j + K (y - H x_j)``). The stochastic EnKF of Burgers et al.
(1998) with Schur-product localisation, level by level; with the exact ``B`` in place of ``P`` it is the synthetic
EDA's own analysis (:mod:`hybrid_eda.synthetic.analysis`).

:func:`desroziers_obs_std` estimates ``s_o`` per field from N_s (background, analysis) pairs of the same cycle:
``E[(y - H x_a)(y - H x_b)] = R`` for a perturbed-observation analysis with the right gain (Desroziers et al.
2005), averaged over the observed points and the pairs. So the update needs no observation-error statistics
beyond the real analyses it is conditioned on.

Everything is torch (differentiable, any dtype); one ``[p, p]`` Cholesky factorisation per field and case.
"""

from __future__ import annotations

import math

import torch

from hybrid_eda.errors import UserInputError

__all__ = [
    "EARTH_RADIUS_KM",
    "desroziers_obs_std",
    "gaspari_cohn",
    "guided_update",
    "localised_update",
    "unit_vectors",
]

#: Mean Earth radius (km), to turn a localisation half-width in km into radians.
EARTH_RADIUS_KM = 6371.0


def unit_vectors(latitudes: torch.Tensor, longitudes: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` Cartesian unit vectors of points given in degrees."""
    lat, lon = torch.deg2rad(latitudes), torch.deg2rad(longitudes)
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=-1)


def gaspari_cohn(r: torch.Tensor) -> torch.Tensor:
    """Gaspari and Cohn's (1999, eq. 4.10) compactly supported correlation of ``r = distance / half-width``:
    1 at 0, zero for ``r >= 2``."""
    r = r.abs()
    inner = ((-0.25 * r + 0.5) * r + 0.625) * r**3 - 5.0 / 3.0 * r**2 + 1.0
    safe = torch.where(r > 0, r, torch.ones_like(r))
    outer = ((((r / 12.0 - 0.5) * r + 0.625) * r + 5.0 / 3.0) * r - 5.0) * r + 4.0 - 2.0 / (3.0 * safe)
    return torch.where(r <= 1.0, inner, torch.where(r < 2.0, outer, torch.zeros_like(r)))


def _angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Great-circle angles ``[len(a), len(b)]`` between unit vectors (from chords: accurate for close points)."""
    chord = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    return 2.0 * torch.asin(torch.clamp(0.5 * chord, 0.0, 1.0))


def _check(members: torch.Tensor, ensemble: torch.Tensor, observations: torch.Tensor, positions: torch.Tensor):
    if members.ndim != 4 or ensemble.ndim != 4 or observations.ndim != 3:
        raise UserInputError(
            f"localised update: members [b, k, grid, var], ensemble [b, N, grid, var] and observations [b, grid, var] "
            f"expected, got {list(members.shape)}, {list(ensemble.shape)}, {list(observations.shape)}"
        )
    field = tuple(members.shape[-2:])
    if tuple(ensemble.shape[-2:]) != field or tuple(observations.shape[-2:]) != field:
        raise UserInputError(
            f"localised update: members {list(members.shape)}, ensemble {list(ensemble.shape)} and observations "
            f"{list(observations.shape)} must be on the same grid with the same variables"
        )
    if ensemble.shape[1] < 2:
        raise UserInputError(
            f"localised update: the covariance ensemble has {ensemble.shape[1]} member(s); it needs at least 2 "
            "(pass all backgrounds of the cycle)"
        )
    if tuple(positions.shape) != (field[0], 3):
        raise UserInputError(f"positions must be [grid={field[0]}, 3] unit vectors, got {list(positions.shape)}")


def localised_update(
    members: torch.Tensor,
    ensemble: torch.Tensor,
    observations: torch.Tensor,
    obs_std: torch.Tensor,
    positions: torch.Tensor,
    radius: float,
    perturbations: torch.Tensor | None = None,
) -> torch.Tensor:
    """The localised perturbed-observation Kalman update of every member (see the module docstring).

    Parameters
    ----------
    members : torch.Tensor
        ``[b, k, grid, var]`` the members to update (physical units).
    ensemble : torch.Tensor
        ``[b, N, grid, var]`` the members whose anomalies give the covariance, ``N >= 2``.
    observations : torch.Tensor
        ``[b, grid, var]`` on the grid, NaN where unobserved; a field without observations is left unchanged.
    obs_std : torch.Tensor
        ``[b, var]`` observation-error std per case and field (> 0 where observed).
    positions : torch.Tensor
        ``[grid, 3]`` unit vectors of the grid points.
    radius : float
        Gaspari-Cohn half-width in radians (``km / EARTH_RADIUS_KM``); the covariance is zero beyond twice it.
    perturbations : torch.Tensor, optional
        ``[b, k, grid, var]`` unit normals, read at the observed points: member ``j``'s observation perturbation
        is ``obs_std * perturbations[:, j]``. None: no perturbation (the update's deterministic part).

    Returns
    -------
    torch.Tensor
        ``[b, k, grid, var]`` the updated members.
    """
    _check(members, ensemble, observations, positions)
    if not radius > 0 or not math.isfinite(radius):
        raise UserInputError(f"localisation half-width must be a positive number of radians, got {radius}")
    b, k, n_grid, n_var = members.shape
    if tuple(obs_std.shape) != (b, n_var):
        raise UserInputError(f"obs_std must be [b={b}, var={n_var}], got {list(obs_std.shape)}")
    if perturbations is not None and perturbations.shape != members.shape:
        raise UserInputError(
            f"perturbations must be {list(members.shape)} like members, got {list(perturbations.shape)}"
        )
    observed = torch.isfinite(observations)  # [b, grid, var]
    anomalies = ensemble - ensemble.mean(dim=1, keepdim=True)  # [b, N, grid, var]
    norm = 1.0 / (ensemble.shape[1] - 1)
    positions = positions.to(members.dtype)
    out = []
    for case in range(b):
        columns = []
        cache: dict[bytes, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for f in range(n_var):
            mask = observed[case, :, f]
            if not bool(mask.any()):
                columns.append(members[case, :, :, f])
                continue
            key = mask.cpu().numpy().tobytes()
            if key not in cache:  # profiles: the same points for every field
                index = torch.nonzero(mask).squeeze(1)
                points = positions.index_select(0, index)
                cache[key] = (
                    index,
                    gaspari_cohn(_angles(points, points) / radius),  # [p, p]
                    gaspari_cohn(_angles(positions, points) / radius),  # [grid, p]
                )
            index, rho_oo, rho_go = cache[key]
            x = anomalies[case, :, :, f]  # [N, grid]
            xo = x.index_select(1, index)  # [N, p]
            p_oo = rho_oo * (xo.T @ xo) * norm
            p_go = rho_go * (x.T @ xo) * norm  # [grid, p]
            s_o = obs_std[case, f]
            s = p_oo + torch.diag((s_o * s_o).expand(index.numel()))
            y = observations[case, :, f].index_select(0, index)  # [p]
            innovation = y[None, :] - members[case, :, :, f].index_select(1, index)  # [k, p]
            if perturbations is not None:
                innovation = innovation + s_o * perturbations[case, :, :, f].index_select(1, index)
            chol = torch.linalg.cholesky(s)
            weights = torch.cholesky_solve(innovation.T, chol)  # [p, k]
            columns.append(members[case, :, :, f] + (p_go @ weights).T)
        out.append(torch.stack(columns, dim=-1))  # [k, grid, var]
    return torch.stack(out)


def desroziers_obs_std(
    guide_analyses: torch.Tensor, guide_backgrounds: torch.Tensor, observations: torch.Tensor, floor: float = 0.0
) -> torch.Tensor:
    """Observation-error std per case and field from the guides: ``sqrt(mean (y - x_a)(y - x_b))`` over the
    observed points and the N_s (analysis, background) pairs (Desroziers et al. 2005).

    Parameters
    ----------
    guide_analyses, guide_backgrounds : torch.Tensor
        ``[b, N_s, grid, var]``.
    observations : torch.Tensor
        ``[b, grid, var]``, NaN where unobserved.
    floor : float
        Smallest std returned (a field without observations gets it too).

    Returns
    -------
    torch.Tensor
        ``[b, var]``.
    """
    if guide_analyses.shape != guide_backgrounds.shape or guide_analyses.ndim != 4:
        raise UserInputError(
            f"guide_analyses {list(guide_analyses.shape)} and guide_backgrounds {list(guide_backgrounds.shape)} must "
            "both be [b, N_s, grid, var]: the observation-error estimate needs each guide's own background"
        )
    observed = torch.isfinite(observations)[:, None]  # [b, 1, grid, var]
    y = torch.nan_to_num(observations)[:, None]
    product = torch.where(observed, (y - guide_analyses) * (y - guide_backgrounds), 0.0)
    count = observed.sum(dim=2).clamp_min(1) * guide_analyses.shape[1]  # [b, 1, var]
    variance = product.sum(dim=(1, 2)) / count[:, 0]  # [b, var]
    return torch.sqrt(variance.clamp_min(floor * floor))


def guided_update(
    members: torch.Tensor,
    backgrounds: torch.Tensor,
    guide_analyses: torch.Tensor,
    guide_backgrounds: torch.Tensor,
    observations: torch.Tensor,
    positions: torch.Tensor,
    radius_km: float,
    perturbations: torch.Tensor | None = None,
    floor: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`localised_update` of ``members [b, k, grid, var]`` as a hybrid cycle has it: the covariance of all
    backgrounds (``backgrounds [b, K, ...]`` and ``guide_backgrounds [b, N_s, ...]``) and the observation-error std
    of the N_s guides (:func:`desroziers_obs_std`, at least ``floor``); ``radius_km`` the Gaspari-Cohn half-width in
    km. Returns the updated members ``[b, k, grid, var]`` and that std ``[b, var]``. Used by the member generator's
    ``local_kalman`` start and the ``--local-enkf`` baseline."""
    ensemble = torch.cat([backgrounds, guide_backgrounds], dim=1)  # [b, K + N_s, grid, var]
    obs_std = desroziers_obs_std(guide_analyses, guide_backgrounds, observations, floor=floor)  # [b, var]
    radius = float(radius_km) / EARTH_RADIUS_KM
    return localised_update(members, ensemble, observations, obs_std, positions, radius, perturbations), obs_std
