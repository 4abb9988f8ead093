"""``hybrid-eda grids``: write the local grid files and print the shell lines that point anemoi at them.

eval "$(hybrid-eda grids)"        # then anemoi-graphs / anemoi-datasets / anemoi-training never download grids
"""

from __future__ import annotations

import argparse

from hybrid_eda.outputs import output_dir

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``grids`` command on the top-level ``hybrid-eda`` parser."""
    parser = subparsers.add_parser(
        "grids",
        help="write anemoi grid files locally and print the exports that make anemoi use them (no downloads)",
        description="Write grid-<name>.npz files (computed locally) and print `export` lines for "
        'ANEMOI_SETTINGS_UTILS__GRIDS_PATH and ANEMOI_CONFIG_UTILS_GRIDS_PATH; use as eval "$(hybrid-eda grids)".',
    )
    parser.add_argument(
        "--dir", type=output_dir, default=None, help="folder for the files (default ~/.cache/hybrid-eda/grids)"
    )
    parser.add_argument("--names", nargs="+", default=None, help="grids to write, e.g. o96 n80 (default: o16..n128)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hybrid_eda.data.grids import DEFAULT_GRIDS, GRIDS_PATH_VARIABLES, ensure_grid_files

    directory = ensure_grid_files(args.names or DEFAULT_GRIDS, args.dir).resolve()
    for variable in GRIDS_PATH_VARIABLES:
        print(f"export {variable}={directory}")
    return 0
