"""Hybrid (DAgger) EDA archives: the hybrid cycle's own backgrounds, the full filter's analyses of them as targets.

Checked against the harness itself: the recorded backgrounds, truth and observations are those of
``run_experiment`` with the same config (the recording must not change the cycle), and the targets are the full
filter's analyses of exactly those backgrounds (ETKF: recomputed; EnKF: the method stream replayed).
"""

from __future__ import annotations

import copy
import types
from datetime import datetime

import numpy as np
import pytest

from hybrid_eda.data.lorenz96_source import Lorenz96Source, clear_cache, runs_archive
from hybrid_eda.l96 import cycle, hybrid_archive
from hybrid_eda.l96.archive import EDAArchive
from hybrid_eda.l96.config import ExperimentConfig
from hybrid_eda.l96.experiment import run_experiment
from hybrid_eda.l96.hybrid_archive import record_archives
from hybrid_eda.l96.methods import method_spec
from hybrid_eda.l96.seeding import experiment_streams

N, N_S = 20, 10


def _config(
    method: str = "enkf", emulator: str | None = "gaussian", preset: str = "sakov2008", **kw
) -> ExperimentConfig:
    settings = dict(method=method, members=N, inflation=1.3, cycles=24, spinup=4, seed=5)
    if emulator is not None:
        settings |= dict(emulator=emulator, n_real=N_S)
    return ExperimentConfig.from_preset(preset, **(settings | kw))


@pytest.mark.parametrize("emulator", ["gaussian", "generator:untrained=true"])
def test_recorded_backgrounds_are_the_hybrid_runs(emulator):
    config = _config(emulator=emulator, cycles=12)
    (recorded,) = record_archives(config)
    run = run_experiment(config, archive=True).archive
    np.testing.assert_array_equal(recorded.background, run.background)
    np.testing.assert_array_equal(recorded.truth, run.truth)
    np.testing.assert_array_equal(recorded.observations, run.observations)
    np.testing.assert_array_equal(recorded.obs_index, run.obs_index)
    assert recorded.settings["targets"] == "full-filter analyses of the hybrid backgrounds"
    assert (recorded.settings["emulator"], recorded.settings["n_real"]) == (emulator, N_S)
    # The hybrid's emulated members are not the targets: the targets are the full filter's.
    assert not np.allclose(recorded.analysis[:, N_S:], run.analysis[:, N_S:], atol=1e-3)


def test_etkf_targets_are_the_full_filters_analyses_of_the_hybrid_backgrounds():
    config = _config("etkf", preset="pan2026")  # the plain symmetric ETKF (no random rotation)
    (recorded,) = record_archives(config)
    hybrid = run_experiment(config, archive=True).archive
    etkf = method_spec("etkf").build(config)
    rng = np.random.default_rng(0)  # unused by the deterministic ETKF
    for t in range(config.cycles):
        full = etkf.analyse(recorded.background[t][None], recorded.observations[t][None, None], rng)[0]
        np.testing.assert_array_equal(recorded.analysis[t], full)
    # A deterministic filter: the first N_s targets are the hybrid's real analyses.
    np.testing.assert_array_equal(recorded.analysis[:, :N_S], hybrid.analysis[:, :N_S])


def test_enkf_targets_replay_the_method_stream_with_own_perturbations():
    config = _config("enkf")
    (recorded,) = record_archives(config)
    enkf = method_spec("enkf").build(config)
    rng = experiment_streams(config.seed, 1)["method"]  # the cycle's method stream
    for t in range(config.cycles):
        xb, y = recorded.background[t][None], recorded.observations[t][None, None]
        full = enkf.analyse(xb, y, copy.deepcopy(rng))[0]  # what the recorder drew on the side
        np.testing.assert_array_equal(recorded.analysis[t], full)
        enkf.analyse(xb, y, rng, n_analyses=N_S)  # what the cycle drew: N_s perturbations
    # Every member has its own perturbation: the targets' increments are not one shift of the background.
    increments = recorded.analysis - recorded.background
    assert np.std(increments - increments.mean(axis=1, keepdims=True)) > 0.1


def test_full_eda_record_equals_the_plain_archive_and_batches_split_by_seed():
    config = _config(emulator=None)
    (one,) = record_archives(config)
    plain = run_experiment(config, archive=True).archive
    np.testing.assert_array_equal(one.background, plain.background)
    np.testing.assert_array_equal(one.analysis, plain.analysis)
    assert one.settings["targets"] == "the analyses the cycle used"
    # Experiment k of a batch is the single run with seed s + k (numpy emulators draw per experiment).
    first, second = record_archives(_config(batch=2, seed=4))
    (alone,) = record_archives(_config(seed=5))
    np.testing.assert_array_equal(second.background, alone.background)
    np.testing.assert_array_equal(second.analysis, alone.analysis)
    assert (first.settings["seed"], second.settings["seed"]) == (4, 5)
    assert not np.array_equal(first.truth, second.truth)


def test_recording_refuses_bounds_and_lost_seeds(monkeypatch):
    with pytest.raises(ValueError, match="needs an emulator of members"):
        record_archives(_config(emulator="oracle"))
    with pytest.raises(ValueError, match="needs an emulator of members"):
        record_archives(_config(emulator="none"))

    def second_seed_lost(*args, **kwargs):  # L96 filters rarely blow up within seconds of cycling: mark one lost
        output = cycle.run_cycles(*args, **kwargs)
        output.experiments[1]["diverged_at_cycle"] = 17
        return output

    monkeypatch.setattr(hybrid_archive, "run_cycles", second_seed_lost)
    with pytest.raises(ValueError, match=r"seed\(s\) \[6\] lost track \(at cycle\(s\) \[17\]\).* Raise `inflation`"):
        record_archives(_config(batch=2))


def test_runs_are_concatenated_in_time_without_the_later_spin_ups():
    runs = [
        {"preset": "sakov2008", "method": "enkf", "members": N, "inflation": 1.3, "cycles": 12, "spinup": 2, "seed": 1},
        {
            "preset": "sakov2008",
            "method": "enkf",
            "members": N,
            "inflation": 1.3,
            "cycles": 10,
            "spinup": 3,
            "seed": 2,
            "batch": 2,
            "emulator": "gaussian",
            "n_real": 5,
        },
    ]
    joined = runs_archive(runs)
    full = run_experiment(ExperimentConfig.from_preset(**runs[0]), archive=True).archive
    seed2, seed3 = record_archives(ExperimentConfig.from_preset(**runs[1]))
    assert joined.cycles == 12 + 7 + 7
    assert joined.start_date == full.start_date
    np.testing.assert_array_equal(joined.background[:12], full.background)
    np.testing.assert_array_equal(joined.background[12:19], seed2.background[3:])
    np.testing.assert_array_equal(joined.analysis[19:], seed3.analysis[3:])
    np.testing.assert_array_equal(joined.truth[19:], seed3.truth[3:])
    assert [p["cycles"] for p in joined.settings["parts"]] == [12, 7, 7]
    assert joined.dates[12] == full.dates[-1] + (full.dates[1] - full.dates[0])


def test_concatenate_refuses_archives_of_another_shape():
    a = record_archives(_config(emulator=None, cycles=6, spinup=1))[0]
    b = record_archives(_config(emulator=None, cycles=6, spinup=1, members=16))[0]
    with pytest.raises(ValueError, match=r"cannot concatenate EDA archive 1 \(N=16"):
        EDAArchive.concatenate([a, b])
    with pytest.raises(ValueError, match="first cycle must be in"):
        a.from_cycle(6)


def test_source_writes_a_hybrid_run():
    context = types.SimpleNamespace(
        recipe=types.SimpleNamespace(build=types.SimpleNamespace(allow_nans=["obs"])), trace=lambda *a: None
    )
    run = {"method": "enkf", "members": N, "inflation": 1.3, "cycles": 8, "spinup": 2, "seed": 3}
    run |= {"emulator": "gaussian", "n_real": N_S}
    clear_cache()
    (expected,) = record_archives(ExperimentConfig.from_preset(**run))
    source = Lorenz96Source(context, run=run, members=[12])
    fields = source.execute([expected.dates[5]])
    x_bg = fields.sel(param="x_bg")[0].to_numpy()
    x_an = fields.sel(param="x_an")[0].to_numpy()
    np.testing.assert_allclose(x_bg, expected.background[5, 11])
    np.testing.assert_allclose(x_an, expected.analysis[5, 11])
    moved = Lorenz96Source(context, run=run, members=[12], start_date="2002-01-20T00:00:00")
    x_bg_moved = moved.execute([datetime(2002, 1, 21, 6)]).sel(param="x_bg")[0].to_numpy()  # cycle 5
    np.testing.assert_array_equal(x_bg_moved, x_bg)
    with pytest.raises(ValueError, match="start_date 'soon' is not an ISO date"):
        Lorenz96Source(context, run=run, start_date="soon")
    with pytest.raises(ValueError, match="give exactly one of"):
        Lorenz96Source(context, run=run, runs=[run])
    with pytest.raises(ValueError, match="`runs` must be a non-empty list of mappings"):
        Lorenz96Source(context, runs=run)
