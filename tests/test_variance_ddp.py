"""Data-parallel training of the variance emulator: a two-process DDP run over gloo on CPU trains exactly like one
process, through ``anemoi-training train --config-name=variance_emulator_synthetic`` on the tiny stores.

What "the same" means here. One process with a batch of 2 and two processes with a batch of 1 each see the same
samples: anemoi shuffles the dates with one generator seeded alike on every rank and hands each rank its slice of
the permutation; with the tiny store's 2 training dates that makes one step per epoch, ranks 0 and 1 taking the
two samples the single process batches together. The members drawn for a sample are a function of (seed, date,
epoch) (:mod:`hybrid_eda.data.members`), not of the rank or worker. The loss is a batch mean and DDP averages the
ranks' gradients, so both runs follow the same gradient; anemoi multiplies the learning rate by the number of
processes (``effective_lr = num_nodes * num_gpus_per_node * lr / num_gpus_per_model``), so the 2-process run is
given half the configured rate. Initial weights: every rank builds the model from the same trainer seed and DDP
broadcasts rank 0's. What remains is float32 reduction order (one batch of 2 vs two batches of 1 and an
all-reduce), so the losses and weights agree to float32 rounding, not bit for bit (tolerances below, as measured).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from isolated_run import isolated_environment, run_logged
from tiny_variance import stores_command, train_command

TESTS = Path(__file__).resolve().parent
STEPS = 3  # 3 epochs of one step: epochs 2 and 3 reshuffle the dates and draw new members
LR = 1.0e-3  # the effective learning rate of both runs


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The tiny stores (O32, 2 levels, 6 members; 2 training dates) and an environment that finds the recorder."""
    tmp_path = tmp_path_factory.mktemp("variance_ddp")
    env = isolated_environment(tmp_path)
    env["PYTHONPATH"] = str(TESTS) + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
    workdir = tmp_path / "run"
    run_logged(stores_command(workdir), tmp_path, env)
    return {"workdir": workdir, "env": env}


def _train(stores, processes: int) -> dict:
    """Train ``STEPS`` steps on ``processes`` CPU processes, global batch 2; the recorder's lines and the weights."""
    import torch

    name = f"ddp{processes}"
    output = stores["workdir"] / name
    extra = [
        "system.hardware.accelerator=cpu",
        f"system.hardware.num_gpus_per_node={processes}",  # Lightning DDP, gloo on CPU
        f"dataloader.batch_size.training={2 // processes}",
        f"training.optimization.lr={LR / processes}",  # anemoi scales it by the number of processes
        "training.optimization.lr_scheduler.warmup_t=0",  # full rate from the first step: differences show at once
        f"system.output.root={output}",
        f"diagnostics.callbacks=[{{_target_:step_recorder.StepRecorder,path:{output}/steps}}]",
    ]
    log = run_logged(train_command("variance_emulator_synthetic", STEPS, *extra), stores["workdir"], stores["env"])
    assert f"`Trainer.fit` stopped: `max_steps={STEPS}` reached" in log
    records = [json.loads(line) for rank in range(processes) for line in (output / f"steps.rank{rank}").open()]
    (checkpoint,) = (output / "checkpoint").glob("*/last.ckpt")
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {"log": log, "records": records, "weights": weights}


def _by_step(records: list[dict]) -> dict[int, dict]:
    """Per step: the ranks' mean loss, the learning rate and the sorted fingerprints of every sample trained on."""
    steps: dict[int, dict] = {}
    for r in records:
        step = steps.setdefault(r["step"], {"losses": [], "lr": set(), "members": [], "spread": []})
        step["losses"].append(r["loss"])
        step["lr"].add(r["lr"])
        step["members"] += r["samples"]["members"]
        step["spread"] += r["samples"]["spread"]
    return {
        k: {
            "loss": float(np.mean(v["losses"])),
            "lr": v["lr"],
            "members": sorted(v["members"]),
            "spread": sorted(v["spread"]),
        }  # fmt: skip
        for k, v in sorted(steps.items())
    }


@pytest.fixture(scope="module")
def runs(stores):
    return {processes: _train(stores, processes) for processes in (1, 2)}


@pytest.mark.slow
def test_two_processes_train_on_the_samples_and_members_of_one(runs):
    one, two = _by_step(runs[1]["records"]), _by_step(runs[2]["records"])
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    assert {r["world_size"] for r in runs[2]["records"]} == {2} and "distributed_backend=gloo" in runs[2]["log"]
    assert all(len(r["samples"]["members"]) == 1 for r in runs[2]["records"])  # batch 1 per rank
    for step in one:
        # The same dates (spread) and the same members drawn for them, in float64 sums of each sample's tensor.
        assert one[step]["spread"] == two[step]["spread"] and len(one[step]["spread"]) == 2
        assert one[step]["members"] == two[step]["members"]
        assert one[step]["lr"] == two[step]["lr"] and len(two[step]["lr"]) == 1  # every rank, the same rate
    # The rate after step 1 (the recorder sees it after the scheduler's step): anemoi's cosine schedule from the
    # effective rate LR (no warm-up) to lr_min over STEPS steps, in both runs.
    lr_min = 3e-7
    (lr,) = one[1]["lr"]
    assert lr == pytest.approx(lr_min + (LR - lr_min) * (1 + math.cos(math.pi / STEPS)) / 2, rel=1e-12)
    assert len({tuple(one[s]["members"]) for s in one}) > 1  # new members in later epochs


@pytest.mark.slow
def test_two_processes_give_the_loss_and_weights_of_one(runs):
    """The loss of every step (mean over ranks) and the final weights agree to float32 rounding, far below what a
    step moves (a wrong learning-rate scaling or other members would differ by the size of a step)."""
    one, two = _by_step(runs[1]["records"]), _by_step(runs[2]["records"])
    losses = np.array([[one[s]["loss"], two[s]["loss"]] for s in one])  # [step, run]
    # Measured: step 1 differs by 4.6e-8 relative (half a float32 ulp: one process rounds the batch mean to float32,
    # the ranks' mean is formed here in float64), steps 2 and 3 are identical; ~10 ulps allowed.
    np.testing.assert_allclose(losses[:, 1], losses[:, 0], rtol=1e-6, atol=0)
    assert np.ptp(losses[:, 0]) > 1e3 * np.abs(losses[:, 1] - losses[:, 0]).max()  # training moved the loss

    # Final weights: float32 rounding (measured 1.3e-7 at most), against the ~LR = 1e-3 by which AdamW moves every
    # weight with a gradient in one step (its update is about lr * sign(gradient)).
    w1, w2 = runs[1]["weights"], runs[2]["weights"]
    assert list(w1) == list(w2)
    difference = max(float((w1[name].double() - w2[name].double()).abs().max()) for name in w1 if w1[name].numel())
    assert difference < 1e-3 * LR, difference
