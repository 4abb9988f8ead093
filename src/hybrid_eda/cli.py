"""The ``hybrid-eda`` command.

    hybrid-eda demo                 run the whole pipeline on the embedded default (Lorenz-96 EDA, ...)
    hybrid-eda l96 run|hybrid|...   the Lorenz-96 EDA testbed
    hybrid-eda synthetic ...        write a synthetic global EDA (GRIB laid out like MARS retrievals)
    hybrid-eda store create|init|load|finalise ...   build an ensemble store in memory independent of N
    hybrid-eda grids                write anemoi grid files locally; eval "$(hybrid-eda grids)" stops downloads
    hybrid-eda recipes [copy|path]  the shipped anemoi-datasets recipes: list, copy into a folder, locate
    hybrid-eda inference-config CHECKPOINT   an anemoi-inference config for one of our checkpoints

Thread variables are set before any numerical library is imported (see :mod:`hybrid_eda.threads`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from hybrid_eda import __version__
from hybrid_eda.errors import BAD_INPUT, describe, exit_code
from hybrid_eda.outputs import output_dir, positive_int
from hybrid_eda.threads import configure_threads

LOGGER = logging.getLogger(__name__)

# Modules that contribute sub-commands: each exposes ``add_parser(subparsers)``.
_COMMAND_MODULES = (
    "hybrid_eda.l96.cli",
    "hybrid_eda.synthetic.cli",
    "hybrid_eda.data.store_cli",
    "hybrid_eda.data.grids_cli",
    "hybrid_eda.recipes_cli",
    "hybrid_eda.inference.cli",
    "hybrid_eda.evaluation.cli",
    "hybrid_eda.training.stores",
)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line that points at ``--help`` (sub-command parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _pre_parse_threads(argv: Sequence[str]) -> int | None:
    """``--threads`` before the numerical libraries load; an invalid value is left to the full parser to report."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", default=None)
    known, _ = pre.parse_known_args(argv)
    try:
        return None if known.threads is None else positive_int(known.threads)
    except argparse.ArgumentTypeError:
        return None


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="hybrid-eda",
        description="Machine learning for Ensemble Data Assimilation (an Anemoi plugin).",
    )
    parser.add_argument("--version", action="version", version=f"hybrid-eda {__version__}")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads per process for numpy/torch/numba (default: 1 on machines with <= 4 cores, "
        "unless OMP_NUM_THREADS is set)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG level; show the traceback of an error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="run the main job on the embedded default data")
    demo.add_argument("--out", type=output_dir, default=Path("hybrid-eda-demo"), help="output folder (JSON + PNG)")
    demo.set_defaults(func=_run_demo)

    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from hybrid_eda.demo import run_demo

    run_demo(args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hybrid-eda`` console script; returns the exit status.

    Every sub-command's errors end here (see :mod:`hybrid_eda.errors`): bad input (exit 2) and failed runs (exit 1)
    print one line on stderr, ``-v`` shows their traceback; unexpected errors keep theirs.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_threads(_pre_parse_threads(argv))
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print(f"hybrid-eda {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        code = exit_code(err)
        if code is None or args.verbose:
            raise
        print(f"hybrid-eda {args.command}: error: {describe(err)}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
