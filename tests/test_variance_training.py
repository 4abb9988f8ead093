"""The shipped variance-emulator configs train through ``anemoi-training train --config-name=...`` on tiny
synthetic stores made by ``hybrid-eda variance-data`` (built once per module), write an inference
checkpoint, and that checkpoint maps any M members to a positive predictive distribution of the N-member std."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from isolated_run import isolated_environment, run_logged
from tiny_variance import LEVELS, MEMBERS, stores_command, train_command


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """O32, 2 levels, 6 variables, 6 members, 6 dates: the synthetic EDA and both stores (~20 s)."""
    tmp_path = tmp_path_factory.mktemp("variance_training")
    workdir = tmp_path / "run"
    env = isolated_environment(tmp_path)
    command = stores_command(workdir)
    run_logged(command, tmp_path, env)
    return {"workdir": workdir, "env": env}


def _train(stores, config: str, *extra: str) -> str:
    return run_logged(train_command(config, 2, *extra), stores["workdir"], stores["env"])


def test_stores_pair_up(stores):
    from anemoi.datasets import open_dataset

    from hybrid_eda.data.members import check_store_pair

    members = open_dataset(str(stores["workdir"] / "eda-members.zarr"))
    spread = open_dataset(str(stores["workdir"] / "eda-std.zarr"))
    check_store_pair(members, spread, members=5)
    assert members.shape[:3] == (6, 5 * LEVELS + 1, MEMBERS) and spread.shape[2] == 1
    assert spread.variables == [v.replace("_", "_std_", 1) for v in members.variables]


#: What the operational config needs to run on the tiny CPU stores (its own settings otherwise).
ON_THE_TINY_STORES = {
    "variance_emulator_synthetic": [],
    "variance_emulator_n80": [
        "system.hardware.accelerator=cpu",
        "system.hardware.num_gpus_per_node=1",
        "data.frequency=6h",
        "dataloader.stores.members=${hydra:runtime.cwd}/eda-members.zarr",
        "dataloader.stores.spread=${hydra:runtime.cwd}/eda-std.zarr",
        "dataloader.num_workers.training=1",
        "dataloader.num_workers.validation=1",
        "dataloader.num_workers.test=1",
        "dataloader.pin_memory=False",
        "dataloader.persistent_workers=False",
    ],
}


def test_every_shipped_config_is_exercised():
    from hybrid_eda.resources import configs_dir, shipped

    # variance_emulator_l96 trains on Lorenz-96 stores instead (tests/test_l96_variance_emulator.py)
    names = shipped(configs_dir())
    on_global_stores = {n for n in names if n.startswith("variance_emulator") and not n.endswith("_l96")}
    assert on_global_stores == set(ON_THE_TINY_STORES)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["variance_emulator_n80"])
def test_operational_config_trains_two_steps(stores, config):
    log = _train(stores, config, *ON_THE_TINY_STORES[config])
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in log
    assert re.search(r"variance emulator: \d+ channels, \d+ grid points", log)


@pytest.mark.slow
def test_synthetic_config_trains_and_its_checkpoint_emulates_any_m(stores):
    import torch
    from anemoi.datasets import open_dataset

    log = _train(stores, "variance_emulator_synthetic")
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in log
    losses = [float(v) for v in re.findall(r"train_multi_dataset_loss_step=([-0-9.e+]+)", log)]
    assert losses and all(np.isfinite(losses))

    output = stores["workdir"] / "output" / "variance_emulator_synthetic"
    (checkpoint,) = (output / "checkpoint").glob("*/inference-last.ckpt")
    model = torch.load(checkpoint, map_location="cpu", weights_only=False).eval()
    members = open_dataset(str(stores["workdir"] / "eda-members.zarr"))
    sample = torch.from_numpy(np.asarray(members[3])).float()  # [var, N, grid]
    sample = sample.permute(1, 2, 0)[None, None]  # [batch, time, N, grid, var]
    for m in (3, 5):
        out = model.predict_step({"members": sample[:, :, :m], "spread": sample[:, :, :1, :, :0]})["spread"]
        assert out.shape == (1, 1, 2, members.shape[-1], members.shape[1])
        assert torch.isfinite(out).all() and (out[:, :, 1] > 0).all()

    # The same checkpoint as the evaluation loads it: physical members [date, M, grid, field] -> distribution.
    from hybrid_eda.models import load_variance_predictor

    predictor = load_variance_predictor(checkpoint)
    assert predictor.variables == tuple(members.variables) and predictor.family == "lognormal"
    dist = predictor(sample[0, :, :5].numpy())
    torch.testing.assert_close(dist.to_tensor(), out[:, 0], rtol=1e-5, atol=1e-4)  # M = 5, same numbers
    with pytest.raises(ValueError, match="training checkpoint"):
        load_variance_predictor(checkpoint.parent / "last.ckpt")


def test_checkpoint_of_another_model_is_explained(tmp_path):
    import torch

    from hybrid_eda.errors import UserInputError
    from hybrid_eda.models import load_variance_predictor

    torch.save(torch.nn.Linear(2, 2), tmp_path / "other.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "last.ckpt")
    fix = "pass a variance emulator run's checkpoint/<run-id>/inference-last.ckpt"
    other = rf"holds a Linear \(torch\.nn\.modules\.linear\), not a variance emulator .*: {fix}"
    with pytest.raises(UserInputError, match=other):
        load_variance_predictor(tmp_path / "other.ckpt")
    with pytest.raises(UserInputError, match=rf"no checkpoint at .*missing\.ckpt: {fix}"):
        load_variance_predictor(tmp_path / "missing.ckpt")
    with pytest.raises(UserInputError, match="is a training checkpoint .*: pass the inference checkpoint of the same"):
        load_variance_predictor(tmp_path / "last.ckpt")


@pytest.mark.slow
def test_no_message_passing_ablation_trains(stores):
    log = _train(stores, "variance_emulator_synthetic", "model.emulator_no_mp=True")
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in log


def test_module_entry_point_is_the_variance_data_command(tmp_path):
    """``python -m hybrid_eda.training.stores`` runs ``hybrid-eda variance-data`` (same options, same errors)."""
    out = subprocess.run(
        [sys.executable, "-m", "hybrid_eda.training.stores", "--members", "1", "--out", "x"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("hybrid-eda variance-data: error: members must be >= 2"), out.stderr
    assert not (tmp_path / "x").exists()  # refused before anything was written
