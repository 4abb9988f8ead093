"""End to end through anemoi on our embedded data, as the README runs it: the ``l96-truth`` recipe (copied with
``hybrid-eda recipes copy``) builds a store, the shipped ``l96_forecaster`` config trains anemoi's deterministic
GNN on it in a directory holding no configs (found through our Hydra search-path plugin), the inference
checkpoint it writes forecasts the next Lorenz-96 state far better than persistence, and ``anemoi-inference run``
runs it from another folder with the config written by ``hybrid-eda inference-config``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from isolated_run import isolated_environment, run_logged

BIN = Path(sys.executable).parent

# A shrunk copy of recipes/l96-truth.yaml: cycles 500-779 of the same truth run (280 dates, 70 days), split
# like the full recipe into training / validation / test periods.
DATES = {"start": "2000-05-05T00:00:00", "end": "2000-07-13T18:00:00"}
CYCLES = 780
SPLITS = {
    "training": ("2000-05-05", "2000-06-23"),  # 200 dates
    "validation": ("2000-06-24", "2000-07-03"),  # 40 dates
    "test": ("2000-07-04", "2000-07-13"),  # 40 dates
}
# 25 epochs of 10 batches of 8 samples: ~15 s of training on one core (plus ~12 s of start-up). Every path from
# the data to the forecast runs through the hidden mesh (tests/test_l96_forecaster_model.py), whose signal is
# weak at initialisation: the forecast stays at persistence for ~150 steps before it learns.
STEPS = 250


def _forecast_rmse(checkpoint: Path, store: Path, start: str, end: str) -> tuple[float, float]:
    """RMSE of the checkpoint's one-step forecasts and of persistence over the store's ``start..end`` dates."""
    import torch
    from anemoi.datasets import open_dataset

    model = torch.load(checkpoint, map_location="cpu", weights_only=False).eval()
    n_in = model.n_step_input
    truth = np.asarray(open_dataset(str(store), start=start, end=end)[:, :, 0, :])  # [T, var=1, grid=40]
    x = torch.from_numpy(np.moveaxis(truth, 1, -1)).float()  # [T, grid, var]
    inputs = torch.stack([x[t : t + n_in] for t in range(len(x) - n_in)])  # [S, n_in, grid, var]
    target = x[n_in:]  # [S, grid, var]
    forecast = model.predict_step({"data": inputs})["data"]  # [S, time=1, ens=1, grid, var]
    forecast = forecast.reshape(target.shape)  # [S, grid, var]
    persistence = inputs[:, -1]  # [S, grid, var]
    rmse = lambda y: float(((y - target) ** 2).mean().sqrt())  # noqa: E731
    return rmse(forecast), rmse(persistence)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The README's steps in a folder holding no configs: `hybrid-eda recipes copy l96-truth` (shrunk),
    `anemoi-datasets create`, `anemoi-training train --config-name=l96_forecaster` with the config's own dataset
    and output paths (Hydra finds our config through the plugin)."""
    tmp_path = tmp_path_factory.mktemp("l96_forecaster")
    env = isolated_environment(tmp_path)
    workdir = tmp_path / "run"
    run_logged([str(BIN / "hybrid-eda"), "recipes", "copy", "l96-truth", "--to", str(workdir)], tmp_path, env)
    recipe = yaml.safe_load((workdir / "l96-truth.yaml").read_text())
    assert recipe["input"]["lorenz96"]["variables"] == ["truth"] and recipe["input"]["lorenz96"]["members"] == [1]
    recipe["dates"].update(DATES)
    recipe["statistics"]["end"] = SPLITS["training"][1] + "T18:00:00"
    recipe["input"]["lorenz96"]["run"]["cycles"] = CYCLES
    (workdir / "l96-truth.yaml").write_text(yaml.safe_dump(recipe))
    run_logged([str(BIN / "anemoi-datasets"), "create", "l96-truth.yaml", "l96-truth.zarr"], workdir, env)

    overrides = [
        f"training.max_steps={STEPS}",
        "training.optimization.lr_scheduler.warmup_t=0",
        "dataloader.limit_batches.training=10",
        "dataloader.limit_batches.validation=1",
    ]
    for split, (start, end) in SPLITS.items():
        overrides += [f"dataloader.{split}.datasets.data.start={start}", f"dataloader.{split}.datasets.data.end={end}"]
    log = run_logged([str(BIN / "anemoi-training"), "train", "--config-name=l96_forecaster", *overrides], workdir, env)
    return {"root": tmp_path, "workdir": workdir, "env": env, "log": log, "store": workdir / "l96-truth.zarr"}


@pytest.mark.slow
def test_l96_forecaster_trains_from_any_directory(trained):
    output = trained["workdir"] / "output" / "l96_forecaster"
    assert (output / "graph" / "l96_ring.pt").is_file()
    (checkpoint,) = (output / "checkpoint").glob("*/inference-last.ckpt")
    assert len(list(checkpoint.parent.glob("inference-*.ckpt"))) >= 2  # last + the end-of-epoch ones

    # Training loss per epoch, from the progress bar (the only record with loggers off; seeds are fixed).
    log = trained["log"]
    epoch_losses = [float(v) for v in re.findall(r"train_multi_dataset_loss_epoch=([0-9.e+-]+)", log)]
    epoch_losses = [v for i, v in enumerate(epoch_losses) if i == 0 or v != epoch_losses[i - 1]]
    assert len(epoch_losses) >= 3, f"no per-epoch training loss in the log:\n{log[-3000:]}"
    assert epoch_losses[-1] < 0.5 * epoch_losses[0], epoch_losses

    # The model learnt the dynamics: one-step RMSE on the unseen test period well below persistence
    # (measured 0.32 vs 0.97 after the 250 steps; the truth's standard deviation is 3.6).
    model_rmse, persistence_rmse = _forecast_rmse(checkpoint, trained["store"], *SPLITS["test"])
    assert model_rmse < 0.7 * persistence_rmse, (model_rmse, persistence_rmse)


@pytest.mark.slow
def test_anemoi_inference_runs_the_checkpoint_from_another_folder(trained):
    """`hybrid-eda inference-config RUN_DIR --out infer.yaml` then `anemoi-inference run infer.yaml`, from a
    folder that is neither the training one nor holds the store: the shipped config opens the store at the
    absolute path the checkpoint recorded, and the forecast it writes beats persistence against the truth."""
    import netCDF4
    from anemoi.datasets import open_dataset

    elsewhere = trained["root"] / "elsewhere"
    elsewhere.mkdir()
    env = trained["env"]
    run_dir = trained["workdir"] / "output" / "l96_forecaster"
    run_logged([str(BIN / "hybrid-eda"), "inference-config", str(run_dir), "--out", "infer.yaml"], elsewhere, env)
    config = yaml.safe_load((elsewhere / "infer.yaml").read_text())
    assert config["input"] == {"test": {"use_original_paths": True}}  # the shipped input, unchanged
    assert config["date"] == SPLITS["test"][0] + "T06:00:00"  # the first test date with both input steps (-6 h, 0)
    run_logged([str(BIN / "anemoi-inference"), "run", "infer.yaml"], elsewhere, env)

    with netCDF4.Dataset(elsewhere / config["output"]["netcdf"]) as nc:
        forecast = np.asarray(nc["truth"][:])  # [time, grid]: the initial state, then one per 6 h step
    steps = config["lead_time"] // 6
    assert forecast.shape == (steps + 1, 40)
    start = np.datetime64(config["date"])
    truth = open_dataset(str(trained["store"]), start=str(start), end=str(start + np.timedelta64(6 * steps, "h")))
    truth = np.asarray(truth[:, 0, 0, :])  # [time, grid]
    np.testing.assert_allclose(forecast[0], truth[0], rtol=1e-6)  # the initial state is the truth at `date`
    model = np.sqrt(((forecast[1] - truth[1]) ** 2).mean())
    persistence = np.sqrt(((truth[0] - truth[1]) ** 2).mean())
    assert model < 0.7 * persistence, (model, persistence)  # as _forecast_rmse, through anemoi-inference's runner
    assert np.isfinite(forecast).all()


@pytest.mark.slow
def test_inference_config_finds_a_moved_or_relative_store(trained, tmp_path, monkeypatch):
    """`--dataset` points the config at a store elsewhere; a store recorded relative to the training folder is
    made absolute; one that is gone stops with the fix (checked on the trained checkpoint's metadata)."""
    from hybrid_eda.inference import config as inference

    run_dir = trained["workdir"] / "output" / "l96_forecaster"
    moved = tmp_path / "moved.zarr"
    moved.mkdir()
    config = inference.inference_config(run_dir, dataset=moved, date="2000-07-05T00:00:00", lead_time=12)
    assert config["input"] == {"dataset": str(moved)}
    assert (config["date"], config["lead_time"]) == ("2000-07-05T00:00:00", 12)
    assert config["checkpoint"].endswith("inference-last.ckpt") and Path(config["checkpoint"]).is_absolute()

    recorded, start = inference._test_split(inference._metadata(inference.find_checkpoint(run_dir)))
    assert recorded == str(trained["store"]) and start == SPLITS["test"][0]  # absolute: ${hydra:runtime.cwd}
    monkeypatch.chdir(trained["workdir"])
    monkeypatch.setattr(inference, "_test_split", lambda metadata: ("l96-truth.zarr", start))
    assert inference.inference_config(run_dir)["input"] == {"dataset": str(trained["store"])}
    monkeypatch.setattr(inference, "_test_split", lambda metadata: ("/gone/l96-truth.zarr", start))
    with pytest.raises(ValueError, match="trained on /gone/l96-truth.zarr, which does not exist here; pass --dataset"):
        inference.inference_config(run_dir)
    with pytest.raises(ValueError, match="--lead-time must be a positive"):
        inference.inference_config(run_dir, dataset=trained["store"], lead_time=0)
