"""A score over seeds: median, 10th-90th percentile band and the fraction of seeds that lost track.

A chaotic, marginal setting is a distribution, not one seed's long run (kernels and BLAS differ between CPUs).
Seeds whose state blew up to non-finite values count as ``inf``: they lost track, and they push the median up
as they should; the band is then ``inf`` where more than 10% of the seeds blew up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hybrid_eda.l96.metrics import LOST_TRACK_RMSE

__all__ = ["BAND", "SeedDistribution"]

#: Percentiles of the band reported beside the median.
BAND = (10.0, 90.0)


@dataclass(frozen=True)
class SeedDistribution:
    """Time-mean analysis RMSE of every seed, summarised.

    Attributes
    ----------
    median, low, high : float
        Median and the :data:`BAND` percentiles over seeds (``inf`` when blown-up seeds reach them).
    lost_fraction : float
        Fraction of seeds with RMSE above :data:`~hybrid_eda.l96.metrics.LOST_TRACK_RMSE` (or non-finite).
    seeds : int
        Number of seeds.
    values : list of float
        Every seed's RMSE, in seed order (``inf`` for a seed that blew up).
    """

    median: float
    low: float
    high: float
    lost_fraction: float
    seeds: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> SeedDistribution:
        """Summarise one value per seed; NaN (undefined) counts as blown up, ``inf``."""
        x = np.asarray(values, dtype=float)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"a distribution over seeds needs one value per seed, got shape {x.shape}.")
        x = np.where(np.isnan(x), np.inf, x)
        # Interpolate with the largest float standing in for inf (inf - inf would give NaN), then map it back.
        big = np.finfo(float).max
        low, median, high = np.where(
            (q := np.percentile(np.minimum(x, big), [BAND[0], 50.0, BAND[1]])) > 1e300, np.inf, q
        )
        return cls(
            median=float(median),
            low=float(low),
            high=float(high),
            lost_fraction=float(np.mean(~(x <= LOST_TRACK_RMSE))),
            seeds=int(x.size),
            values=[float(v) for v in x],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"band_percentiles": list(BAND), "lost_track_rmse": LOST_TRACK_RMSE}

    def __str__(self) -> str:
        return f"{self.median:.3f} [{self.low:.3f}, {self.high:.3f}], lost {self.lost_fraction:.0%} of {self.seeds}"
