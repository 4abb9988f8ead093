"""What the member generator's training configs need from hybrid-eda: one Hydra callback.

:class:`MemberGeneratorCallback` (``hydra.callbacks`` of ``configs/member_generator_*.yaml``) installs the
shuffled member selection (:mod:`hybrid_eda.data.member_split`: the guide/target split) before anemoi-training
opens its datasets and registers the resolvers, among them ``${store_variables_without:PATH,TAG}``, the variables
of a store whose names lack ``TAG``: the backgrounds of a store that also holds analyses ``t_an_137``::

    data:
      datasets:
        eda:
          forcing: ${store_variables_without:${dataloader.stores.eda},_an_}

and ``${store_observation_map:PATH,_an_,_obs_}``, each analysis variable of the store mapped to its observations
where the store has them (``{t_an_1: t_obs_1, ...}``; ``model.model.observations``)::

    model:
      model:
        observations: ${store_observation_map:${dataloader.stores.eda},_an_,_obs_}

and ``${store_variables_with:PATH,TAG}``, the variables whose names contain ``TAG`` (e.g. the observations).
"""

from __future__ import annotations

from omegaconf import OmegaConf

from hybrid_eda.training.resolvers import VarianceEmulatorCallback, store_variables

__all__ = ["MemberGeneratorCallback", "store_observation_map", "store_variables_with", "store_variables_without"]


def store_variables_without(path: str, tag: str) -> list[str]:
    """Variable names of the store at ``path`` that do not contain ``tag`` (store order)."""
    names = [name for name in store_variables(path) if tag not in name]
    if not names:
        raise ValueError(f"every variable of the store at {path} contains {tag!r}; no background variables left")
    return names


def store_variables_with(path: str, tag: str) -> list[str]:
    """Variable names of the store at ``path`` that contain ``tag`` (store order), e.g. its observations."""
    names = [name for name in store_variables(path) if tag in name]
    if not names:
        raise ValueError(f"no variable of the store at {path} contains {tag!r}")
    return names


def store_observation_map(path: str, analysis_tag: str, observation_tag: str) -> dict[str, str]:
    """``{analysis: observation}`` for every analysis variable of the store at ``path`` (a name containing
    ``analysis_tag``, e.g. ``t_an_1``) whose observation variable (the tag replaced: ``t_obs_1``) is in the store."""
    names = store_variables(path)
    mapping = {}
    for name in names:
        if analysis_tag in name and name.replace(analysis_tag, observation_tag, 1) in names:
            mapping[name] = name.replace(analysis_tag, observation_tag, 1)
    if not mapping:
        raise ValueError(
            f"the store at {path} has no observation variable for any analysis ('{analysis_tag}' -> "
            f"'{observation_tag}'); build it with the observations (recipes/synthetic-eda-generator-obs.yaml)"
        )
    return mapping


class MemberGeneratorCallback(VarianceEmulatorCallback):
    """Hydra callback: what :class:`VarianceEmulatorCallback` does (resolvers, glibc malloc for CPU runs), plus the
    shuffled member split and ``${store_variables_without:...}``."""

    def _start(self) -> None:
        from hybrid_eda.data.member_split import install_member_split

        if not OmegaConf.has_resolver("store_variables_without"):
            OmegaConf.register_new_resolver("store_variables_without", store_variables_without, use_cache=True)
        if not OmegaConf.has_resolver("store_variables_with"):
            OmegaConf.register_new_resolver("store_variables_with", store_variables_with, use_cache=True)
        if not OmegaConf.has_resolver("store_observation_map"):
            OmegaConf.register_new_resolver("store_observation_map", store_observation_map, use_cache=True)
        install_member_split()
        super()._start()
