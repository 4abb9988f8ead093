"""Control-variable transform of the 4D-Var EDA: the square root ``U`` of the background-error covariance.

Every member's increment is written ``x0 = xb_i + U v`` with ``B = U U^T``, so the background term of the cost
is ``1/2 v^T v`` and a rank-deficient ``B`` (an ensemble estimate) needs no inverse:

    ensemble:  U = X / sqrt(N - 1)                                     [n, N]      (rank N - 1)
    static:    U = L_s,  B_s = L_s L_s^T (Cholesky)                     [n, n]
    hybrid:    U = [sqrt(1 - w) L_s,  sqrt(w) X / sqrt(N - 1)]          [n, n + N]

so the hybrid ``B = (1 - w) B_s + w X X^T / (N - 1)``. ``X`` holds the (inflated) background anomalies as
columns. The basis is returned transposed, ``Ut = U^T`` with shape ``[..., m, n]`` (one row per control
variable), because that is the layout the tangent-linear model propagates: each row is a perturbation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["B_MODES", "ControlTransform", "static_b_sqrt"]

LOGGER = logging.getLogger(__name__)

#: Background-error covariance models understood by :class:`ControlTransform`.
B_MODES = ("ensemble", "static", "hybrid")


def static_b_sqrt(static_b: np.ndarray, n: int) -> np.ndarray:
    """Check a static covariance and return its lower Cholesky factor.

    Parameters
    ----------
    static_b : np.ndarray
        ``[n, n]`` symmetric positive-definite covariance.
    n : int
        State size the covariance must match.

    Returns
    -------
    np.ndarray
        ``[n, n]`` lower-triangular ``L`` with ``static_b = L L^T``.
    """
    b = np.asarray(static_b, dtype=float)
    if b.shape != (n, n):
        raise ValueError(
            f"static_b must be an [n, n] = [{n}, {n}] covariance matrix, got shape {b.shape}; pass the "
            "covariance of the model state (e.g. 0.05 times the climatological covariance of a long free run)."
        )
    if not np.all(np.isfinite(b)):
        raise ValueError("static_b contains NaN or infinite values; pass a finite covariance matrix.")
    scale = float(np.max(np.abs(b))) or 1.0
    if not np.allclose(b, b.T, rtol=0.0, atol=1e-10 * scale):
        raise ValueError(
            "static_b is not symmetric; pass a covariance matrix, e.g. symmetrise it with 0.5 * (B + B.T)."
        )
    try:
        return np.linalg.cholesky(0.5 * (b + b.T))
    except np.linalg.LinAlgError:
        raise ValueError(
            "static_b is not positive definite (its Cholesky factorisation failed); estimate it from more "
            "samples or add a small multiple of the identity (B + 1e-6 * trace(B) / n * I)."
        ) from None


@dataclass(frozen=True)
class ControlTransform:
    """Builds ``U^T`` for one of the :data:`B_MODES`.

    Parameters
    ----------
    b_mode : str
        ``"ensemble"``, ``"static"`` or ``"hybrid"``.
    static_sqrt : np.ndarray or None
        ``[n, n]`` lower Cholesky factor of the static covariance (see :func:`static_b_sqrt`); required for
        ``"static"`` and ``"hybrid"``.
    hybrid_weight : float
        Weight ``w`` of the ensemble covariance in the hybrid (``0`` = static only, ``1`` = ensemble only).
    """

    b_mode: str = "ensemble"
    static_sqrt: np.ndarray | None = None
    hybrid_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.b_mode not in B_MODES:
            raise ValueError(f"b_mode must be one of {B_MODES}, got {self.b_mode!r}.")
        if self.b_mode != "ensemble" and self.static_sqrt is None:
            raise ValueError(
                f"b_mode={self.b_mode!r} needs static_b, an [n, n] covariance (e.g. 0.05 times the climatological "
                "covariance of a long free run); pass static_b=... or use b_mode='ensemble'."
            )
        if not 0.0 <= self.hybrid_weight <= 1.0:
            raise ValueError(
                f"hybrid_weight is the weight of the ensemble covariance and must lie in [0, 1], got "
                f"{self.hybrid_weight}; use e.g. 0.5."
            )

    @property
    def uses_ensemble(self) -> bool:
        """Whether ``B`` contains the ensemble covariance (needs at least two members)."""
        return self.b_mode != "static"

    def size(self, n_members: int, n: int) -> int:
        """Number ``m`` of control variables for ``N = n_members`` members of a state of size ``n``."""
        return {"ensemble": n_members, "static": n, "hybrid": n + n_members}[self.b_mode]

    def basis(self, anomalies: np.ndarray) -> np.ndarray:
        """``U^T`` from the background anomalies.

        Parameters
        ----------
        anomalies : np.ndarray
            ``[..., N, n]`` (inflated) background anomalies ``xb_i - mean(xb)``.

        Returns
        -------
        np.ndarray
            ``[..., m, n]`` rows of ``U^T`` (columns of ``U``), ``B = U U^T``.
        """
        *batch, n_members, n = anomalies.shape
        parts = []
        if self.b_mode != "ensemble":
            static_rows = self.static_sqrt.T  # [n, n]: rows are the columns of L_s
            if self.b_mode == "hybrid":
                static_rows = np.sqrt(1.0 - self.hybrid_weight) * static_rows
            parts.append(np.broadcast_to(static_rows, (*batch, n, n)))
        if self.uses_ensemble:
            ens_rows = anomalies / np.sqrt(n_members - 1.0)  # [..., N, n]
            if self.b_mode == "hybrid":
                ens_rows = np.sqrt(self.hybrid_weight) * ens_rows
            parts.append(ens_rows)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-2)
