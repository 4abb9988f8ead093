"""Checks of the paths a command will write, made before it runs, so that no work is lost to a bad path.

    parser.add_argument("--json", type=output_file, ...)      # argparse checks it while parsing
    check_output_dir(out, "--out")                              # or call the checks directly

A file path is writable when it is not a folder and its first existing ancestor is a folder we may write in
(missing folders are created by the writers); a folder path when it is not a file and the same holds for it.
Nothing is created or removed here.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hybrid_eda.errors import UserInputError

__all__ = ["check_output_dir", "check_output_file", "output_dir", "output_file", "positive_int"]


def _label(path: Path, option: str | None) -> str:
    return f"{option} {path}" if option else str(path)


def _check_creatable(folder: Path, target: str) -> None:
    """``folder`` exists as a writable folder or can be made: its first existing ancestor is a writable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(
            f"cannot write {target}: {existing} is a file, not a folder; choose another path or move {existing} away"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(
            f"cannot write {target}: no permission to write in {existing}; choose a folder you can write to"
        )


def check_output_file(path: str | os.PathLike, option: str | None = None) -> Path:
    """Refuse a file path that cannot be written (a folder, under a file, in a read-only folder); return it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserInputError(f"cannot write {_label(path, option)}: it is a folder; give a file name inside it")
    _check_creatable(path.parent, _label(path, option))
    return path


def check_output_dir(path: str | os.PathLike, option: str | None = None) -> Path:
    """Refuse a folder path that cannot be written (an existing file, under a file, read-only); return it."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserInputError(
            f"cannot write into {_label(path, option)}: it is a file, not a folder; choose a folder path "
            "(created if missing)"
        )
    _check_creatable(path, _label(path, option))
    return path


def _argparse_type(check, name: str):  # type: ignore[no-untyped-def]
    def convert(value: str) -> Path:
        try:
            return check(value)
        except UserInputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = name
    return convert


#: argparse ``type=`` for an output file / an output folder: checked while parsing, before any work.
output_file = _argparse_type(check_output_file, "output_file")
output_dir = _argparse_type(check_output_dir, "output_dir")


def positive_int(value: str) -> int:
    """argparse ``type=`` for a count of at least 1 (``--threads``)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}; e.g. 1 or 4") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {number}; e.g. 1 or 4")
    return number
