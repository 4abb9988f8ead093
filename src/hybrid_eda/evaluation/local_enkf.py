"""A non-neural baseline of the global hybrid: a localised perturbed-observation EnKF that *knows the form of the
analysis* (an estimator, like the Lorenz-96 ``etkf-reconstruction``; not a learned generator, not a competitor).

Members ``N_s + 1 .. N`` of one date are their own backgrounds updated with the date's observations,

    x_a,j = x_b,j + K (y + s_o e_j - H x_b,j),    K = P H^T (H P H^T + s_o^2 I)^-1,

with ``P`` the Gaspari-Cohn localised sample covariance of **all N backgrounds** (the N_s guides' and the members'
own: everything a hybrid cycle has before its analyses), ``s_o`` per field from the N_s real (background, analysis)
pairs by Desroziers et al. (2005) and ``e_j`` unit normals from ``torch.Generator().manual_seed(seed)``
(:func:`hybrid_eda.layers.local_kalman.localised_update`). It never reads the hidden analyses
``case.analyses[N_s:]`` (the base class hands it the first N_s only) nor the truth, nor the files' observation
errors: the date's observations (``read_cases(..., observations=True)``), the backgrounds and the N_s real analyses.

The synthetic EDA's analysis is this update with the exact ``B`` in place of ``P`` (:mod:`hybrid_eda.synthetic.
analysis`), so the row shows what knowing the analysis' form buys, against which a learned generator is read.

    hybrid-eda evaluate members --test test-eda --real 14 --local-enkf 1000,1500 --out eval
"""

from __future__ import annotations

import math

import numpy as np

from hybrid_eda.errors import UserInputError
from hybrid_eda.evaluation.hybrid_members import HybridCase, MemberSource

__all__ = ["LocalEnKFSource", "parse_radii"]


def parse_radii(spec: str) -> list[float]:
    """``"1000,1500"`` -> ``[1000.0, 1500.0]``: Gaspari-Cohn half-widths in km (``--local-enkf``).

    Raises
    ------
    UserInputError
        An empty spec, a value that is not a finite number > 0, or one given twice.
    """
    radii: list[float] = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        try:
            km = float(part.removesuffix("km"))
        except ValueError:
            km = math.nan
        if not (math.isfinite(km) and km > 0):
            raise UserInputError(
                f"--local-enkf {spec!r}: {part!r} is not a localisation half-width > 0 in km; give KM[,KM...], "
                "e.g. --local-enkf 1000,1500"
            )
        if km in radii:
            raise UserInputError(f"--local-enkf {spec!r} gives {km:g} km twice")
        radii.append(km)
    if not radii:
        raise UserInputError(f"--local-enkf {spec!r} holds no half-width; give KM[,KM...], e.g. --local-enkf 1500")
    return radii


class LocalEnKFSource(MemberSource):
    """Members ``N_s + 1 .. N`` from a localised perturbed-observation EnKF of all backgrounds (module docstring).

    Parameters
    ----------
    latitudes, longitudes : np.ndarray
        ``[G]`` the grid's points in degrees (``read_cases``' ``info["grid"]``: :meth:`from_grid`).
    radius_km : float
        Gaspari-Cohn half-width (km); covariances are zero beyond twice it.
    floor : float
        Smallest observation-error std (physical units, every field), passed to
        :func:`~hybrid_eda.layers.local_kalman.desroziers_obs_std`.
    """

    def __init__(self, latitudes: np.ndarray, longitudes: np.ndarray, radius_km: float, *, floor: float = 0.0):
        import torch

        from hybrid_eda.layers.local_kalman import unit_vectors

        radius_km = float(radius_km)
        if not (math.isfinite(radius_km) and radius_km > 0):
            raise UserInputError(f"local EnKF: the localisation half-width must be > 0 km, got {radius_km}")
        latitudes, longitudes = np.array(latitudes, dtype=np.float64), np.array(longitudes, dtype=np.float64)
        if latitudes.ndim != 1 or latitudes.shape != longitudes.shape:
            raise UserInputError(f"local EnKF: latitudes {latitudes.shape}, longitudes {longitudes.shape}: need [G]")
        self.positions = unit_vectors(torch.from_numpy(latitudes), torch.from_numpy(longitudes))  # [G, 3] float64
        self.radius_km, self.floor = radius_km, float(floor)
        self.name = f"local-enkf-{radius_km:g}km"
        # short: the maps' panel titles; the module docstring says the rest (an estimator, not a learned generator)
        self.label = f"from a localised EnKF, {radius_km:g} km (knows the form of the analysis)"
        self._observations: np.ndarray | None = None  # [G, F] of the case being generated
        #: ``[F]`` observation-error std of the latest case (Desroziers, from the N_s real pairs).
        self.last_obs_std: np.ndarray | None = None

    @classmethod
    def from_grid(cls, grid, radius_km: float, **kwargs) -> LocalEnKFSource:
        """On ``grid`` (degrees: a :class:`~hybrid_eda.synthetic.grids.GaussianGrid`)."""
        return cls(grid.latitudes, grid.longitudes, radius_km, **kwargs)

    def members(self, case: HybridCase, n_real: int, seed: int) -> np.ndarray:
        """As :meth:`MemberSource.members` (never sees ``case.analyses[N_s:]``), with ``case.observations``.

        Raises
        ------
        UserInputError
            The case has no observations, or another grid than the source's.
        """
        if case.observations is None:
            raise UserInputError(
                f"{self.name}: the local EnKF updates the backgrounds with the date's observations but the case of "
                f"{case.date.isoformat()} has none; read the cases with read_cases(..., observations=True) from a "
                "synthetic EDA folder that holds truth/obs_*.npz (`hybrid-eda synthetic` writes them)"
            )
        if case.truth.shape[0] != self.positions.shape[0]:
            raise UserInputError(
                f"{self.name}: the case has {case.truth.shape[0]} grid points, the source's grid "
                f"{self.positions.shape[0]}; build it on the test EDA's grid (LocalEnKFSource.from_grid(info['grid']))"
            )
        self._observations = case.observations
        try:
            return super().members(case, n_real, seed)
        finally:
            self._observations = None

    def _generate(self, starts, guides, guide_backgrounds, seed):
        """``starts [k, G, F]``, ``guides``/``guide_backgrounds [N_s, G, F]`` -> ``[k, G, F]`` updated starts."""
        import torch

        from hybrid_eda.layers.local_kalman import guided_update

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))[None]  # [1, ...]

        if self._observations is None:  # pragma: no cover - members() sets them
            raise RuntimeError(f"{self.name}: call members(case, ...), not _generate")
        with torch.no_grad():
            x, guide_a, guide_b = tensor(starts), tensor(guides), tensor(guide_backgrounds)  # [1, k|N_s, G, F]
            observations = tensor(self._observations)  # [1, G, F], NaN unobserved
            generator = torch.Generator().manual_seed(int(seed))
            perturbations = torch.randn(x.shape, generator=generator, dtype=torch.float64)  # [1, k, G, F]
            # the covariance of all N backgrounds of the date (the starts' and the guides')
            out, obs_std = guided_update(x, x, guide_a, guide_b, observations, self.positions, self.radius_km,
                                         perturbations, self.floor)  # fmt: skip
        self.last_obs_std = obs_std[0].numpy()
        return out[0].numpy()
