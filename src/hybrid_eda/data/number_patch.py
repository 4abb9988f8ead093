"""Replace anemoi's ``Number`` (what ``number:``/``members:`` build in ``open_dataset``), and undo it.

anemoi-datasets looks ``anemoi.datasets.usage.gridded.ensemble.Number`` up by name when a dataset config has a
``number:`` or ``members:`` key. :class:`NumberPatch` swaps in one of our selections
(:class:`~hybrid_eda.data.members.MemberSubset`, :class:`~hybrid_eda.data.member_split.ShuffledMemberSubset`)
and restores what was there; :class:`NumberPatchCallback` installs it from Hydra before anemoi-training opens its
datasets. Nothing is patched at import.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from hydra.experimental.callback import Callback

__all__ = ["NumberPatch", "NumberPatchCallback"]


class NumberPatch:
    """Makes ``number:``/``members:`` in ``open_dataset`` configs build ``replacement`` instead of anemoi's ``Number``.

    :meth:`install` remembers what was there and :meth:`uninstall` restores it, so patches stack (the last one
    installed is the first undone). ``message`` is logged (INFO, on ``logger``) when the patch is installed.
    """

    def __init__(self, replacement: type, message: str, logger: logging.Logger) -> None:
        self.replacement, self.message, self.logger = replacement, message, logger
        self._original: Any = None

    def install(self) -> bool:
        """Install the replacement (idempotent); ``True`` if it changed anything."""
        from anemoi.datasets.usage.gridded import ensemble

        if ensemble.Number is self.replacement:
            return False
        self._original = ensemble.Number
        ensemble.Number = self.replacement
        self.logger.info(self.message)
        return True

    def uninstall(self) -> None:
        """Restore what ``number:`` built before :meth:`install` (nothing if it is not installed)."""
        from anemoi.datasets.usage.gridded import ensemble

        if self._original is not None:
            ensemble.Number = self._original
            self._original = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Context manager: installed inside, the previous state after."""
        changed = self.install()
        try:
            yield
        finally:
            if changed:
                self.uninstall()


class NumberPatchCallback(Callback):
    """Hydra callback that installs its class's :attr:`patch` at run, multirun and job start."""

    patch: NumberPatch

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self.patch.install()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.patch.install()

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self.patch.install()
