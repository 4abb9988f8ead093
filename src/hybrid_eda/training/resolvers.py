"""OmegaConf resolvers of the shipped training configs, and the Hydra callback that registers them (and sets
glibc malloc up for CPU training).

``${store_variables:PATH}`` lists the variables of an anemoi-datasets store, so a config can declare every
variable of the target store ``diagnostic`` (anemoi needs the names) without writing out 6 x 137 of them::

    data:
      datasets:
        spread:
          diagnostic: ${store_variables:${dataloader.stores.spread}}

Add the callback to a training config (anemoi-training resolves the config inside the Hydra job, after it)::

    hydra:
      callbacks:
        variance_emulator:
          _target_: hybrid_eda.training.VarianceEmulatorCallback
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

LOGGER = logging.getLogger(__name__)


def store_variables(path: str) -> list[str]:
    """Variable names of the store at ``path``, in store order.

    Raises
    ------
    ValueError
        If there is no store at ``path`` (the message names the command that makes one).
    """
    if not Path(path).exists():
        msg = (
            f"no anemoi-datasets store at {path}; make the synthetic stores with "
            "`hybrid-eda variance-data` in the training folder, or point dataloader.stores at yours"
        )
        raise ValueError(msg)
    from anemoi.datasets import open_dataset

    return list(open_dataset(path).variables)


def register_resolvers() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("store_variables"):
        OmegaConf.register_new_resolver("store_variables", store_variables, use_cache=True)


class VarianceEmulatorCallback(Callback):
    """Hydra callback: registers :func:`register_resolvers` before the job resolves its config and, with
    ``keep_freed_memory: True`` (default), tunes glibc malloc for CPU training (:mod:`hybrid_eda.training.malloc`).
    """

    def __init__(self, keep_freed_memory: bool = True) -> None:
        self.keep_freed_memory = keep_freed_memory

    def _start(self) -> None:
        register_resolvers()
        if self.keep_freed_memory:
            from hybrid_eda.training.malloc import keep_freed_memory

            keep_freed_memory()

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._start()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._start()

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._start()
