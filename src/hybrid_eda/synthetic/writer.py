"""Write a synthetic EDA to disk as GRIB laid out like MARS retrievals, plus truth, sigma_b and a manifest.

Layout of ``out_dir`` (stable: recipes in ``recipes/*-local.yaml`` read it)::

    grib/bg_{YYYYMMDDHH}.grib       backgrounds, class=od stream=elda type=fc expver=0001, number=1..N,
                                    levtype=ml, levelist=1..L (lnsp: 1), base time = date - step,
                                    step = background_step_hours, so valid_datetime = date
    grib/an_{YYYYMMDDHH}.grib       analyses, the same with type=an, step 0
    truth/truth_{YYYYMMDDHH}.grib   the truth: stream=oper type=an, no ensemble number
    truth/sigma_b_{YYYYMMDDHH}.grib the exact background-error std: stream=elda type=es, no number
    grib/obs_{YYYYMMDDHH}.grib      the observations on the grid: stream=elda type=gai, number=1..N (the same
                                    values for every member), step 0, missing (NaN) where unobserved
                                    (:mod:`hybrid_eda.synthetic.observation_grib`)
    truth/obs_{YYYYMMDDHH}.npz      the observations: obs_index [p], latitudes, longitudes [p],
                                    variables [F], values [F, p], std [F, p]
    manifest.json                   every parameter (seed, grid, levels, members, dates, variables,
                                    MARS keys, packing) and the file list; written last

Inside a GRIB file messages come variable by variable, level by level, member by member. Each file is written
under a temporary name and renamed when complete, and the manifest is written once every date is done, so an
interrupted run leaves no file that looks complete. In an anemoi-datasets recipe use e.g.
``grib: {path: OUT/grib/bg_{date:strftime(%Y%m%d%H)}.grib, param: [t, q], levtype: ml, levelist: [1, 2, 3]}``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.synthetic.config import SyntheticEDAConfig
from hybrid_eda.synthetic.eda import SyntheticEDA
from hybrid_eda.synthetic.gribio import (
    ANALYSIS,
    BACKGROUND,
    MARS_CLASS,
    MARS_EXPVER,
    SIGMA_B,
    TRUTH,
    GribEncoder,
)
from hybrid_eda.synthetic.observation_grib import OBSERVATION_GRIB, OBSERVATION_MARS, write_observation_messages
from hybrid_eda.synthetic.variables import VARIABLES

__all__ = ["PATTERNS", "SyntheticEDAFiles", "write_synthetic_eda"]

LOGGER = logging.getLogger(__name__)

#: File name patterns relative to the output folder, in anemoi-datasets' ``{date:strftime(...)}`` syntax.
PATTERNS = {
    "backgrounds": "grib/bg_{date:strftime(%Y%m%d%H)}.grib",
    "analyses": "grib/an_{date:strftime(%Y%m%d%H)}.grib",
    "truth": "truth/truth_{date:strftime(%Y%m%d%H)}.grib",
    "sigma_b": "truth/sigma_b_{date:strftime(%Y%m%d%H)}.grib",
    "observations": "truth/obs_{date:strftime(%Y%m%d%H)}.npz",
    "observation_grib": OBSERVATION_GRIB,
}
MANIFEST = "manifest.json"


def _path(kind: str, date: datetime) -> str:
    return PATTERNS[kind].replace("{date:strftime(%Y%m%d%H)}", date.strftime("%Y%m%d%H"))


@dataclass(frozen=True)
class SyntheticEDAFiles:
    """Paths written by :func:`write_synthetic_eda` (one entry per date in each tuple)."""

    root: Path
    manifest: Path
    backgrounds: tuple[Path, ...]
    analyses: tuple[Path, ...]
    truth: tuple[Path, ...]
    sigma_b: tuple[Path, ...]
    observations: tuple[Path, ...]
    observation_grib: tuple[Path, ...]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _manifest(config: SyntheticEDAConfig, eda: SyntheticEDA, files: dict[str, list[str]], timing: dict) -> dict:
    from hybrid_eda import __version__

    return {
        "format": "hybrid-eda synthetic EDA",
        "format_version": 1,
        "hybrid_eda_version": __version__,
        "created": datetime.now().isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "seed": config.seed,
        "grid": {
            "name": eda.grid.name,
            "gaussian_number": eda.grid.n,
            "octahedral": eda.grid.octahedral,
            "npoints": eda.grid.npoints,
            "spectral_truncation": eda.transform.lmax,
        },
        "levels": list(range(1, config.levels + 1)),
        "level_reference_pressure_pa": [round(float(p), 4) for p in eda.pressures],
        "members": config.members,
        "numbers": list(range(1, config.members + 1)),
        "dates": [d.isoformat() for d in config.dates],
        "frequency_hours": config.frequency_hours,
        "variables": [
            {
                "param": name,
                "paramId": VARIABLES[name].param_id,
                "units": VARIABLES[name].units,
                "long_name": VARIABLES[name].long_name,
                "levtype": "ml",
                "levelist": list(VARIABLES[name].levels(config.levels)),
            }
            for name in config.variables
        ],
        "mars": {
            "class": MARS_CLASS,
            "expver": MARS_EXPVER,
            "backgrounds": {
                "stream": BACKGROUND.stream,
                "type": BACKGROUND.mars_type,
                "step": config.background_step_hours,
                "number": "1..N",
            },
            "analyses": {"stream": ANALYSIS.stream, "type": ANALYSIS.mars_type, "step": 0, "number": "1..N"},
            "truth": {"stream": TRUTH.stream, "type": TRUTH.mars_type, "step": 0},
            "sigma_b": {"stream": SIGMA_B.stream, "type": SIGMA_B.mars_type, "step": 0},
            "observations": OBSERVATION_MARS,
        },  # fmt: skip
        "packing": {"packingType": "grid_simple", "bitsPerValue": config.bits_per_value},
        "patterns": dict(PATTERNS),
        "files": files,
        "timing": timing,
    }


def write_synthetic_eda(
    config: SyntheticEDAConfig, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> SyntheticEDAFiles:
    """Generate the synthetic EDA of ``config`` and write it under ``out_dir`` (layout in the module docstring).

    Streams field by field: memory stays at a few ``[N, G]`` float64 arrays whatever the number of levels.

    Parameters
    ----------
    config : SyntheticEDAConfig
    out_dir : path
        Output folder; created if needed.
    overwrite : bool
        Allow writing into a folder that already holds a synthetic EDA (its files are replaced).

    Returns
    -------
    SyntheticEDAFiles

    Raises
    ------
    ValueError
        If ``out_dir`` already holds a ``manifest.json`` and ``overwrite`` is false.
    """
    root = Path(out_dir)
    if (root / MANIFEST).exists() and not overwrite:
        raise ValueError(f"{root} already holds a synthetic EDA ({MANIFEST}); choose another folder or pass overwrite.")
    for sub in ("grib", "truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if overwrite and (root / MANIFEST).exists():
        (root / MANIFEST).unlink()

    started = time.perf_counter()
    eda = SyntheticEDA(config)
    files: dict[str, list[str]] = {kind: [] for kind in PATTERNS}
    per_date: list[dict[str, Any]] = []
    with GribEncoder(eda.grid, config.members, config.bits_per_value) as encoder:
        for state in eda.states():
            t0 = time.perf_counter()
            date = state.date
            names = {kind: _path(kind, date) for kind in PATTERNS}
            temporary = {kind: root / (name + ".part") for kind, name in names.items()}
            grib_kinds = ("backgrounds", "analyses", "truth", "sigma_b")
            streams = {kind: open(temporary[kind], "wb") for kind in grib_kinds}  # noqa: SIM115
            obs_names, obs_values, obs_std = [], [], []
            try:
                for block in eda.fields(state):
                    param_id = VARIABLES[block.param].param_id
                    keys = {"param_id": param_id, "level": block.level, "valid": date}
                    encoder.write(streams["truth"], block.truth, kind=TRUTH, **keys)
                    encoder.write(streams["sigma_b"], block.sigma_b, kind=SIGMA_B, **keys)
                    for i in range(config.members):
                        encoder.write(streams["backgrounds"], block.backgrounds[i], kind=BACKGROUND, number=i + 1,
                                      step_hours=config.background_step_hours, **keys)  # fmt: skip
                    for i in range(config.members):
                        encoder.write(streams["analyses"], block.analyses[i], kind=ANALYSIS, number=i + 1, **keys)
                    obs_names.append(block.name)
                    obs_values.append(block.observations)
                    obs_std.append(block.obs_std)
            finally:
                for stream in streams.values():
                    stream.close()
            with open(temporary["observations"], "wb") as handle:
                np.savez(
                    handle,
                    obs_index=state.obs_index,
                    latitudes=eda.grid.latitudes[state.obs_index],
                    longitudes=eda.grid.longitudes[state.obs_index],
                    variables=np.array(obs_names),
                    values=np.stack(obs_values),  # [F, p]
                    std=np.stack(obs_std),  # [F, p]
                )
            with open(temporary["observation_grib"], "wb") as handle:
                write_observation_messages(encoder, handle, names=np.array(obs_names), values=np.stack(obs_values),
                                           obs_index=state.obs_index, date=date)  # fmt: skip
            for kind, name in names.items():
                os.replace(temporary[kind], root / name)
                files[kind].append(name)
            seconds = time.perf_counter() - t0
            per_date.append({"date": date.isoformat(), "seconds": round(seconds, 2)})
            LOGGER.info("synthetic EDA %s: %d fields x %d members in %.1f s (peak RSS %.0f MB)",
                        date.isoformat(), len(obs_names), config.members, seconds, _peak_rss_mb())  # fmt: skip

    timing = {
        "total_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "per_date": per_date,
    }
    manifest = root / MANIFEST
    tmp = root / (MANIFEST + ".part")
    tmp.write_text(json.dumps(_manifest(config, eda, files, timing), indent=2) + "\n")
    os.replace(tmp, manifest)
    return SyntheticEDAFiles(
        root=root,
        manifest=manifest,
        **{kind: tuple(root / name for name in names) for kind, names in files.items()},
    )
