"""Every shipped training config (``configs/*.yaml``, found automatically) composes through Hydra as
``anemoi-training train --config-name=...`` composes it, every ``_target_`` it names imports, and an end-to-end
test trains it on a tiny store (listed in ``TRAINED_BY``; a new config fails here until it has one)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from hybrid_eda.resources import configs_dir, shipped

#: The end-to-end test (module, function) that trains each shipped config on a tiny store, and the steps it runs.
TRAINED_BY = {
    "l96_forecaster": ("test_l96_training", "test_l96_forecaster_trains_from_any_directory"),  # 60 steps
    "member_generator_l96": (
        "test_member_generator_training",
        "test_l96_config_trains_and_its_checkpoint_generates_members",
    ),  # 2 steps
    "member_generator_l96_4dvar": (
        "test_member_generator_l96_4dvar",
        "test_4dvar_config_trains_from_its_store_and_generates_in_the_4dvar_cycle",
    ),  # 2 steps
    "member_generator_l96_enkf": (
        "test_member_generator_l96_enkf",
        "test_enkf_config_trains_with_the_noise_and_generates_without_it",
    ),  # 2 steps
    "member_generator_n128": ("test_member_generator_training", "test_global_configs_train_two_steps"),  # 2 steps
    "member_generator_synthetic": ("test_member_generator_training", "test_global_configs_train_two_steps"),  # 2
    "member_generator_synthetic_obs": (
        "test_member_generator_synthetic_obs",
        "test_obs_recipe_config_and_evaluation_end_to_end",
    ),  # 2 steps
    "member_generator_synthetic_kalman": (
        "test_member_generator_synthetic_obs",
        "test_kalman_config_trains_evaluates_and_gets_an_inference_config_with_observations",
    ),  # 2 steps
    "variance_emulator_synthetic": (
        "test_variance_training",
        "test_synthetic_config_trains_and_its_checkpoint_emulates_any_m",  # 2 steps
    ),
    "variance_emulator_n80": ("test_variance_training", "test_operational_config_trains_two_steps"),  # 2 steps
    "variance_emulator_l96": (
        "test_l96_variance_emulator",
        "test_l96_config_trains_and_the_loader_predicts_positive_spreads",
    ),  # 2 steps
}


def _compose(name: str) -> Any:
    """The shipped config ``name`` as Hydra composes it (with its ``hydra`` section), unresolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(configs_dir()), version_base=None):
        config = compose(name, return_hydra_config=True)
    return OmegaConf.to_container(config, resolve=False)


def _targets(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(config path, ``_target_``) of every object the config instantiates."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


def test_every_shipped_config_has_an_end_to_end_training_test():
    assert set(shipped(configs_dir())) == set(TRAINED_BY)
    for config, (module, function) in TRAINED_BY.items():
        test = getattr(importlib.import_module(module), function, None)
        assert callable(test), f"{config}: {module}.{function} does not exist"
        assert "slow" in {mark.name for mark in getattr(test, "pytestmark", [])}, f"{module}.{function} is not slow"


@pytest.mark.parametrize("name", list(shipped(configs_dir())))
def test_shipped_config_composes_and_its_targets_import(name):
    from hydra.utils import get_object

    config = _compose(name)
    assert {"data", "dataloader", "diagnostics", "graph", "model", "system", "task", "training"} <= set(config)
    loggers = config["diagnostics"]["log"]
    disabled = {f"diagnostics.log.{k}" for k, v in loggers.items() if isinstance(v, dict) and not v.get("enabled")}
    targets = {path: target for path, target in _targets(config) if path not in disabled}  # what anemoi builds
    assert {"model.model", "task", "training.method", "training.strategy"} <= set(targets)
    for path, target in targets.items():
        assert get_object(target) is not None, f"{name}: {path}._target_ {target} does not import"
    assert targets["training.strategy"] == "anemoi.training.distributed.strategy.DDPGroupStrategy"  # DDP-ready
