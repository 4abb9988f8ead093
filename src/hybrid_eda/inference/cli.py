"""``hybrid-eda inference-config``: an anemoi-inference run config for one of our checkpoints.

hybrid-eda inference-config output/l96_forecaster --out infer.yaml   # newest checkpoint of that run folder
anemoi-inference run infer.yaml
hybrid-eda inference-config output/variance_emulator_synthetic --out variance.yaml   # runner: variance-emulator
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``inference-config`` command on the top-level ``hybrid-eda`` parser."""
    from hybrid_eda.inference.config import DEFAULT_TEMPLATE

    parser = subparsers.add_parser(
        "inference-config",
        help="write an anemoi-inference config for a checkpoint (no paths to edit)",
        description="Write the shipped anemoi-inference config for CHECKPOINT (an inference-*.ckpt file, or a "
        "folder searched for the newest inference-last.ckpt, e.g. the run's output/l96_forecaster) with the "
        "checkpoint's absolute path, a start date of its test period and the store it was trained on; then "
        "`anemoi-inference run FILE`.",
    )
    parser.add_argument("checkpoint", type=Path, help="inference checkpoint, or a folder holding one")
    parser.add_argument(
        "--template",
        default=None,
        help=f"shipped config (default: the checkpoint model's own, e.g. variance_emulator, else {DEFAULT_TEMPLATE})",
    )
    parser.add_argument(
        "--dataset", type=Path, default=None, help="store to read the initial states from (default: the training one)"
    )
    parser.add_argument("--date", default=None, help="start date, e.g. 2002-02-01T06:00 (default: the test period's)")
    parser.add_argument("--lead-time", type=int, default=None, help="forecast length in hours (default: the config's)")
    parser.add_argument("--out", type=Path, default=None, help="file to write (default: print to stdout)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hybrid_eda.inference.config import inference_config, write_config

    config = inference_config(
        args.checkpoint, template=args.template, dataset=args.dataset, date=args.date, lead_time=args.lead_time
    )
    text = write_config(config, args.out)
    if args.out is None:
        print(text, end="")
    else:
        print(args.out)
    return 0
