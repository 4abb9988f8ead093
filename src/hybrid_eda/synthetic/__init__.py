"""A synthetic global EDA with a known truth and known background-error statistics, written as MARS-like GRIB.

Reduced (``N<n>``) and octahedral (``O<n>``) Gaussian grids computed locally, model levels ``1..L``, the six
EDA variables (vo, d, t, lnsp, q, o3), a smooth evolving truth, a known flow-dependent ``sigma_b`` (large-scale
+ sharp fronts of the flow + a latent part independent of the flow), ``N`` background members with spatially
correlated errors and an exact perturbed-observation analysis for each member.

    config = SyntheticEDAConfig(grid="O32", levels=3, members=5, start="2023-01-01T00", end="2023-01-01T18")
    sample = generate(config)                    # one date in memory: sample.backgrounds [N, G, F], ...
    files = write_synthetic_eda(config, "out")   # GRIB for anemoi-datasets

Output layout (details in :mod:`hybrid_eda.synthetic.writer`)::

    out/grib/bg_{YYYYMMDDHH}.grib        backgrounds: class=od stream=elda type=fc expver=0001 number=1..N levtype=ml
    out/grib/an_{YYYYMMDDHH}.grib        analyses: the same with type=an
    out/truth/truth_{YYYYMMDDHH}.grib    truth (stream=oper type=an, no number)
    out/truth/sigma_b_{YYYYMMDDHH}.grib  exact background-error std (stream=elda type=es, no number)
    out/truth/obs_{YYYYMMDDHH}.npz       observations (locations, values, error std)
    out/manifest.json                    every parameter and the file list

Command line: ``hybrid-eda synthetic --grid O32 --levels 3 --members 5 --start 2023-01-01T00
--end 2023-01-01T18 --frequency 6 --seed 1 --out DIR``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the module that defines them; imported on first use so that ``hybrid-eda --help`` (which
# imports ``hybrid_eda.synthetic.cli``) does not load numpy, ducc0 and eccodes.
_EXPORTS = {
    "ErrorConfig": "config",
    "FlowConfig": "config",
    "ObservationConfig": "config",
    "SyntheticEDAConfig": "config",
    "SyntheticEDA": "eda",
    "SyntheticEDASample": "eda",
    "generate": "eda",
    "GaussianGrid": "grids",
    "make_grid": "grids",
    "PATTERNS": "writer",
    "SyntheticEDAFiles": "writer",
    "write_synthetic_eda": "writer",
}

__all__ = [
    "PATTERNS",
    "ErrorConfig",
    "FlowConfig",
    "GaussianGrid",
    "ObservationConfig",
    "SyntheticEDA",
    "SyntheticEDAConfig",
    "SyntheticEDAFiles",
    "SyntheticEDASample",
    "generate",
    "make_grid",
    "write_synthetic_eda",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hybrid_eda.synthetic.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'hybrid_eda.synthetic' has no attribute {name!r}")
