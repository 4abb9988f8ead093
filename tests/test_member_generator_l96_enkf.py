"""The shipped stochastic-EnKF member generator config (``member_generator_l96_enkf``): it trains through
``anemoi-training train`` on a tiny store built with the shipped EnKF recipe, with the ensemble-space noise on in
training only, and its checkpoint generates seeded members in the Lorenz-96 EnKF hybrid cycle without that noise."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from member_generator_checkpoints import (
    TINY_L96_DATES,
    TINY_L96_SPLITS,
    assert_seeded_hybrid_cycle,
    member_generator_model,
    tiny_recipe_store,
    train_shipped_config,
)

#: Parameters of the config's model (stated in configs/member_generator_l96_enkf.yaml).
PARAMETERS = 18_250
SHAPE = dict(particle_attention=True, ensemble_resolvent=True, ensemble_noise=True)


def test_config_states_its_parameter_count():
    from hybrid_eda.resources import configs_dir

    assert member_generator_model(**SHAPE).n_parameters == PARAMETERS
    assert f"{PARAMETERS:,} parameters" in (configs_dir() / "member_generator_l96_enkf.yaml").read_text()


@pytest.mark.slow
def test_enkf_config_trains_with_the_noise_and_generates_without_it(tmp_path):
    from anemoi.datasets import open_dataset

    from hybrid_eda.models import load_member_generator

    env = tiny_recipe_store(
        tmp_path, "l96-eda-enkf.yaml", "l96-eda-enkf.zarr", cycles=140, spinup=100, dates=TINY_L96_DATES
    )
    # reads ./l96-eda-enkf.zarr by default
    log, checkpoint = train_shipped_config(tmp_path, env, "member_generator_l96_enkf", TINY_L96_SPLITS)
    stated = re.search(r"member generator: 1 variables, 40 grid points, 200 edges, .*?, (\d+) parameters", log)
    assert stated is not None and int(stated.group(1)) == PARAMETERS, log[-3000:]
    runner = load_member_generator(checkpoint)
    settings = runner.core.settings
    assert settings.ensemble_noise and settings.ensemble_noise_centred and settings.ensemble_noise_training_only

    # Generation leaves the noise out: the same members as with its scales set to zero.
    data = open_dataset(str(tmp_path / "l96-eda-enkf.zarr"))
    v = data.variables
    fields = data[30]  # [variable, member, grid]
    bg, an = fields[v.index("x_bg")][..., None], fields[v.index("x_an")][..., None]  # [20, 40, 1]
    obs = fields[v.index("obs"), 0][..., None]

    def members():
        return runner.generate(
            bg[10:], an[:10], 10, torch.Generator().manual_seed(3), guide_backgrounds=bg[:10], observations=obs
        )

    generated = members()
    noise = [p for name, p in runner.core.named_parameters() if "noise" in name and "scale" in name]
    assert noise and any(bool((p != 0).any()) for p in noise)
    with torch.no_grad():
        for p in noise:
            p.zero_()
    np.testing.assert_array_equal(generated, members())

    assert_seeded_hybrid_cycle(checkpoint, method="enkf", members=20, inflation=1.2)
