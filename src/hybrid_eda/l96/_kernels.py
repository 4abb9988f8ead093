"""Numba kernels for the Lorenz-96 testbed: RK4 / tangent-linear / adjoint steps and the ensemble analyses.

Why numba: one Lorenz-96 cycle moves a 20 x 40 ensemble, a few kilobytes. A numpy implementation pays
microseconds of call overhead for each of its ~60 array operations, which is most of its run time at this
size; a compiled loop pays it once. The plain numpy functions in :mod:`hybrid_eda.l96.model` and
:mod:`hybrid_eda.l96.filters` remain the float64 references these kernels are tested against.

Layout conventions: every kernel takes arrays already flattened to ``[K, ...]`` over the leading batch dims
(``K = prod(batch dims)``), C-contiguous float64, and writes into a caller-allocated ``out``. All kernels are
compiled lazily on first use and cached on disk (``cache=True``), so the compile time (a few seconds) is paid
once per machine, not per process. Floating-point operations are written in the same order as the numpy
references so the two agree to the last bit or two.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# ----------------------------------------------------------------------------------------------------------
# Lorenz-96 dynamics


@njit(cache=True, inline="always")
def _tendency_row(x, forcing, out):  # pragma: no cover - compiled
    """``out = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` for one state ``x [n]`` (cyclic)."""
    n = x.shape[0]
    out[0] = (x[1] - x[n - 2]) * x[n - 1] - x[0] + forcing
    out[1] = (x[2] - x[n - 1]) * x[0] - x[1] + forcing
    for i in range(2, n - 1):
        out[i] = (x[i + 1] - x[i - 2]) * x[i - 1] - x[i] + forcing
    out[n - 1] = (x[0] - x[n - 3]) * x[n - 2] - x[n - 1] + forcing


@njit(cache=True, inline="always")
def _rk4_row(x, dt, forcing, k1, k2, k3, k4, tmp):  # pragma: no cover - compiled
    """One RK4 step of one state ``x [n]`` in place; ``k1..k4, tmp`` are ``[n]`` scratch."""
    n = x.shape[0]
    h2 = 0.5 * dt
    h6 = dt / 6.0
    _tendency_row(x, forcing, k1)
    for i in range(n):
        tmp[i] = x[i] + h2 * k1[i]
    _tendency_row(tmp, forcing, k2)
    for i in range(n):
        tmp[i] = x[i] + h2 * k2[i]
    _tendency_row(tmp, forcing, k3)
    for i in range(n):
        tmp[i] = x[i] + dt * k3[i]
    _tendency_row(tmp, forcing, k4)
    for i in range(n):
        x[i] = x[i] + h6 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])


@njit(cache=True)
def rk4_steps(x, dt, forcing, n_steps, out):  # pragma: no cover - compiled
    """``n_steps`` RK4 steps of every row of ``x [M, n]`` into ``out [M, n]`` (may alias ``x``)."""
    m, n = x.shape
    k1 = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    tmp = np.empty(n)
    row = np.empty(n)
    for r in range(m):
        for i in range(n):
            row[i] = x[r, i]
        for _ in range(n_steps):
            _rk4_row(row, dt, forcing, k1, k2, k3, k4, tmp)
        for i in range(n):
            out[r, i] = row[i]


@njit(cache=True)
def rk4_trajectory(x0, dt, forcing, n_steps, out):  # pragma: no cover - compiled
    """States after 1..n_steps RK4 steps of ``x0 [n]``, written to ``out [n_steps, n]``."""
    n = x0.shape[0]
    k1 = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    tmp = np.empty(n)
    row = x0.copy()
    for s in range(n_steps):
        _rk4_row(row, dt, forcing, k1, k2, k3, k4, tmp)
        for i in range(n):
            out[s, i] = row[i]


@njit(cache=True, inline="always")
def _tendency_tl_row(x, dx, out):  # pragma: no cover - compiled
    """``out = (x_{i+1} - x_{i-2}) dx_{i-1} + (dx_{i+1} - dx_{i-2}) x_{i-1} - dx_i`` (cyclic)."""
    n = x.shape[0]
    for i in range(n):
        ip1 = i + 1 if i + 1 < n else i + 1 - n
        im1 = i - 1 if i >= 1 else i - 1 + n
        im2 = i - 2 if i >= 2 else i - 2 + n
        out[i] = (x[ip1] - x[im2]) * dx[im1] + (dx[ip1] - dx[im2]) * x[im1] - dx[i]


@njit(cache=True, inline="always")
def _tendency_ad_row(x, lam, out):  # pragma: no cover - compiled
    """``out_j = (x_{j+2} - x_{j-1}) lam_{j+1} + x_{j-2} lam_{j-1} - x_{j+1} lam_{j+2} - lam_j`` (cyclic)."""
    n = x.shape[0]
    for j in range(n):
        jp1 = j + 1 if j + 1 < n else j + 1 - n
        jp2 = j + 2 if j + 2 < n else j + 2 - n
        jm1 = j - 1 if j >= 1 else j - 1 + n
        jm2 = j - 2 if j >= 2 else j - 2 + n
        out[j] = (x[jp2] - x[jm1]) * lam[jp1] + x[jm2] * lam[jm1] - x[jp1] * lam[jp2] - lam[j]


@njit(cache=True, inline="always")
def _rk4_stage_states(x, dt, forcing, x2, x3, x4, k1, k2, k3, k4):  # pragma: no cover - compiled
    """Stage states ``x2, x3, x4`` and slopes ``k1..k4`` of one RK4 step of ``x [n]``."""
    n = x.shape[0]
    h2 = 0.5 * dt
    _tendency_row(x, forcing, k1)
    for i in range(n):
        x2[i] = x[i] + h2 * k1[i]
    _tendency_row(x2, forcing, k2)
    for i in range(n):
        x3[i] = x[i] + h2 * k2[i]
    _tendency_row(x3, forcing, k3)
    for i in range(n):
        x4[i] = x[i] + dt * k3[i]
    _tendency_row(x4, forcing, k4)


@njit(cache=True)
def rk4_tl(x, dx, dt, forcing, x_out, dx_out):  # pragma: no cover - compiled
    """RK4 step of ``x [M, n]`` and tangent-linear propagation of ``dx [M, J, n]`` (J perturbations per state)."""
    m, n = x.shape
    n_pert = dx.shape[1]
    h2 = 0.5 * dt
    h6 = dt / 6.0
    x2 = np.empty(n)
    x3 = np.empty(n)
    x4 = np.empty(n)
    k1 = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    d1 = np.empty(n)
    d2 = np.empty(n)
    d3 = np.empty(n)
    d4 = np.empty(n)
    tmp = np.empty(n)
    for r in range(m):
        xr = x[r]
        _rk4_stage_states(xr, dt, forcing, x2, x3, x4, k1, k2, k3, k4)
        for i in range(n):
            x_out[r, i] = xr[i] + h6 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        for j in range(n_pert):
            dxr = dx[r, j]
            _tendency_tl_row(xr, dxr, d1)
            for i in range(n):
                tmp[i] = dxr[i] + h2 * d1[i]
            _tendency_tl_row(x2, tmp, d2)
            for i in range(n):
                tmp[i] = dxr[i] + h2 * d2[i]
            _tendency_tl_row(x3, tmp, d3)
            for i in range(n):
                tmp[i] = dxr[i] + dt * d3[i]
            _tendency_tl_row(x4, tmp, d4)
            for i in range(n):
                dx_out[r, j, i] = dxr[i] + h6 * (d1[i] + 2.0 * d2[i] + 2.0 * d3[i] + d4[i])


@njit(cache=True)
def rk4_ad(x, lam, dt, forcing, out):  # pragma: no cover - compiled
    """Adjoint of one RK4 step at ``x [M, n]`` applied to ``lam [M, n]``, into ``out [M, n]``."""
    m, n = x.shape
    h2 = 0.5 * dt
    h6 = dt / 6.0
    h3 = dt / 3.0
    x2 = np.empty(n)
    x3 = np.empty(n)
    x4 = np.empty(n)
    k1 = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    l1 = np.empty(n)
    l2 = np.empty(n)
    l3 = np.empty(n)
    l4 = np.empty(n)
    u = np.empty(n)
    acc = np.empty(n)
    for r in range(m):
        xr = x[r]
        lr = lam[r]
        _rk4_stage_states(xr, dt, forcing, x2, x3, x4, k1, k2, k3, k4)
        for i in range(n):
            l1[i] = h6 * lr[i]
            l2[i] = h3 * lr[i]
            l3[i] = h3 * lr[i]
            l4[i] = h6 * lr[i]
            acc[i] = lr[i]
        _tendency_ad_row(x4, l4, u)
        for i in range(n):
            acc[i] = acc[i] + u[i]
            l3[i] = l3[i] + dt * u[i]
        _tendency_ad_row(x3, l3, u)
        for i in range(n):
            acc[i] = acc[i] + u[i]
            l2[i] = l2[i] + h2 * u[i]
        _tendency_ad_row(x2, l2, u)
        for i in range(n):
            acc[i] = acc[i] + u[i]
            l1[i] = l1[i] + h2 * u[i]
        _tendency_ad_row(xr, l1, u)
        for i in range(n):
            out[r, i] = acc[i] + u[i]


# ----------------------------------------------------------------------------------------------------------
# Ensemble analyses (R = r I, H = selection of the variables ``idx``)


@njit(cache=True, inline="always")
def _inflated_anomalies(ens, inflation, mean, anom):  # pragma: no cover - compiled
    """Ensemble mean ``[n]`` and inflated anomalies ``[N, n]`` of ``ens [N, n]``; False if not finite."""
    n_mem, n = ens.shape
    for j in range(n):
        mean[j] = 0.0
    for i in range(n_mem):
        for j in range(n):
            mean[j] += ens[i, j]
    total = 0.0
    for j in range(n):
        mean[j] /= n_mem
        total += mean[j]
    if not np.isfinite(total):
        return False
    for i in range(n_mem):
        for j in range(n):
            anom[i, j] = inflation * (ens[i, j] - mean[j])
    return True


@njit(cache=True)
def etkf_update(ens, y, idx, r_inv, inflation, rot, out):  # pragma: no cover - compiled
    """Symmetric square-root ETKF for every experiment of ``ens [K, N, n]`` with ``y [K, p]``.

    ``rot [K, N, N]`` are mean-preserving rotations applied on the left of the transform (pass ``[0, N, N]``
    for none). Writes the analysis to ``out [K, N_out, n]``: the first ``N_out <= N`` members (the transform
    uses all N); returns -1, or the index of the first experiment whose background is not finite (its analysis
    is left unwritten).
    """
    n_exp, n_mem, n = ens.shape
    n_out = out.shape[1]
    p = idx.shape[0]
    n1 = n_mem - 1.0
    mean = np.empty(n)
    anom = np.empty((n_mem, n))
    yanom = np.empty((n_mem, p))
    innov = np.empty(p)
    for k in range(n_exp):
        if not _inflated_anomalies(ens[k], inflation, mean, anom):
            return k
        for q in range(p):
            innov[q] = y[k, q] - mean[idx[q]]
            for i in range(n_mem):
                yanom[i, q] = anom[i, idx[q]]
        # Ensemble-space precision C = Y R^-1 Y^T, eigen-decomposed once for both the mean and the transform.
        c = (yanom @ yanom.T) * r_inv  # [N, N]
        lam, v = np.linalg.eigh(c)
        g = (yanom @ innov) * r_inv  # [N]
        coef = v.T @ g
        scale = np.empty(n_mem)
        for i in range(n_mem):
            denom = n1 + max(lam[i], 0.0)
            coef[i] /= denom
            scale[i] = np.sqrt(n1 / denom)
        w = v @ coef  # mean weights [N]
        vs = v * scale  # [N, N]
        t = vs @ v.T  # symmetric transform [N, N]
        if rot.shape[0] > 0:
            t = rot[k] @ t
        for i in range(n_out):
            for j in range(n_mem):
                t[i, j] += w[j]
        xa = np.ascontiguousarray(t[:n_out]) @ anom  # [N_out, n]
        for i in range(n_out):
            for j in range(n):
                out[k, i, j] = mean[j] + xa[i, j]
    return -1


@njit(cache=True)
def haar_rotations(gauss, basis, out):  # pragma: no cover - compiled
    """Mean-preserving Haar rotations ``out [K, N, N] = 1 1^T / N + U G_k U^T`` from ``gauss [K, N-1, N-1]``.

    ``G_k`` is the Q factor of ``gauss[k]`` with the signs of R's diagonal moved into it (Haar on O(N-1));
    ``basis [N, N-1]`` is an orthonormal basis ``U`` of the complement of the ones vector.
    """
    n_exp, m, _ = gauss.shape
    n_mem = m + 1
    for k in range(n_exp):
        q_any, r = np.linalg.qr(gauss[k])
        q = np.ascontiguousarray(q_any)  # numba's qr returns a non-contiguous layout type
        for j in range(m):
            if r[j, j] < 0.0:
                for i in range(m):
                    q[i, j] = -q[i, j]
        rot = basis @ (q @ basis.T)  # [N, N]
        for i in range(n_mem):
            for j in range(n_mem):
                out[k, i, j] = rot[i, j] + 1.0 / n_mem


@njit(cache=True)
def enkf_update(ens, y, pert, idx, r_inv, inflation, out):  # pragma: no cover - compiled
    """Perturbed-observation EnKF for ``ens [K, N, n]``, ``y [K, p]``, perturbations ``pert [K, N, p]``.

    Every member ``i`` assimilates ``y + pert_i`` with the Kalman gain of the inflated ensemble, written in
    ensemble space ``K = A^T (Y R^-1 Y^T + (N-1) I)^-1 Y R^-1``. Only the first ``N_out`` members are updated
    (``pert [K, N_out, p]``, ``out [K, N_out, n]``; the gain uses all N). Returns -1 or the first non-finite
    experiment.
    """
    n_exp, n_mem, n = ens.shape
    n_out = out.shape[1]
    p = idx.shape[0]
    n1 = n_mem - 1.0
    mean = np.empty(n)
    anom = np.empty((n_mem, n))
    yanom = np.empty((n_mem, p))
    innov = np.empty((n_out, p))
    for k in range(n_exp):
        if not _inflated_anomalies(ens[k], inflation, mean, anom):
            return k
        for i in range(n_mem):
            for q in range(p):
                yanom[i, q] = anom[i, idx[q]]
        for i in range(n_out):
            for q in range(p):
                innov[i, q] = y[k, q] + pert[k, i, q] - (mean[idx[q]] + anom[i, idx[q]])
        m = (yanom @ yanom.T) * r_inv  # [N, N]
        for i in range(n_mem):
            m[i, i] += n1
        g = (innov @ yanom.T) * r_inv  # [N_out, N]: g[i, j] = d_i . Y_j / r
        x = np.linalg.solve(m, np.ascontiguousarray(g.T))  # [N, N_out]
        inc = x.T @ anom  # [N_out, n]
        for i in range(n_out):
            for j in range(n):
                out[k, i, j] = mean[j] + anom[i, j] + inc[i, j]
    return -1


# ----------------------------------------------------------------------------------------------------------
# Scores

#: Up to this ensemble size the fair-CRPS pair sum runs as a branch-free double loop vectorised over variables;
#: above it, members are sorted (O(N log N)). Sorting short arrays is slow in practice: every comparison is a
#: branch the CPU mispredicts on fresh data. Measured per 40-variable ensemble: N = 20 pairs 4 us (insertion
#: sort 14 us), N = 100 pairs 43 us (sort 136 us), N = 200 pairs 166 us (sort 304 us).
PAIR_LOOP_MAX_MEMBERS = 256


@njit(cache=True)
def score_ensemble(ens, truth, out, total, hist):  # pragma: no cover - compiled
    """Per-experiment scores of ``ens [K, N, n]`` against ``truth [K, n]``.

    Writes ``out[k] = (rmse of the mean, spread, fair CRPS)``, adds them to ``total [K, 3]`` and adds the rank
    of the truth (members strictly below it) for every variable to ``hist [K, N+1]``. Variables where the truth
    ties with a member are skipped; returns how many there were (the caller ranks them with a random generator).
    """
    n_exp, n_mem, n = ens.shape
    mean = np.empty(n)
    ss = np.empty(n)
    mae = np.empty(n)
    pair = np.empty(n)
    below = np.empty(n, dtype=np.int64)
    equal = np.empty(n, dtype=np.int64)
    col = np.empty(n_mem)
    ties = 0
    for k in range(n_exp):
        x = ens[k]  # [N, n]
        y = truth[k]  # [n]
        mean[:] = 0.0
        ss[:] = 0.0
        mae[:] = 0.0
        pair[:] = 0.0
        below[:] = 0
        equal[:] = 0
        for i in range(n_mem):
            for j in range(n):
                mean[j] += x[i, j]
        for j in range(n):
            mean[j] /= n_mem
        for i in range(n_mem):
            for j in range(n):
                d = x[i, j] - mean[j]
                ss[j] += d * d
                e = x[i, j] - y[j]
                mae[j] += abs(e)
                below[j] += e < 0.0
                equal[j] += e == 0.0
        # pair[j] = sum_{i < i2} |x_i - x_i2| for variable j (half the double sum of the fair CRPS).
        if n_mem <= PAIR_LOOP_MAX_MEMBERS:
            for i in range(n_mem):
                for i2 in range(i + 1, n_mem):
                    for j in range(n):
                        pair[j] += abs(x[i, j] - x[i2, j])
        else:
            for j in range(n):
                for i in range(n_mem):
                    col[i] = x[i, j]
                col.sort()
                # sum_{i < i2} |x_i - x_i2| = sum_i (2 i - N - 1) x_(i) over the sorted members (1-based i).
                acc = 0.0
                for i in range(n_mem):
                    acc += (2.0 * (i + 1) - n_mem - 1.0) * col[i]
                pair[j] = acc
        se = 0.0
        var = 0.0
        crps = 0.0
        for j in range(n):
            se += (mean[j] - y[j]) * (mean[j] - y[j])
            if equal[j] == 0:
                hist[k, below[j]] += 1
            else:
                ties += 1
            if n_mem > 1:
                var += ss[j] / (n_mem - 1)
                crps += mae[j] / n_mem - pair[j] / (n_mem * (n_mem - 1.0))
            else:
                crps += mae[j]
        out[k, 0] = np.sqrt(se / n)
        out[k, 1] = np.sqrt(var / n)
        out[k, 2] = crps / n
        for c in range(3):
            total[k, c] += out[k, c]
    return ties
