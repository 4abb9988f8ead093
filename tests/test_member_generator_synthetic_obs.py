"""``member_generator_synthetic_obs`` end to end on a tiny synthetic EDA (O32 x 2 levels, 10 members, 6 dates):
``recipes/synthetic-eda-generator-obs.yaml`` builds a store whose observation variables are NaN where unobserved,
the config trains 2 steps with every analysis variable mapped to its observations, and ``evaluate members`` feeds
the test EDA's observations to the checkpoint (and refuses a test folder without them, naming the fix)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from isolated_run import run_command, run_logged
from member_generator_checkpoints import SYNTHETIC_SPLITS, tiny_synthetic_store, train_shipped_config

BIN = Path(sys.executable).parent
FIELDS = ["d", "lnsp", "o3", "q", "t", "vo"]


@pytest.fixture(scope="module")
def tiny_obs_store(tmp_path_factory):
    """The tiny synthetic EDA (its writer also writes grib/obs_*.grib) and its generator store with observations."""
    workdir = tmp_path_factory.mktemp("member_generator_synthetic_obs")
    env = tiny_synthetic_store(workdir, "synthetic-eda-generator-obs.yaml", "eda-generator-obs.zarr", members=10)
    return {"workdir": workdir, "env": env}


@pytest.mark.slow
def test_obs_recipe_config_and_evaluation_end_to_end(tiny_obs_store):
    from anemoi.datasets import open_dataset

    workdir, env = tiny_obs_store["workdir"], tiny_obs_store["env"]
    store = open_dataset(str(workdir / "eda-generator-obs.zarr"))
    names = store.variables
    observed = [f"{v}_obs_{level}" for v in FIELDS for level in ((1,) if v == "lnsp" else (1, 2))]
    assert set(observed) <= set(names) and len(names) == 3 * len(observed)
    date = 1
    with np.load(workdir / "synthetic-eda" / "truth" / "obs_2023010106.npz") as obs:
        index, npz_names, values = obs["obs_index"], [str(n) for n in obs["variables"]], obs["values"]
    data = store[date]  # [var, member, grid]
    for name in ("t_obs_2", "lnsp_obs_1"):
        field = data[names.index(name)]
        np.testing.assert_array_equal(field, field[:1].repeat(field.shape[0], axis=0))  # the same for every member
        unobserved = np.ones(field.shape[-1], dtype=bool)
        unobserved[index] = False
        assert np.isnan(field[:, unobserved]).all() and np.isfinite(field[:, index]).all()
        reference = values[npz_names.index(name.replace("_obs", ""))]
        np.testing.assert_allclose(field[0, index], reference, rtol=1e-3, atol=1e-3 * np.abs(reference).max())

    log, checkpoint = train_shipped_config(workdir, env, "member_generator_synthetic_obs", SYNTHETIC_SPLITS)
    assert "member generator: 11 variables, 5248 grid points, 47232 edges, guides (6, 8) (validation 7)" in log

    from hybrid_eda.models import load_member_generator

    runner = load_member_generator(checkpoint)
    assert runner.uses_observations
    assert runner.observation_variables == [n.replace("_an_", "_obs_") for n in runner.variables]

    out = workdir / "eval"
    command = [str(BIN / "hybrid-eda"), "evaluate", "members", str(checkpoint), "--test", "synthetic-eda", "--real",
               "3", "--dates", "4", "5", "--baselines", "more-real", "--out", str(out)]  # fmt: skip
    printed = run_logged(command, workdir, env)
    assert "hybrid:trained" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"]["observations"] is True
    assert np.isfinite(summary["ensembles"]["hybrid:trained"]["crps_ratio"])

    bare = workdir / "no-obs"
    shutil.copytree(workdir / "synthetic-eda", bare, ignore=shutil.ignore_patterns("obs_*"))
    command[command.index("synthetic-eda")] = str(bare)
    failed = run_command(command, workdir, env, check=False)
    assert failed.returncode == 2
    assert "trained with observations" in failed.stderr and "truth/obs_2023010200.npz" in failed.stderr


@pytest.mark.slow
def test_kalman_config_trains_evaluates_and_gets_an_inference_config_with_observations(tiny_obs_store):
    """``member_generator_synthetic_kalman`` (the flow started from the localised Kalman update) trains 2 steps on
    the tiny store (all 10 members per sample), its checkpoint scores a hybrid from the test EDA's observations, and
    ``hybrid-eda inference-config`` adds the observations GRIB to the runner's inputs."""
    from hybrid_eda.inference.config import inference_config
    from hybrid_eda.models import load_member_generator

    workdir, env = tiny_obs_store["workdir"], tiny_obs_store["env"]
    overrides = [*SYNTHETIC_SPLITS, "dataloader.members_per_sample=10", "model.model.guides=[6,8]",
                 "model.model.validation_guides=7"]  # fmt: skip
    log, checkpoint = train_shipped_config(workdir, env, "member_generator_synthetic_kalman", overrides)
    assert "member generator: 11 variables, 5248 grid points, 47232 edges, guides (6, 8) (validation 7)" in log
    runner = load_member_generator(checkpoint)
    assert runner.uses_observations and runner.model.core.settings.local_kalman

    out = workdir / "eval-kalman"
    command = [str(BIN / "hybrid-eda"), "evaluate", "members", str(checkpoint), "--test", "synthetic-eda", "--real",
               "3", "--dates", "4", "5", "--out", str(out)]  # fmt: skip
    run_logged(command, workdir, env)
    row = json.loads((out / "summary.json").read_text())["ensembles"]["hybrid:trained"]
    assert np.isfinite(row["crps_ratio"]) and row["std_mse_reduction"] > 0.0  # the update brings the std closer

    config = inference_config(checkpoint, dataset=workdir / "synthetic-eda", date="2023-01-02T00")
    assert config["input"]["observations"]["grib"]["path"] == str(
        (workdir / "synthetic-eda" / "grib" / "obs_{date:strftime(%Y%m%d%H)}.grib").resolve()
    )
    bare = workdir / "no-obs-grib"
    shutil.copytree(workdir / "synthetic-eda", bare, ignore=shutil.ignore_patterns("obs_*.grib"))
    with pytest.raises(ValueError, match="hybrid-eda synthetic-obs-grib"):
        inference_config(checkpoint, dataset=bare, date="2023-01-02T00")
