"""What the member generator's training configs need from hybrid-eda: one Hydra callback.

:class:`MemberGeneratorCallback` (``hydra.callbacks`` of ``configs/member_generator_*.yaml``) installs the
shuffled member selection (:mod:`hybrid_eda.data.member_split`: the guide/target split) before anemoi-training
opens its datasets and registers the resolvers, among them ``${store_variables_without:PATH,TAG}``, the variables
of a store whose names lack ``TAG``: the backgrounds of a store that also holds analyses ``t_an_137``::

    data:
      datasets:
        eda:
          forcing: ${store_variables_without:${dataloader.stores.eda},_an_}
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from hybrid_eda.training.resolvers import register_resolvers, store_variables

__all__ = ["MemberGeneratorCallback", "store_variables_without"]


def store_variables_without(path: str, tag: str) -> list[str]:
    """Variable names of the store at ``path`` that do not contain ``tag`` (store order)."""
    names = [name for name in store_variables(path) if tag not in name]
    if not names:
        raise ValueError(f"every variable of the store at {path} contains {tag!r}; no background variables left")
    return names


class MemberGeneratorCallback(Callback):
    """Hydra callback: member split selection, resolvers and (``keep_freed_memory``) glibc malloc for CPU runs."""

    def __init__(self, keep_freed_memory: bool = True) -> None:
        self.keep_freed_memory = keep_freed_memory

    def _start(self) -> None:
        from hybrid_eda.data.member_split import install_member_split

        register_resolvers()
        if not OmegaConf.has_resolver("store_variables_without"):
            OmegaConf.register_new_resolver("store_variables_without", store_variables_without, use_cache=True)
        install_member_split()
        if self.keep_freed_memory:
            from hybrid_eda.training.malloc import keep_freed_memory

            keep_freed_memory()

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._start()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._start()

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._start()
