"""Errors that the ``hybrid-eda`` command reports as one line on stderr, and their exit statuses.

One mechanism for every sub-command (:func:`hybrid_eda.cli.main`): an error a user can fix prints
``hybrid-eda COMMAND: error: <what is wrong and how to fix it>`` without a traceback (``-v`` shows it), and exits

* 2 for bad input: :class:`UserInputError`, any ``ValueError``, an ``OSError`` (missing file, a file where a
  folder should be, no permission), an unreadable archive (``zipfile.BadZipFile``, ``EOFError``);
* 1 for a run that failed on valid input: :class:`RunFailedError`, any ``RuntimeError`` (e.g. a diverged filter,
  ``hybrid_eda.l96.base.FilterDivergenceError``, or a failed ``anemoi-datasets`` subprocess), a ``MemoryError``
  (sizes should be refused before allocating; this is the fallback).

Anything else (``TypeError``, ``KeyError``, ``IndexError``, ...) is a bug of ours and keeps its traceback. Library
code raises :class:`UserInputError` (a ``ValueError``, so callers that catch ``ValueError`` keep working) with a
message that names the fix.
"""

from __future__ import annotations

import zipfile

__all__ = ["HybridEDAError", "RunFailedError", "UserInputError", "describe", "exit_code"]

#: Exit status of bad input (as argparse's own usage errors) and of a run that failed.
BAD_INPUT, RUN_FAILED = 2, 1


class HybridEDAError(Exception):
    """Base of the package's own errors; ``exit_code`` is the status ``hybrid-eda`` exits with."""

    exit_code = BAD_INPUT


class UserInputError(HybridEDAError, ValueError):
    """Bad input (an option, a file, a recipe): the message says what was wrong and how to fix it (exit 2)."""

    exit_code = BAD_INPUT


class RunFailedError(HybridEDAError, RuntimeError):
    """A run on valid input that could not finish (exit 1)."""

    exit_code = RUN_FAILED


def exit_code(err: BaseException) -> int | None:
    """Exit status of an error reported in one line, or ``None`` for an unexpected one (keep its traceback)."""
    if isinstance(err, HybridEDAError):
        return int(err.exit_code)
    if isinstance(err, RuntimeError | MemoryError):
        return RUN_FAILED
    if isinstance(err, ValueError | OSError | zipfile.BadZipFile | EOFError):
        return BAD_INPUT
    return None


def describe(err: BaseException) -> str:
    """The error as one line: an ``OSError`` as ``<reason>: <path>``, a multi-line message as first ... last line."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        target = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else str(err.filename)
        return f"{err.strerror}: {target}"
    if isinstance(err, MemoryError):
        return f"out of memory ({err or 'MemoryError'}); use smaller sizes (members, cycles, batch, grid, levels)"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0]} ... {lines[-1]} (run with -v for the whole message)"
