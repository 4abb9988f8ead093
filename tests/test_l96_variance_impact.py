"""The variance-impact experiment: 4D-Var with a given B, the EDA record, the controls, a short seeded run, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybrid_eda.cli import main
from hybrid_eda.l96.config import ExperimentConfig
from hybrid_eda.l96.eda_record import EDARecord, record_eda
from hybrid_eda.l96.experiment import run_experiment
from hybrid_eda.l96.filters.climatology import Climatology
from hybrid_eda.l96.model import Lorenz96
from hybrid_eda.l96.observations import ObservationOperator
from hybrid_eda.l96.var4d_given_b import Var4DGivenB, assemble_b, correlation_from_covariance
from hybrid_eda.l96.variance_impact import VarianceImpactSettings, run_variance_impact
from hybrid_eda.l96.variance_sources import EmulatedVariances, SmoothedSubsetVariances, SubsetVariances

MODEL = Lorenz96(n=40, forcing=8.0, dt=0.05)


@pytest.fixture(scope="module")
def correlation() -> np.ndarray:
    """The correlation ``[n, n]`` of a seeded climatological covariance of Lorenz-96."""
    return correlation_from_covariance(Climatology.from_free_run(MODEL, np.random.default_rng(7), 5000, 500).cov)


def test_correlation_and_b_assembly(correlation):
    rng = np.random.default_rng(0)
    d = rng.uniform(0.05, 2.0, (3, 40))  # [3, n]
    assert np.allclose(np.diag(correlation), 1.0) and np.allclose(correlation, correlation.T)
    explicit = np.stack([np.diag(np.sqrt(v)) @ correlation @ np.diag(np.sqrt(v)) for v in d])  # D^1/2 C D^1/2
    assert np.allclose(assemble_b(d, correlation), explicit, rtol=0, atol=1e-13)
    method = Var4DGivenB(MODEL, ObservationOperator(n=40), correlation)
    assert np.allclose(method.b_matrix(d), explicit, rtol=0, atol=1e-12)  # B = Ut^T Ut of the control transform
    assert np.allclose(np.diagonal(method.b_matrix(d), axis1=-2, axis2=-1), d)


def test_window_one_is_the_exact_linear_analysis(correlation):
    """One observation time and a linear H: xb + B H^T (H B H^T + R)^-1 (y - H xb), per batch entry."""
    rng = np.random.default_rng(1)
    obs = ObservationOperator(n=40, every=3, obs_std=0.7)
    method = Var4DGivenB(MODEL, obs, correlation, window=1, outer_loops=1)
    xb = MODEL.forcing + 3 * rng.standard_normal((4, 1, 40))  # [B, N=1, n]
    y = rng.standard_normal((4, 1, obs.p)) + xb[:, :, obs.index]  # [B, L=1, p]
    d = rng.uniform(0.1, 1.5, (4, 40))  # [B, n]
    xa = method.analyse(xb, y, variances=d)  # [B, 1, n]
    h = np.eye(40)[obs.index]  # [p, n]
    for b in range(4):
        bmat = assemble_b(d[b], correlation)
        gain = bmat @ h.T @ np.linalg.inv(h @ bmat @ h.T + obs.variance * np.eye(obs.p))
        expected = xb[b, 0] + gain @ (y[b, 0] - h @ xb[b, 0])
        assert np.max(np.abs(xa[b, 0] - expected)) < 1e-10


def test_zero_variance_keeps_the_background_and_window_converges(correlation):
    rng = np.random.default_rng(2)
    obs = ObservationOperator(n=40)
    truth = MODEL.forecast(MODEL.forcing + rng.standard_normal(40), 300)
    y = np.stack([obs.sample(MODEL.forecast(truth, lag), rng) for lag in range(4)])[None]  # [1, L, p]
    xb = (truth + 0.5 * rng.standard_normal(40))[None, None]  # [1, 1, n]
    d = np.full((1, 40), 0.3)
    d[0, 5] = 0.0
    result = Var4DGivenB(MODEL, obs, correlation, window=4, outer_loops=6).minimise(xb, y, d)
    assert result.analysis[0, 0, 5] == xb[0, 0, 5]  # no variance, no increment
    assert result.grad_norm[..., -1].max() < 1e-6 * result.grad_norm[..., 0].max()  # a stationary point of J
    assert np.sqrt(np.mean((result.analysis[0, 0] - truth) ** 2)) < np.sqrt(np.mean((xb[0, 0] - truth) ** 2))


def test_given_b_input_errors(correlation):
    method = Var4DGivenB(MODEL, ObservationOperator(n=40), correlation, window=2)
    xb, y = np.zeros((1, 40)), np.zeros((2, 40))
    with pytest.raises(ValueError, match="no variances"):
        method.analyse(xb, y)
    with pytest.raises(ValueError, match=">= 0"):
        method.analyse(xb, y, variances=-np.ones(40))
    with pytest.raises(ValueError, match=r"observations must have shape \[\.\.\., L, p\]"):
        method.analyse(xb, np.zeros((1, 40)), variances=np.ones(40))


def test_record_is_the_harness_run():
    """The recorder leaves the EDA unchanged; its truth is run_cycles' truth bit for bit."""
    config = ExperimentConfig.from_preset("sakov2008", method="4dvar", members=8, cycles=25, spinup=5, seed=3)
    record = record_eda(config, subset=3, extra_steps=7)
    plain = run_experiment(config, archive=True)
    assert record.truth.shape == (25 * 4 + 7 + 1, 1, 40)
    assert np.array_equal(record.truth[: 25 * 4 : 4, 0], plain.archive.truth)
    assert np.array_equal(record.members[:, 0], plain.archive.background[:, :3])
    assert np.array_equal(record.eda_analysis_rmse, plain.output.series["analysis_rmse"])
    assert np.allclose(record.variance[:, 0], plain.archive.background.var(axis=1, ddof=1))
    assert np.allclose(SubsetVariances(m=3).variances(record)[:, 0], plain.archive.background[:, :3].var(1, ddof=1))
    with pytest.raises(ValueError, match="2 <= m <= 3"):
        SubsetVariances(m=4).variances(record)
    with pytest.raises(ValueError, match=r"map \[\.\.\., M, n\] members"):
        EmulatedVariances(lambda m: m.std(axis=-1), m=3).variances(record)


TINY = {"members": 10, "subset": 3, "cycles": 160, "spinup": 30, "train_cycles": 120, "seeds": 2}
TINY |= {"scales": (0.7, 1.0, 1.4), "leads": (0, 2, 4), "block": 40}


def test_short_experiment_is_reproducible_and_ranks_a_wrong_d(tmp_path):
    """Same seeds, same numbers (also from the cache); variances 100x too large are significantly worse."""
    settings = VarianceImpactSettings(**TINY)
    wrong = lambda members: 10.0 * members.std(axis=-2, ddof=1)  # noqa: E731 - a deliberately bad "emulator"
    first = run_variance_impact(settings, wrong, cache_dir=tmp_path)
    again = run_variance_impact(settings, wrong, cache_dir=tmp_path)  # EDA records loaded from the cache
    assert len(list(tmp_path.glob("eda-*.npz"))) == 2
    assert np.array_equal(first.errors, again.errors)
    assert first.rows == ["ensemble-10", "raw-3", "emulator-3", "static"]
    assert first.summary["seeds"] == [100, 101] and first.summary["train_seeds"] == [0, 1]
    assert first.summary["tuning"]["scale"] in TINY["scales"]
    rows = first.summary["rows"]
    assert rows["emulator-3"]["variance_vs_reference"]["mean_log_ratio"] > 3  # log(100) = 4.6 minus the noise
    assert rows["ensemble-10"]["variance_vs_reference"] == {"relative_rms_error": 0.0, "mean_log_ratio": 0.0}
    bad = first.summary["rows"]["emulator-3"]["change"]
    assert all(bad["significant"]) and min(bad["change"]) > 0.05  # 100x variances: much worse at every lead
    assert bad["n_tests"] == 3 * 3 and bad["seeds"] == 2 and bad["cycles"] == 130
    blocks = rows["emulator-3"]["blocks"]  # 2 seeds x 3 blocks of 40 of the 130 scored cycles, tested one by one
    assert blocks["blocks"] == 6 and blocks["share_worse"][0] > 0.5
    assert np.allclose(np.add(blocks["share_worse"], blocks["share_neutral"]) + blocks["share_better"], 1.0)
    ref = first.summary["rows"]["ensemble-10"]["median_rmse"]
    assert ref[0] < ref[1] < ref[2]  # errors grow with lead time
    without = run_variance_impact(settings, None, cache_dir=tmp_path)
    assert without.rows == ["ensemble-10", "raw-3", "static"]
    # the emulator row is cycled on its own: the other rows are unchanged without it
    assert np.array_equal(without.errors, first.errors[:, [0, 1, 3]])


def test_noise_rows_calibrate_the_cost_of_a_variance_error(tmp_path):
    """Known lognormal noise on the N-member variances: a larger error gives a larger analysis RMSE."""
    settings = VarianceImpactSettings(**TINY | {"noise": (0.05, 1.0), "smooth": 2})
    result = run_variance_impact(settings, None, cache_dir=tmp_path)
    assert result.rows == ["ensemble-10", "raw-3", "smoothed-3", "static", "noisy-0.05", "noisy-1"]
    rows = result.summary["rows"]
    small, large = rows["noisy-0.05"], rows["noisy-1"]
    assert 0.03 < small["variance_vs_reference"]["relative_rms_error"] < 0.08  # about sigma for small sigma
    assert large["variance_vs_reference"]["relative_rms_error"] > 0.8
    assert abs(small["change"]["change"][0]) < 0.01 < large["change"]["change"][0]
    assert large["change"]["significant"][0]


def test_settings_keep_training_and_scored_seeds_apart():
    with pytest.raises(ValueError, match="must lie below 100"):
        VarianceImpactSettings(seed=50)
    with pytest.raises(ValueError, match="must lie below 100"):
        VarianceImpactSettings(train_seed=99, train_seeds=2)
    with pytest.raises(ValueError, match="correlation must be one of"):
        VarianceImpactSettings(correlation="identity")


def test_cli_writes_json_and_figure(tmp_path, capsys):
    argv = ["l96", "variances", "--members", "8", "--subset", "3", "--seeds", "2", "--cycles", "80"]
    argv += ["--spinup", "20", "--train-cycles", "60", "--scales", "0.7,1.4", "--leads", "0,4"]
    argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "no --emulator: the emulator row is skipped" in printed and "raw-3" in printed
    summary = json.loads((tmp_path / "out" / "variances.json").read_text())
    assert list(summary["rows"]) == ["ensemble-8", "raw-3", "static"]
    assert summary["lead_hours"] == [0.0, 24.0]
    assert (tmp_path / "out" / "variances.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_record_round_trip(tmp_path):
    config = ExperimentConfig.from_preset("sakov2008", method="4dvar", members=4, cycles=6, spinup=1, seed=0)
    record = record_eda(config, subset=2)
    loaded = EDARecord.load(record.save(tmp_path / "r.npz"))
    assert loaded.settings == json.loads(json.dumps(record.settings))
    for name in ("observations", "variance", "members", "background_mean", "mean_covariance", "truth", "lost_at"):
        assert np.array_equal(getattr(loaded, name), getattr(record, name))


def test_smoothed_subset_is_a_ring_average():
    config = ExperimentConfig.from_preset("sakov2008", method="4dvar", members=6, cycles=4, spinup=1, seed=5)
    record = record_eda(config, subset=4)
    raw = SubsetVariances(m=4).variances(record)  # [T, B, n]
    smooth = SmoothedSubsetVariances(m=4, half_width=1).variances(record)
    assert np.allclose(smooth[..., 0], (raw[..., -1] + raw[..., 0] + raw[..., 1]) / 3)  # periodic neighbours
    assert np.allclose(smooth.mean(axis=-1), raw.mean(axis=-1))  # a filter that keeps the ring mean
    assert np.array_equal(SmoothedSubsetVariances(m=4, half_width=0).variances(record), raw)
