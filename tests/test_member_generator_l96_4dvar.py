"""The shipped 4D-Var member generator config (``member_generator_l96_4dvar``): it trains through ``anemoi-training
train`` on a tiny store built with the shipped 4D-Var recipe (24-hourly dates), with the model shape it states, and
its checkpoint generates seeded members in the Lorenz-96 4D-Var hybrid cycle."""

from __future__ import annotations

import re

import pytest

from member_generator_checkpoints import (
    assert_seeded_hybrid_cycle,
    member_generator_model,
    tiny_recipe_store,
    train_shipped_config,
)

#: 30 windows after a 100-window spin-up of the shipped recipe: 2000-04-10 .. 2000-05-09, one date per window.
TINY_4DVAR_SPLITS = [
    "training.max_steps=2",
    "dataloader.limit_batches.validation=1",
    "dataloader.batch_size.training=2",
    "dataloader.training.datasets.eda.end=2000-04-29",
    "dataloader.validation.datasets.eda.start=2000-04-30",
    "dataloader.validation.datasets.eda.end=2000-05-04",
    "dataloader.test.datasets.eda.start=2000-05-05",
]
#: Parameters of the config's model (stated in configs/member_generator_l96_4dvar.yaml).
PARAMETERS = 836


def test_config_states_its_parameter_count():
    from hybrid_eda.resources import configs_dir

    shape = dict(latent=8, rounds=1, steps=1, particle_attention=False, ensemble_resolvent=False)
    assert member_generator_model(**shape).n_parameters == PARAMETERS
    assert f"{PARAMETERS:,} parameters" in (configs_dir() / "member_generator_l96_4dvar.yaml").read_text()


@pytest.mark.slow
def test_4dvar_config_trains_from_its_store_and_generates_in_the_4dvar_cycle(tmp_path):
    from hybrid_eda.models import load_member_generator

    dates = {"start": "2000-04-10T00:00:00", "end": "2000-05-09T00:00:00", "frequency": "24h"}
    env = tiny_recipe_store(tmp_path, "l96-eda-4dvar.yaml", "l96-eda-4dvar.zarr", cycles=130, spinup=100, dates=dates)
    # reads ./l96-eda-4dvar.zarr by default
    log, checkpoint = train_shipped_config(tmp_path, env, "member_generator_l96_4dvar", TINY_4DVAR_SPLITS)
    stated = re.search(r"member generator: 1 variables, 40 grid points, 200 edges, .*?, (\d+) parameters", log)
    assert stated is not None and int(stated.group(1)) == PARAMETERS, log[-3000:]
    runner = load_member_generator(checkpoint)
    settings = runner.core.settings
    assert (settings.latent, settings.rounds, settings.steps) == (8, 1, 1)
    assert not settings.particle_attention and not settings.ensemble_resolvent and settings.observation_features

    assert_seeded_hybrid_cycle(checkpoint, method="4dvar", members=20, window=4, b_mode="hybrid", inflation=1.02)
