"""Member emulators of the hybrid EDA cycle: exact formulas, statistics, the oracle identity, clear errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hybrid_eda.l96.emulators import (
    EMULATORS,
    GaussianResampling,
    MeanShift,
    MemberEmulator,
    NoEmulation,
    Oracle,
    RescaledAnomalies,
    SampleCovarianceResampling,
    get_emulator,
)
from hybrid_eda.l96.experiment import ExperimentConfig, run_experiment, run_hybrid

N_S, K, NX = 10, 10, 40


@pytest.fixture
def members():
    """Backgrounds and analyses of a 20-member ensemble split into N_s real and K emulated members."""
    rng = np.random.default_rng(7)
    xb = 8.0 + 3.0 * rng.standard_normal((N_S + K, NX))  # [N, n]
    xa = xb + rng.standard_normal((N_S + K, NX)) * 0.3 - 0.5  # [N, n]
    return xb[N_S:], xa[:N_S], xb[:N_S], xa[N_S:]


def test_registry_holds_the_baselines():
    assert set(EMULATORS) == {"none", "mean-shift", "rescaled-anomalies", "gaussian", "gaussian-full", "oracle"}
    for name, cls in EMULATORS.items():
        assert issubclass(cls, MemberEmulator) and cls.name == name
        assert isinstance(get_emulator(name), cls)


def test_mean_shift_is_background_plus_mean_increment(members):
    xb, guide_a, guide_b, _ = members
    out = MeanShift().generate(xb, guide_a, K, np.random.default_rng(0), guide_backgrounds=guide_b)
    expected = np.stack([xb[i] + guide_a.mean(0) - guide_b.mean(0) for i in range(K)])  # loop reference
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    # Anomalies (and so the spread) of the emulated members are their background anomalies.
    np.testing.assert_allclose(out - out.mean(0), xb - xb.mean(0), atol=1e-12)


def test_rescaled_anomalies_formula(members):
    xb, guide_a, guide_b, _ = members
    out = RescaledAnomalies().generate(xb, guide_a, K, np.random.default_rng(0), guide_backgrounds=guide_b)
    np.testing.assert_allclose(out.mean(0), guide_a.mean(0), atol=1e-12)
    scale = np.sqrt(guide_a.var(0, ddof=1).sum() / guide_b.var(0, ddof=1).sum())
    np.testing.assert_allclose(out - out.mean(0), scale * (xb - xb.mean(0)), atol=1e-12)


def test_gaussian_resampling_reproduces_guide_mean_and_variances(members):
    _, guide_a, _, _ = members
    rng = np.random.default_rng(1)
    draws = GaussianResampling().generate(np.zeros((200_000, NX)), guide_a, 200_000, rng)  # [M, n]
    mean, std = guide_a.mean(0), guide_a.std(0, ddof=1)
    # Standard errors: std / sqrt(M) for the mean, ~ var * sqrt(2 / M) for the variance.
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * std / np.sqrt(2e5))
    np.testing.assert_allclose(draws.var(0), std**2, rtol=5 * np.sqrt(2 / 2e5))
    # Variables are drawn independently: off-diagonal correlations vanish.
    corr = np.corrcoef(draws[:, :5], rowvar=False)
    assert np.abs(corr - np.eye(5)).max() < 0.02


def test_full_covariance_resampling_reproduces_guide_covariance(members):
    _, guide_a, _, _ = members
    draws = SampleCovarianceResampling().generate(np.zeros((100_000, NX)), guide_a, 100_000, np.random.default_rng(2))
    cov = np.cov(guide_a, rowvar=False)
    np.testing.assert_allclose(draws.mean(0), guide_a.mean(0), atol=5 * np.sqrt(cov.diagonal().max() / 1e5))
    np.testing.assert_allclose(np.cov(draws, rowvar=False), cov, atol=0.03 * np.abs(cov).max())
    # Every draw lies in the span of the guide anomalies (rank N_s - 1).
    anomalies = draws - guide_a.mean(0)
    assert np.linalg.matrix_rank(anomalies[:200], tol=1e-8) == N_S - 1


def test_oracle_returns_the_real_analyses(members):
    xb, guide_a, _, real = members
    out = Oracle().generate(xb, guide_a, K, np.random.default_rng(0), real_analyses=real)
    np.testing.assert_array_equal(out, real)
    assert out is not real


def test_emulators_accept_a_batch_dim(members):
    xb, guide_a, guide_b, real = members
    stack = lambda a: np.stack([a, a + 1.0])  # noqa: E731  [2, ..., n]
    out = MeanShift().generate(stack(xb), stack(guide_a), K, np.random.default_rng(0), guide_backgrounds=stack(guide_b))
    single = MeanShift().generate(xb, guide_a, K, np.random.default_rng(0), guide_backgrounds=guide_b)
    np.testing.assert_allclose(out[0], single)
    np.testing.assert_allclose(out[1], single + 1.0)
    g = GaussianResampling().generate(stack(xb), stack(guide_a), K, np.random.default_rng(0))
    assert g.shape == (2, K, NX)


def test_emulator_errors(members):
    xb, guide_a, guide_b, _ = members
    with pytest.raises(ValueError, match="guide_backgrounds"):
        MeanShift().generate(xb, guide_a, K, np.random.default_rng(0))
    with pytest.raises(ValueError, match="one background per emulated member"):
        MeanShift().generate(xb, guide_a, K + 1, np.random.default_rng(0), guide_backgrounds=guide_b)
    with pytest.raises(ValueError, match="real_analyses"):
        Oracle().generate(xb, guide_a, K, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 2 real members"):
        GaussianResampling().generate(xb, guide_a[:1], K, np.random.default_rng(0))
    with pytest.raises(ValueError, match="state size"):
        GaussianResampling().generate(xb[:, :5], guide_a, K, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="never calls generate"):
        NoEmulation().generate(xb, guide_a, K, np.random.default_rng(0))


def test_get_emulator_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown emulator 'magic'; available emulators: none, mean-shift"):
        get_emulator("magic")
    ckpt = tmp_path / "generator.ckpt"
    with pytest.raises(ValueError, match="checkpoint.*member-generator capability"):
        get_emulator(str(ckpt))


# ---- in the cycle ------------------------------------------------------------------------------------------

SHORT = ExperimentConfig.from_preset("pan2026", cycles=300, spinup=50, seed=4, n_real=10)


def test_oracle_hybrid_equals_the_full_eda_exactly():
    result = run_hybrid(replace(SHORT, emulator="oracle"))
    for key in ("analysis_rmse", "background_rmse", "analysis_spread"):
        np.testing.assert_array_equal(result.hybrid.output.series[key], result.full.output.series[key])
    assert result.hybrid.output.experiments[0]["rank_histogram"] == result.full.output.experiments[0]["rank_histogram"]
    summary = result.summary()
    assert summary["analysis_rmse_ratio"] == 1.0
    assert summary["full"]["analysis_rmse"] == summary["hybrid"]["analysis_rmse"] < 0.3


def test_hybrid_keeps_the_first_real_members(monkeypatch):
    """Members 0..N_s-1 are the method's analyses; N_s..N-1 come from the emulator (here: a constant)."""

    class Constant(MemberEmulator):
        name = "constant"

        def generate(self, backgrounds, guide_analyses, n_members, rng, *, guide_backgrounds=None, real_analyses=None):
            return np.full(backgrounds.shape, 8.0)

    monkeypatch.setitem(EMULATORS, "constant", Constant)
    config = replace(SHORT, emulator="constant", cycles=20, spinup=0)
    result = run_experiment(config, archive=True)
    an = result.archive.analysis  # [T, N, n]
    np.testing.assert_array_equal(an[:, 10:], 8.0)
    assert not np.allclose(an[:, :10], 8.0)
    # The real members of the first cycle are exactly the full 20-member ETKF of the first background.
    from hybrid_eda.l96.filters import ETKF

    etkf = ETKF(config.model(), config.observations(), inflation=config.inflation)
    y0 = result.archive.observations[0][None, :]  # [1, p]
    np.testing.assert_allclose(etkf.analyse(result.archive.background[0], y0)[:10], an[0, :10], atol=1e-12)


def test_none_emulator_runs_an_n_real_member_eda():
    result = run_hybrid(replace(SHORT, emulator="none"))
    summary = result.summary()
    assert summary["hybrid"]["members"] == 10 and len(summary["hybrid"]["rank_histogram"]) == 11
    assert summary["full"]["members"] == 20
    # Same truth: a plain 10-member run with the same seed gives the same scores.
    plain = run_experiment(replace(SHORT, members=10, emulator=None, n_real=None))
    assert plain.score("analysis_rmse") == pytest.approx(result.hybrid.score("analysis_rmse"), rel=1e-12)
