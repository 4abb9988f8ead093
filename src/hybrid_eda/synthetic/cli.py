"""``hybrid-eda synthetic``: write a synthetic global EDA (MARS-like GRIB, truth, sigma_b, manifest).

    hybrid-eda synthetic --grid O32 --levels 3 --members 5 --start 2023-01-01T00 --end 2023-01-01T18 \\
        --frequency 6 --seed 1 --out DIR [--variables t q] [--set errors.front_factor=4 ...]
    hybrid-eda synthetic-obs-grib DIR [--out COPY] [--overwrite]   # grib/obs_*.grib of an EDA from its npz
"""

from __future__ import annotations

import argparse
import json
import logging

from hybrid_eda.outputs import output_dir

__all__ = ["add_eda_arguments", "add_parser", "config_from_args"]

LOGGER = logging.getLogger(__name__)


def add_eda_arguments(
    parser: argparse.ArgumentParser, *, levels: int = 3, members: int = 5, end: str = "2023-01-01T18"
) -> None:
    """The options that define a synthetic EDA (:func:`config_from_args`), shared by every command that writes one."""
    parser.add_argument("--grid", default="O32", help="O<n> (octahedral) or N<n> (reduced Gaussian: N32, N48, N80, "
                        "N96, N128, ...); default O32")  # fmt: skip
    parser.add_argument("--levels", type=int, default=levels, help=f"model levels 1..L (default {levels}; ECMWF: 137)")
    parser.add_argument("--members", type=int, default=members, help=f"EDA members N (default {members}; ECMWF: 50)")
    parser.add_argument("--start", default="2023-01-01T00", help="first date, ISO (default 2023-01-01T00)")
    parser.add_argument("--end", default=end, help=f"last date, ISO (default {end})")
    parser.add_argument("--frequency", type=int, default=6, help="hours between dates (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--variables", nargs="+", default=None, help="subset of vo d t lnsp q o3 (default: all)")
    parser.add_argument("--background-step", type=int, default=6, help="forecast step of the backgrounds (h)")
    parser.add_argument("--bits", type=int, default=16, help="GRIB bits per value (default 16)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="physics parameter, e.g. errors.front_factor=4, observations.count=500, "
                        "flow.decorrelation_hours=48 (repeatable)")  # fmt: skip


def config_from_args(args: argparse.Namespace):  # noqa: ANN201 (SyntheticEDAConfig, imported lazily)
    """The :class:`~hybrid_eda.synthetic.config.SyntheticEDAConfig` of the options of :func:`add_eda_arguments`."""
    import os

    from hybrid_eda.synthetic.config import SyntheticEDAConfig, config_with_overrides
    from hybrid_eda.synthetic.variables import VARIABLE_NAMES

    config = SyntheticEDAConfig(
        grid=args.grid,
        levels=args.levels,
        members=args.members,
        start=args.start,
        end=args.end,
        frequency_hours=args.frequency,
        seed=args.seed,
        variables=tuple(args.variables) if args.variables else VARIABLE_NAMES,
        background_step_hours=args.background_step,
        bits_per_value=args.bits,
        threads=max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)),
    )
    return config_with_overrides(config, args.overrides)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``synthetic`` command (with ``func`` set) on the top-level ``hybrid-eda`` parser."""
    parser = subparsers.add_parser(
        "synthetic",
        help="write a synthetic global EDA with known truth and sigma_b as MARS-like GRIB",
        description="Write a synthetic global EDA (backgrounds and analyses of N members on model levels, the truth "
        "and the exact background-error std) as GRIB laid out like MARS retrievals, for anemoi-datasets recipes.",
    )
    add_eda_arguments(parser)
    parser.add_argument("--out", type=output_dir, required=True, help="output folder (created if missing)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing synthetic EDA in --out")
    parser.set_defaults(func=run)

    obs = subparsers.add_parser(
        "synthetic-obs-grib",
        help="write a synthetic EDA's observations as GRIB on the grid (grib/obs_*.grib) from its truth/obs_*.npz",
        description="Write grib/obs_{YYYYMMDDHH}.grib (stream elda, type gai, one copy per member, missing where "
        "unobserved) for every date of a synthetic EDA written before the writer produced them, from its npz.",
    )
    obs.add_argument("eda", help="the synthetic EDA folder (manifest.json, truth/obs_*.npz)")
    obs.add_argument("--out", type=output_dir, default=None,
                     help="write into this folder instead (e.g. a copy linking to a read-only EDA)")  # fmt: skip
    obs.add_argument("--overwrite", action="store_true", help="replace observation GRIB files that exist")
    obs.set_defaults(func=run_observation_grib)


def run(args: argparse.Namespace) -> int:
    """Build the configuration from ``args``, write the EDA and print a one-line summary; returns 0."""
    from hybrid_eda.synthetic.writer import write_synthetic_eda

    config = config_from_args(args)
    files = write_synthetic_eda(config, args.out, overwrite=args.overwrite)
    timing = json.loads(files.manifest.read_text())["timing"]
    print(
        f"synthetic EDA: {config.grid} x {config.levels} levels x {len(config.variables)} variables x "
        f"{config.members} members x {len(config.dates)} dates in {files.root} "
        f"({timing['total_seconds']:.1f} s, peak RSS {timing['peak_rss_mb']:.0f} MB); see {files.manifest}"
    )
    return 0


def run_observation_grib(args: argparse.Namespace) -> int:
    """Write the observation GRIB of ``args.eda`` and print a one-line summary; returns 0."""
    from hybrid_eda.synthetic.observation_grib import add_observation_grib

    files = add_observation_grib(args.eda, out_dir=args.out, overwrite=args.overwrite)
    where = files[0].parent if files else args.out or args.eda
    print(f"observation GRIB: {len(files)} dates in {where}")
    return 0
