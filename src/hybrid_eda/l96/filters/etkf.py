"""Ensemble transform Kalman filter (ETKF) with a symmetric square root, and the input checks all filters share.

With background members ``x_i`` (rows of ``E [N, n]``), mean ``xb``, inflated anomalies ``A = rho (E - xb)``,
observation anomalies ``Y = A H^T [N, p]``, ``R = r I`` and innovation ``d = y - H xb`` (Hunt et al. 2007;
Sakov & Oke 2008)::

    C   = Y R^-1 Y^T = V diag(lam) V^T                      [N, N]
    w   = V diag(1 / (N-1 + lam)) V^T Y R^-1 d               [N]     mean weights
    T   = V diag(sqrt((N-1) / (N-1 + lam))) V^T              [N, N]  symmetric square root
    E_a = xb + (T + 1 w^T) A

The mean update equals the Kalman update with the ensemble covariance ``Pb = A^T A / (N-1)`` and the analysis
anomalies have covariance ``(I - K H) Pb``. ``T`` is symmetric and ``T 1 = 1`` (the ones vector spans the null
space of ``C`` because anomalies sum to zero), so the transform keeps the analysis anomalies centred: the
analysis mean is exactly ``xb + A^T w`` (mean-preserving, Sakov & Oke 2008, Livings et al. 2008).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from hybrid_eda.l96 import _kernels
from hybrid_eda.l96.base import Assimilator, FilterDivergenceError, analyses_kept
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.seeding import is_generator

__all__ = ["ETKF", "EnsembleFilter", "etkf_reference", "flatten_filter_input", "mean_preserving_rotations"]

LOGGER = logging.getLogger(__name__)


def flatten_filter_input(
    background: np.ndarray, observations: np.ndarray, n: int, p: int, min_members: int, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Check a filter's input and flatten its leading batch dims.

    Parameters
    ----------
    background : np.ndarray
        ``[..., N, n]`` background ensemble.
    observations : np.ndarray
        ``[..., 1, p]`` observations (one observation time: filters have ``window == 1``).
    n, p : int
        State and observation sizes.
    min_members : int
        Smallest usable ``N``.
    method : str
        Name used in error messages.

    Returns
    -------
    tuple of np.ndarray
        ``ens [K, N, n]`` and ``y [K, p]``, C-contiguous float64 (views when the input already is).
    """
    bg = np.asarray(background, dtype=np.float64)
    if bg.ndim < 2 or bg.shape[-1] != n:
        raise ValueError(
            f"{method}: background must be an ensemble [..., N, n] with n={n} variables on the last axis, "
            f"got shape {bg.shape}; stack members on axis -2 (e.g. shape (20, {n}))."
        )
    n_mem = bg.shape[-2]
    if n_mem < min_members:
        if min_members >= 2:
            raise ValueError(
                f"{method}: an ensemble filter needs at least 2 members to estimate the background covariance, "
                f"got N={n_mem}; use N >= 2 (N=20 in the Sakov & Oke 2008 setting)."
            )
        raise ValueError(f"{method}: background has no members (shape {bg.shape}); pass at least one member.")
    yo = np.asarray(observations, dtype=np.float64)
    expected = bg.shape[:-2] + (1, p)
    if yo.shape != expected:
        raise ValueError(
            f"{method}: observations must have shape [..., 1, p] = {expected} for a background of shape "
            f"{bg.shape} (a filter assimilates one observation time; p={p} observed variables), "
            f"got {yo.shape}; add the window axis with y[..., None, :]."
        )
    return np.ascontiguousarray(bg).reshape(-1, n_mem, n), np.ascontiguousarray(yo).reshape(-1, p)


def etkf_reference(
    ens: np.ndarray,
    y: np.ndarray,
    obs_index: np.ndarray,
    obs_variance: float,
    inflation: float,
    rotation: np.ndarray | None = None,
    n_analyses: int | None = None,
) -> np.ndarray:
    """Plain numpy float64 ETKF (the reference the compiled kernel is tested against).

    Parameters
    ----------
    ens : np.ndarray
        ``[..., N, n]`` background ensemble.
    y : np.ndarray
        ``[..., p]`` observations.
    obs_index : np.ndarray
        ``[p]`` observed variables.
    obs_variance : float
        ``r`` in ``R = r I``.
    inflation : float
        Multiplicative inflation of the background anomalies.
    rotation : np.ndarray, optional
        ``[..., N, N]`` mean-preserving orthogonal matrices applied to the analysis anomalies.
    n_analyses : int, optional
        Form only the first ``n_analyses`` analysis members (the transform still uses all N).

    Returns
    -------
    np.ndarray
        ``[..., N, n]`` (``[..., n_analyses, n]``) analysis ensemble.
    """
    n1 = ens.shape[-2] - 1.0
    mean = ens.mean(axis=-2, keepdims=True)  # [..., 1, n]
    anom = inflation * (ens - mean)  # [..., N, n]
    yanom = anom[..., obs_index]  # [..., N, p]
    innov = y - mean[..., 0, obs_index]  # [..., p]
    c = yanom @ np.swapaxes(yanom, -1, -2) / obs_variance  # [..., N, N]
    lam, v = np.linalg.eigh(c)
    lam = np.maximum(lam, 0.0)  # [..., N]
    g = np.einsum("...ip,...p->...i", yanom, innov) / obs_variance  # [..., N]
    w = np.einsum("...ij,...j->...i", v, np.einsum("...ji,...j->...i", v, g) / (n1 + lam))  # [..., N]
    t = (v * np.sqrt(n1 / (n1 + lam))[..., None, :]) @ np.swapaxes(v, -1, -2)  # [..., N, N]
    if rotation is not None:
        t = rotation @ t
    return mean + (t[..., :n_analyses, :] + w[..., None, :]) @ anom


def mean_preserving_rotations(n_exp: int, n_mem: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-random orthogonal ``[K, N, N]`` matrices ``Q`` with ``Q 1 = 1`` (so ``Q^T 1 = 1`` too).

    ``Q = 1 1^T / N + U G U^T`` with ``U [N, N-1]`` an orthonormal basis of the complement of the ones vector
    and ``G`` Haar-distributed on O(N-1) (QR of a Gaussian matrix with the sign of R's diagonal fixed).
    """
    out = np.empty((n_exp, n_mem, n_mem))
    _kernels.haar_rotations(rng.standard_normal((n_exp, n_mem - 1, n_mem - 1)), _complement_basis(n_mem), out)
    return out


@functools.lru_cache(maxsize=16)
def _complement_basis(n_mem: int) -> np.ndarray:
    """Orthonormal basis ``[N, N-1]`` of the vectors orthogonal to the ones vector (cached: do not modify)."""
    ones = np.full((n_mem, 1), 1.0 / np.sqrt(n_mem))
    return np.ascontiguousarray(np.linalg.qr(np.hstack([ones, np.eye(n_mem)[:, : n_mem - 1]]))[0][:, 1:])


class EnsembleFilter(Assimilator):
    """Common set-up of the ensemble filters: multiplicative inflation, ``R = r I``, selection ``H``.

    Parameters
    ----------
    model : Lorenz96
        Forecast model (only its size is used by a filter).
    obs : ObservationOperator
        Observation operator; must observe a state of the model's size.
    inflation : float
        Multiplicative inflation ``rho >= 1`` of the background anomalies before the update.
    """

    #: Smallest ensemble the method can use.
    min_members: int = 2

    def __init__(self, model: Lorenz96, obs: ObservationOperator, inflation: float = 1.0) -> None:
        super().__init__(model, obs)
        if obs.n != model.n:
            raise ValueError(
                f"the observation operator is built for n={obs.n} variables but the model has n={model.n}; "
                "build both with the same n."
            )
        if not inflation >= 1.0:
            raise ValueError(
                f"inflation must be >= 1 (it multiplies the background anomalies), got {inflation}; "
                "use 1.0 for none, or e.g. 1.02 for N=20 in the Sakov & Oke 2008 setting."
            )
        self.inflation = float(inflation)
        self._idx = np.ascontiguousarray(obs.index, dtype=np.int64)  # [p]
        self._r_inv = 1.0 / obs.variance

    def _flatten(self, background: np.ndarray, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return flatten_filter_input(
            background, observations, self.model.n, self.obs.p, self.min_members, type(self).__name__
        )

    def _raise_divergence(self, status: int) -> None:
        raise FilterDivergenceError(
            f"{type(self).__name__}: the background of experiment {status} is not finite (the model blew up); "
            "this is filter divergence: use more members or a larger inflation."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inflation={self.inflation}, n={self.model.n}, p={self.obs.p})"


class ETKF(EnsembleFilter):
    """Symmetric square-root ETKF with multiplicative inflation and no localisation.

    Parameters
    ----------
    model : Lorenz96
        Forecast model.
    obs : ObservationOperator
        Observation operator (``R = obs_std^2 I``).
    inflation : float
        Multiplicative inflation of the background anomalies (>= 1).
    rotate : bool
        Multiply the symmetric transform by a fresh random mean-preserving rotation every cycle (DAPPER's
        ``rot=True``; Sakov & Oke 2008b). Off by default: the symmetric transform is deterministic and more
        robust. Measured over 64 seeded runs of 10,000 cycles at N = 20, inflation 1.02: 3 runs had a divergence
        episode without rotations and 10 with them, while rotations lower the median analysis RMSE from 0.188
        to 0.182 (N = 40: 0.184 to 0.178, as DAPPER's 0.175-0.178).
    compiled : bool
        Use the numba kernel (default); ``False`` runs :func:`etkf_reference` (plain numpy, slower).
    """

    def __init__(
        self,
        model: Lorenz96,
        obs: ObservationOperator,
        inflation: float = 1.0,
        rotate: bool = False,
        compiled: bool = True,
    ) -> None:
        super().__init__(model, obs, inflation)
        self.rotate = bool(rotate)
        self.compiled = compiled

    def __repr__(self) -> str:
        return f"ETKF(inflation={self.inflation}, rotate={self.rotate}, n={self.model.n}, p={self.obs.p})"

    def analyse(
        self,
        background: np.ndarray,
        observations: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        n_analyses: int | None = None,
    ) -> np.ndarray:
        """Analysis ensemble ``[..., N, n]`` from ``background [..., N, n]`` and ``observations [..., 1, p]``.

        Without rotations the ETKF is deterministic and ``rng`` is not used; with ``rotate=True`` it draws them.
        ``n_analyses=N_s`` returns ``[..., N_s, n]``: the transform (and the rotation) is still computed from all
        N backgrounds, as the method demands, and only the first N_s rows of ``(T + 1 w^T) A`` are formed. The
        cost is hardly reduced (the ``N x N`` eigendecomposition dominates), but the other analyses never exist.
        """
        ens, y = self._flatten(background, observations)  # [K, N, n], [K, p]
        n_exp, n_mem = ens.shape[:2]
        n_out = analyses_kept(n_analyses, n_mem)
        out_shape = np.shape(background)[:-2] + (n_out, self.model.n)
        if self.rotate:
            if not is_generator(rng):
                raise ValueError("ETKF(rotate=True) draws random rotations: pass rng=np.random.default_rng(seed).")
            rot = mean_preserving_rotations(n_exp, n_mem, rng)  # [K, N, N]
        else:
            rot = np.empty((0, n_mem, n_mem))  # the kernel's "no rotation"
        if not self.compiled:
            bad = np.flatnonzero(~np.isfinite(ens).all(axis=(-2, -1)))
            if bad.size:
                self._raise_divergence(int(bad[0]))
            out = etkf_reference(
                ens, y, self._idx, self.obs.variance, self.inflation, rot if self.rotate else None, n_out
            )
            return out.reshape(out_shape)
        out = np.empty((n_exp, n_out, self.model.n))
        status = _kernels.etkf_update(ens, y, self._idx, self._r_inv, self.inflation, rot, out)
        if status >= 0:
            self._raise_divergence(status)
        return out.reshape(out_shape)
