"""Output files that appear whole or not at all: written as ``PATH.part``, moved to ``PATH`` at the end.

Both runners expand their output path per date (and statistic), so a run writes several files; a run that fails
half way leaves its ``.part`` files and never a truncated GRIB under the name a later step reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["PartFiles"]


class PartFiles:
    """``with PartFiles() as out: out.stream(path).write(...)``; every file is renamed only if the block succeeds."""

    def __init__(self) -> None:
        self._streams: dict[str, BinaryIO] = {}

    def stream(self, path: str) -> BinaryIO:
        """The open ``path.part`` (created, with its folder, on first use)."""
        if path not in self._streams:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._streams[path] = open(path + ".part", "wb")  # noqa: SIM115 (closed in __exit__)
        return self._streams[path]

    @property
    def paths(self) -> list[str]:
        """Final paths, in the order first written."""
        return list(self._streams)

    def __enter__(self) -> PartFiles:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        for stream in self._streams.values():
            stream.close()
        if exc_type is None:
            for path in self._streams:
                os.replace(path + ".part", path)
