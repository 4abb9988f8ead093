"""Flow features of the seen members' mean for the regression baseline: horizontal gradient magnitudes.

The synthetic EDA raises ``sigma_b`` on narrow bands where the truth's temperature gradient is strong
(:mod:`hybrid_eda.synthetic.errors`): ``F = |grad t| / rms(|grad t|)`` above a threshold. The truth is unknown to
an estimator, but the mean of its ``M`` members is the truth plus an error ``sigma_b / sqrt(M)``, so the
normalised gradient magnitude of that mean is a legitimate (and, on real EDAs, physically meaningful: fronts and
jets) predictor of where the spread is large. Nothing here looks at ``s_N``, ``sigma_b`` or the truth.

Two gradient operators of fields ``[..., G, F]`` on the unit sphere:

* :class:`SpectralGradient`: exact for band-limited fields on a known Gaussian grid (quadrature analysis, then
  ducc0's first derivatives), used when ``stats.grid`` names the grid the points lie on;
* :class:`LeastSquaresGradient`: a sparse local plane fit through the ``k`` nearest neighbours of each point in
  its tangent plane, for any point set (stores whose grid is not one we can build).
"""

from __future__ import annotations

import abc
import logging

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

__all__ = ["GradientOperator", "LeastSquaresGradient", "SpectralGradient", "make_gradient", "normalised_gradient"]

LOGGER = logging.getLogger(__name__)


class GradientOperator(abc.ABC):
    """``|grad f|`` on the unit sphere of fields ``[..., G, F]`` (or ``[G]``)."""

    npoints: int

    def magnitude(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-2] != self.npoints:
            raise ValueError(f"values have {values.shape[-2]} grid points on axis -2, the operator {self.npoints}.")
        grid_first = np.moveaxis(values, -2, 0)  # [G, ..., F]
        out = self._magnitude(grid_first.reshape(self.npoints, -1))  # [G, T]
        return np.moveaxis(out.reshape(grid_first.shape), 0, -2)

    @abc.abstractmethod
    def _magnitude(self, columns: np.ndarray) -> np.ndarray:
        """``columns [G, T]`` -> ``|grad| [G, T]``."""


class SpectralGradient(GradientOperator):
    """Exact gradient of band-limited fields on a Gaussian grid (``"O32"``, ``"N80"``, ...)."""

    def __init__(self, grid, nthreads: int = 1) -> None:
        from hybrid_eda.synthetic.fields import SphericalTransform
        from hybrid_eda.synthetic.grids import make_grid

        self.grid = make_grid(grid) if isinstance(grid, str) else grid
        self.transform = SphericalTransform(self.grid, nthreads=nthreads)
        self.npoints = self.grid.npoints
        self._weights = np.asarray(self.grid.area_weights)

    def _magnitude(self, columns: np.ndarray) -> np.ndarray:
        alm = self.transform.adjoint_synthesis(columns.T * self._weights)  # [T, nalm]: quadrature analysis
        gradient = self.transform.gradient(alm)  # [T, 2, G]
        return np.sqrt(np.sum(gradient**2, axis=1)).T  # [G, T]


class LeastSquaresGradient(GradientOperator):
    """Gradient from a plane fit through each point's ``neighbours`` nearest points (tangent-plane coordinates)."""

    def __init__(self, latitudes: np.ndarray, longitudes: np.ndarray, neighbours: int = 8) -> None:
        lat, lon = np.radians(np.asarray(latitudes, float)), np.radians(np.asarray(longitudes, float))
        points = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)  # [G, 3]
        self.npoints = points.shape[0]
        k = min(int(neighbours), self.npoints - 1)
        if k < 3:
            raise ValueError(f"a gradient needs at least 4 grid points, got {self.npoints}.")
        _, index = cKDTree(points).query(points, k=k + 1)
        index = index[:, 1:]  # [G, k] without the point itself
        east = np.stack([-np.sin(lon), np.cos(lon), np.zeros_like(lon)], axis=-1)  # [G, 3]
        north = np.stack([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)], axis=-1)
        delta = points[index] - points[:, None, :]  # [G, k, 3]
        design = np.stack([np.einsum("gkc,gc->gk", delta, east), np.einsum("gkc,gc->gk", delta, north)], -1)
        normal = np.einsum("gki,gkj->gij", design, design)  # [G, 2, 2]
        coefficients = np.linalg.solve(normal, np.swapaxes(design, 1, 2))  # [G, 2, k]
        rows = np.repeat(np.arange(self.npoints), k)
        self._operators = []
        for component in range(2):
            values = coefficients[:, component, :]  # [G, k]
            matrix = sparse.csr_matrix((values.ravel(), (rows, index.ravel())), shape=(self.npoints,) * 2)
            self._operators.append(matrix - sparse.diags(values.sum(axis=1)))

    def _magnitude(self, columns: np.ndarray) -> np.ndarray:
        return np.sqrt(sum((op @ columns) ** 2 for op in self._operators))


def make_gradient(latitudes: np.ndarray, longitudes: np.ndarray, grid: str | None = None) -> GradientOperator:
    """The spectral operator when ``grid`` is a Gaussian grid whose points are these, the local fit otherwise."""
    if grid is not None:
        try:
            from hybrid_eda.synthetic.grids import make_grid

            known = make_grid(grid)
        except ValueError:
            known = None
        if (
            known is not None
            and known.npoints == len(latitudes)
            and np.allclose(known.latitudes, latitudes, atol=1e-4)
            and np.allclose(np.mod(known.longitudes, 360.0), np.mod(longitudes, 360.0), atol=1e-4)
        ):
            return SpectralGradient(known)
        LOGGER.info("grid %s does not match the points; local least-squares gradient", grid)
    return LeastSquaresGradient(latitudes, longitudes)


def normalised_gradient(values: np.ndarray, operator: GradientOperator, area_weights: np.ndarray) -> np.ndarray:
    """``|grad f| / sqrt(area-mean |grad f|^2)`` per date and field: ``[D, G, F]`` -> ``[D, G, F]``.

    The normalisation of the synthetic front indicator, so the feature is unit-free and comparable across
    levels, variables and dates (a constant field gives 0).
    """
    magnitude = operator.magnitude(values)  # [D, G, F]
    w = np.asarray(area_weights, dtype=np.float64)
    rms = np.sqrt(np.einsum("dgf,g->df", magnitude**2, w) / w.sum())  # [D, F]
    return magnitude / np.where(rms > 0, rms, 1.0)[:, None, :]
