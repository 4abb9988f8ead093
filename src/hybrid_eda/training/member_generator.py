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

from omegaconf import OmegaConf

from hybrid_eda.training.resolvers import VarianceEmulatorCallback, store_variables

__all__ = ["MemberGeneratorCallback", "store_variables_without"]


def store_variables_without(path: str, tag: str) -> list[str]:
    """Variable names of the store at ``path`` that do not contain ``tag`` (store order)."""
    names = [name for name in store_variables(path) if tag not in name]
    if not names:
        raise ValueError(f"every variable of the store at {path} contains {tag!r}; no background variables left")
    return names


class MemberGeneratorCallback(VarianceEmulatorCallback):
    """Hydra callback: what :class:`VarianceEmulatorCallback` does (resolvers, glibc malloc for CPU runs), plus the
    shuffled member split and ``${store_variables_without:...}``."""

    def _start(self) -> None:
        from hybrid_eda.data.member_split import install_member_split

        if not OmegaConf.has_resolver("store_variables_without"):
            OmegaConf.register_new_resolver("store_variables_without", store_variables_without, use_cache=True)
        install_member_split()
        super()._start()
