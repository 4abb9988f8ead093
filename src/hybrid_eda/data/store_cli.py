"""``hybrid-eda store``: build an anemoi-datasets store with memory that does not grow with the ensemble size.

    hybrid-eda store create recipes/eda-n80-ml-local.yaml eda-n80-ml-local.zarr [--overwrite]
    hybrid-eda store init   RECIPE STORE [--overwrite]       # the same steps one by one, as anemoi-datasets has them
    hybrid-eda store load   STORE [--parts i/n]
    hybrid-eda store finalise STORE

The same recipes, steps and store as ``anemoi-datasets create|init|load|finalise``; only the writing of dates and the
statistics are streamed one ensemble chunk at a time (:mod:`hybrid_eda.data.store_build`). Also runs as
``python -m hybrid_eda.data.store_cli ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_parser", "main"]

LOGGER = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``store`` command (with ``func`` set) on the top-level ``hybrid-eda`` parser."""
    parser = subparsers.add_parser(
        "store",
        help="build an anemoi-datasets store one member at a time (low memory for large ensembles)",
        description="Build a gridded anemoi-datasets store from a recipe with anemoi-datasets' own steps, writing and "
        "computing statistics one ensemble chunk at a time: memory holds one member of a date instead of ~5 dates.",
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    for name, text in (("create", "init, load and finalise"), ("init", "create the empty store from the recipe")):
        step = steps.add_parser(name, help=text)
        step.add_argument("recipe", type=Path, help="anemoi-datasets recipe (YAML)")
        step.add_argument("path", type=Path, help="zarr store to write")
        step.add_argument("--overwrite", action="store_true", help="replace an existing store")
    load = steps.add_parser("load", help="load the dates (all, or part i of n with --parts i/n)")
    load.add_argument("path", type=Path, help="zarr store made by init")
    load.add_argument("--parts", default=None, help="i/n: load the i-th of n parts (run n jobs, then finalise)")
    finalise = steps.add_parser("finalise", help="statistics, metadata and cleanup")
    finalise.add_argument("path", type=Path, help="loaded zarr store")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the step named in ``args`` (``create`` runs every step of ``anemoi-datasets create``); returns 0."""
    # pyproj must load its PROJ library before eccodes does (findlibs loads eckitlib's libproj globally).
    import pyproj  # noqa: F401  isort: skip

    from hybrid_eda.data.store_build import CREATE_STEPS, run_steps
    from hybrid_eda.data.store_checks import is_zarr_store

    if getattr(args, "parts", None) is not None:
        _check_parts(args.parts)
    if args.step in ("load", "finalise") and not is_zarr_store(args.path):
        raise FileNotFoundError(f"no store at {args.path}; run `hybrid-eda store init RECIPE {args.path}` first")
    steps = CREATE_STEPS if args.step == "create" else (args.step,)
    run_steps(
        steps,
        args.path,
        getattr(args, "recipe", None),
        overwrite=getattr(args, "overwrite", False),
        parts=getattr(args, "parts", None),
    )
    return 0


def _check_parts(parts: str) -> None:
    bits = parts.split("/")
    if len(bits) != 2 or not all(b.isdigit() for b in bits) or not 1 <= int(bits[0]) <= int(bits[1]):
        raise ValueError(f"--parts must be i/n with 1 <= i <= n (e.g. 1/4), got {parts!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybrid_eda.data.store_cli STEP ...``: ``hybrid-eda store STEP ...`` (its error handling included)."""
    from hybrid_eda.cli import main as hybrid_eda_main

    return hybrid_eda_main(["store", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
