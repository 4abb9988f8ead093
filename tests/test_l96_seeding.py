"""Seeds mean the same everywhere: experiment k of ``--batch B --seed s`` is, bit for bit, the run ``--seed s+k``."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_eda.l96.config import ExperimentConfig
from hybrid_eda.l96.experiment import run_experiment
from hybrid_eda.l96.metrics import ScoreAccumulator
from hybrid_eda.l96.seeding import STREAMS, BatchGenerator, experiment_streams

SEED = 11


def test_batch_generator_draws_each_slice_from_its_own_stream():
    rng = BatchGenerator([np.random.default_rng(5), np.random.default_rng(6), np.random.default_rng(7)])
    first, second = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 5))
    for k, seed in enumerate((5, 6, 7)):
        alone = np.random.default_rng(seed)
        np.testing.assert_array_equal(first[k], alone.standard_normal((4, 2)))
        np.testing.assert_array_equal(second[k], alone.standard_normal(5))
    assert rng.standard_normal(3).shape == (3,)
    with pytest.raises(ValueError, match="leading batch axis of size 3"):
        rng.standard_normal((4, 2))


def test_streams_of_experiment_k_are_those_of_seed_plus_k():
    batch = experiment_streams(SEED, 4)
    assert tuple(batch) == STREAMS
    for k in range(4):
        alone = experiment_streams(SEED + k, 1)
        for name in STREAMS:
            np.testing.assert_array_equal(batch[name][k].standard_normal(6), alone[name][0].standard_normal(6))
    with pytest.raises(ValueError, match="non-negative"):
        experiment_streams(-1, 2)


CASES = {
    "etkf": dict(method="etkf", rotate=False, cycles=300),
    "etkf-rotate": dict(method="etkf", rotate=True, cycles=300),
    "enkf": dict(method="enkf", members=30, inflation=1.06, cycles=300),
    "4dvar": dict(method="4dvar", cycles=12),
    "hybrid-gaussian": dict(method="etkf", emulator="gaussian", n_real=10, cycles=200),
}


def _run(case: dict, seed: int, batch: int):
    config = ExperimentConfig.from_preset("pan2026", seed=seed, batch=batch, spinup=0, **case)
    return run_experiment(config).output


@pytest.mark.parametrize("name", sorted(CASES))
def test_experiment_k_of_a_batch_is_the_single_run_with_seed_plus_k(name):
    case = CASES[name]
    batch4 = _run(case, SEED, 4)
    batch2 = _run(case, SEED + 2, 2)  # experiments SEED+2, SEED+3 again, in another batch size and position
    for k in range(4):
        single = _run(case, SEED + k, 1)
        # The whole summary dict: every time-mean score, both CRPS, both rank histograms, the cycle counts.
        assert {"crps", "background_crps", "rank_histogram", "background_rank_histogram"} <= set(single.experiments[0])
        assert batch4.experiments[k] == single.experiments[0], f"experiment {k}"
        for key, values in single.series.items():
            np.testing.assert_array_equal(batch4.series[key][:, k], values[:, 0], err_msg=f"{key} of experiment {k}")
    for k in range(2):
        assert batch2.experiments[k] == batch4.experiments[k + 2]
        np.testing.assert_array_equal(batch2.series["analysis_rmse"][:, k], batch4.series["analysis_rmse"][:, k + 2])


def _tied_cycles(batch: int, cycles: int = 6, members: int = 5, n: int = 8) -> list[tuple[np.ndarray, ...]]:
    """``cycles`` x (background, analysis ``[B, N, n]``, truth ``[B, n]``) where members often equal the truth.

    Experiment 0 ties on every variable (as a lost experiment parked on the truth does), the others on a few
    variables, so a tie-break generator shared by the batch would hand experiment k draws that depend on the
    ties of the experiments before it.
    """
    rng = np.random.default_rng(0)
    out = []
    for _ in range(cycles):
        truth = rng.standard_normal((batch, n))
        bg, an = rng.standard_normal((2, batch, members, n))
        an[0, :2] = truth[0]  # two members on the truth, every variable
        for k in range(1, batch):
            an[k, k % members, : k + 1] = truth[k, : k + 1]
        out.append((bg, an, truth))
    return out


def test_rank_ties_of_experiment_k_are_broken_from_its_own_stream():
    """The rank histogram (and every other score) of experiment k does not depend on the batch it is scored in."""
    cycles = _tied_cycles(4)
    batch = ScoreAccumulator(rng=experiment_streams(SEED, 4)["ranks"])
    shared = ScoreAccumulator(rng=np.random.default_rng(SEED))  # the old way: one generator for the batch
    for bg, an, truth in cycles:
        batch.update(bg, an, truth)
        shared.update(bg, an, truth)
    for k in range(4):
        single = ScoreAccumulator(rng=experiment_streams(SEED + k, 1)["ranks"])
        for bg, an, truth in cycles:
            single.update(bg[k : k + 1], an[k : k + 1], truth[k : k + 1])
        assert batch.summaries()[k] == single.summaries()[0], f"experiment {k}"
    # The test has teeth: with a shared generator, experiment 3's ties follow those of experiments 0-2.
    alone = ScoreAccumulator(rng=np.random.default_rng(SEED))
    for bg, an, truth in cycles:
        alone.update(bg[3:], an[3:], truth[3:])
    assert shared.summaries()[3]["rank_histogram"] != alone.summaries()[0]["rank_histogram"]
    with pytest.raises(ValueError, match="holds 2 generators for 4 experiments"):
        ScoreAccumulator(rng=experiment_streams(SEED, 2)["ranks"]).update(*cycles[0])
