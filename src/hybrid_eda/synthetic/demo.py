"""Demo step: a small synthetic global EDA, turned into anemoi-datasets stores by the shipped offline recipes,
and checked against its known background-error standard deviation.

    synthetic EDA (GRIB, MARS layout) --anemoi-datasets create--> member store + N-member std store
                                                                  --> compare with the exact sigma_b

The same recipes, pointed at MARS (``recipes/eda-n80-ml*.yaml``), build the operational stores.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

LOGGER = logging.getLogger(__name__)

__all__ = ["demo"]

#: The offline twins built by the demo: store name -> recipe shipped in ``recipes/``.
RECIPES = {"members": "eda-n80-ml-local.yaml", "std": "eda-n80-ml-std-local.yaml"}


def _create_store(recipe: Path, store: Path, cwd: Path) -> None:
    """``anemoi-datasets create recipe store`` in ``cwd`` (the twins read ``synthetic-eda/`` relative to it)."""
    cmd = [sys.executable, "-m", "anemoi.datasets", "create", str(recipe), str(store), "--overwrite"]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{result.stderr[-3000:]}")


def _read_grib(path: Path) -> dict[str, np.ndarray]:
    """``{"{param}_{level}": values [G]}`` of a single-member GRIB file (truth or sigma_b)."""
    import earthkit.data as ekd

    return {
        f"{f.metadata('shortName')}_{f.metadata('level')}": f.to_numpy(flatten=True)
        for f in ekd.from_source("file", str(path))
    }


def demo(out_dir: Path, members: int = 10, levels: int = 3, grid: str = "O32", seed: int = 1) -> dict[str, Any]:
    """Write a synthetic EDA under ``out_dir``, build its member and std stores, compare the std with sigma_b.

    Returns
    -------
    dict
        Store shapes, ``std_max_abs_diff`` (stored std vs numpy's on the stored members), and per variable the
        area-mean ratio of the N-member sample variance to the exact sigma_b^2 (about 1: the members carry the
        error statistics they were drawn with) and the correlation between sample std and sigma_b.
    """
    from anemoi.datasets import open_dataset

    from hybrid_eda.data.grids import use_local_grids
    from hybrid_eda.resources import recipes_dir
    from hybrid_eda.synthetic.config import SyntheticEDAConfig
    from hybrid_eda.synthetic.writer import write_synthetic_eda

    out_dir = Path(out_dir).resolve()
    use_local_grids()
    config = SyntheticEDAConfig(grid=grid, levels=levels, members=members, seed=seed)
    files = write_synthetic_eda(config, out_dir / "synthetic-eda", overwrite=True)
    stores = {}
    for name, recipe in RECIPES.items():
        stores[name] = out_dir / f"{name}.zarr"
        LOGGER.info("anemoi-datasets create %s %s", recipe, stores[name])
        _create_store(recipes_dir() / recipe, stores[name], cwd=out_dir)

    ens = open_dataset(str(stores["members"]))  # [dates, variables, N, G]
    std = open_dataset(str(stores["std"]))  # [dates, variables, 1, G]
    ens_data, std_data = ens[:], std[:]
    names = list(ens.variables)
    order = [std.name_to_index[f"{v.split('_')[0]}_std_{v.split('_')[1]}"] for v in names]
    numpy_std = ens_data.std(axis=2, ddof=1)  # [dates, variables, G]
    std_max_abs_diff = float(np.abs(std_data[:, order, 0, :] - numpy_std).max())

    sigma_b = [_read_grib(path) for path in files.sigma_b]  # per date {name: [G]}
    exact = np.stack([[fields[v] for v in names] for fields in sigma_b])  # [dates, variables, G]
    per_variable = {}
    for j, v in enumerate(names):
        s, e = numpy_std[:, j].ravel(), exact[:, j].ravel()
        per_variable[v] = {
            "variance_ratio": float(np.mean(s**2) / np.mean(e**2)),
            "std_sigma_b_correlation": float(np.corrcoef(s, e)[0, 1]),
        }
    _plot(out_dir / "std_vs_sigma_b.png", ens, numpy_std, exact, names, members)
    summary = {
        "grid": grid,
        "members": members,
        "levels": levels,
        "member_store_shape": list(ens.shape),
        "std_store_shape": list(std.shape),
        "std_max_abs_diff": std_max_abs_diff,
        "variables": per_variable,
    }
    ratios = [p["variance_ratio"] for p in per_variable.values()]
    print(
        f"synthetic EDA {grid} x {levels} levels x {members} members -> stores {tuple(ens.shape)} and "
        f"{tuple(std.shape)}; stored std = numpy's to {std_max_abs_diff:.1e}; sample variance / sigma_b^2 "
        f"in [{min(ratios):.2f}, {max(ratios):.2f}]"
    )
    return summary


def _plot(path: Path, ens: Any, sample_std: np.ndarray, exact: np.ndarray, names: list[str], members: int) -> None:
    """Maps of the exact sigma_b and the N-member sample std of one temperature level on the first date."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    j = next((i for i, v in enumerate(names) if v.startswith("t_")), 0)
    lat, lon = ens.latitudes, ens.longitudes
    vmax = float(np.percentile(exact[0, j], 99))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    for ax, values, title in (
        (axes[0], exact[0, j], f"exact sigma_b, {names[j]}"),
        (axes[1], sample_std[0, j], f"{members}-member sample std, {names[j]}"),
    ):
        im = ax.scatter(lon, lat, c=values, s=2, vmin=0, vmax=vmax, cmap="viridis")
        ax.set(title=title, xlabel="longitude", ylabel="latitude", xlim=(0, 360), ylim=(-90, 90))
    fig.colorbar(im, ax=axes, shrink=0.8, label="K")
    fig.savefig(path, dpi=90)
    plt.close(fig)
