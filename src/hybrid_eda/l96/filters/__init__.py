"""Lorenz-96 data-assimilation filters (``window == 1``): ETKF, perturbed-observation EnKF, OI and 3D-Var.

Every filter maps a background ensemble ``[..., N, n]`` and observations ``[..., 1, p]`` to an analysis
ensemble ``[..., N, n]``; optional leading batch dims hold independent experiments updated in one call.
The ensemble filters run compiled numba kernels; their plain numpy references are ``etkf_reference`` and
``enkf_reference``.
"""

from hybrid_eda.l96.filters.climatology import Climatology, OptimalInterpolation, Var3D
from hybrid_eda.l96.filters.enkf import EnKF, enkf_reference
from hybrid_eda.l96.filters.etkf import ETKF, EnsembleFilter, etkf_reference

__all__ = [
    "ETKF",
    "EnKF",
    "EnsembleFilter",
    "Climatology",
    "OptimalInterpolation",
    "Var3D",
    "etkf_reference",
    "enkf_reference",
]
