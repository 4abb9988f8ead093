"""Member emulators of the hybrid EDA cycle: exact formulas, statistics, the template-method contract, clear errors."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from hybrid_eda.l96.emulators import (
    BOUNDS,
    EMULATORS,
    GaussianResampling,
    MeanShift,
    MemberEmulator,
    NoEmulation,
    OracleBound,
    RescaledAnomalies,
    SampleCovarianceResampling,
    UpperBound,
    get_emulator,
    get_member_source,
)

N_S, K, NX = 10, 10, 40


@pytest.fixture
def members():
    """Backgrounds and analyses of a 20-member ensemble split into N_s real and K emulated members."""
    rng = np.random.default_rng(7)
    xb = 8.0 + 3.0 * rng.standard_normal((N_S + K, NX))  # [N, n]
    xa = xb + rng.standard_normal((N_S + K, NX)) * 0.3 - 0.5  # [N, n]
    return xb[N_S:], xa[:N_S], xb[:N_S], xa[N_S:]


def test_registries_keep_emulators_and_upper_bounds_apart():
    assert set(EMULATORS) == {
        *("none", "mean-shift", "rescaled-anomalies", "gaussian", "gaussian-full"),
        *("local-regression", "etkf-reconstruction"),
    }
    assert set(BOUNDS) == {"oracle"}
    for name, cls in EMULATORS.items():
        assert issubclass(cls, MemberEmulator) and cls.name == name
        assert isinstance(get_emulator(name), cls) and isinstance(get_member_source(name), cls)
    assert not issubclass(OracleBound, MemberEmulator) and issubclass(OracleBound, UpperBound)
    assert OracleBound.label == "upper bound"
    assert isinstance(get_member_source("oracle"), OracleBound)
    with pytest.raises(ValueError, match="upper bound given the hidden analyses, not an emulator"):
        get_emulator("oracle")


_ALLOWED = ["self", "backgrounds", "guide_analyses", "n_members", "rng", "guide_backgrounds", "observations"]


@pytest.mark.parametrize("cls", list(EMULATORS.values()))
def test_generate_cannot_be_given_the_hidden_analyses(cls):
    """The contract itself has no parameter through which the emulated members' real analyses could arrive."""
    for method in (cls.generate, cls._generate):
        params = inspect.signature(method).parameters
        assert list(params) == _ALLOWED, f"{cls.__name__}.{method.__name__}{inspect.signature(method)}"
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    # Template method: the shape checks live once in the base class; subclasses only write _generate.
    assert cls.generate is MemberEmulator.generate


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


def test_oracle_bound_returns_a_copy_of_what_it_is_given(members):
    xb, _, _, hidden = members
    out = OracleBound().members(hidden, xb)
    np.testing.assert_array_equal(out, hidden)
    assert not np.shares_memory(out, hidden)
    with pytest.raises(ValueError, match="must match backgrounds"):
        OracleBound().members(hidden[:3], xb)


def test_emulators_accept_a_batch_dim(members):
    xb, guide_a, guide_b, _ = members
    stack = lambda a: np.stack([a, a + 1.0])  # noqa: E731  [2, ..., n]
    out = MeanShift().generate(stack(xb), stack(guide_a), K, np.random.default_rng(0), guide_backgrounds=stack(guide_b))
    single = MeanShift().generate(xb, guide_a, K, np.random.default_rng(0), guide_backgrounds=guide_b)
    np.testing.assert_allclose(out[0], single)
    np.testing.assert_allclose(out[1], single + 1.0)
    g = GaussianResampling().generate(stack(xb), stack(guide_a), K, np.random.default_rng(0))
    assert g.shape == (2, K, NX)


def test_emulator_errors(members):
    xb, guide_a, guide_b, _ = members
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="guide_backgrounds"):
        MeanShift().generate(xb, guide_a, K, rng)
    with pytest.raises(ValueError, match="must match guide analyses"):
        MeanShift().generate(xb, guide_a, K, rng, guide_backgrounds=guide_b[:3])
    with pytest.raises(ValueError, match="one background per emulated member"):
        MeanShift().generate(xb, guide_a, K + 1, rng, guide_backgrounds=guide_b)
    with pytest.raises(ValueError, match="at least 2 real members"):
        GaussianResampling().generate(xb, guide_a[:1], K, rng)
    with pytest.raises(ValueError, match="state size"):
        GaussianResampling().generate(xb[:, :5], guide_a, K, rng)
    with pytest.raises(ValueError, match="batch of experiments"):
        GaussianResampling().generate(np.stack([xb, xb]), guide_a, K, rng)
    with pytest.raises(RuntimeError, match="never calls generate"):
        NoEmulation().generate(xb, guide_a, K, rng)


def test_a_wrong_output_shape_is_caught_by_the_base_class(members):
    class Wrong(MemberEmulator):
        name = "wrong"

        def _generate(self, backgrounds, guide_analyses, n_members, rng, *, guide_backgrounds, observations):
            return guide_analyses[..., :1, :]

    xb, guide_a, _, _ = members
    with pytest.raises(ValueError, match=r"wrong: emulated members have shape \(1, 40\), expected \(10, 40\)"):
        Wrong().generate(xb, guide_a, K, np.random.default_rng(0))


def test_get_emulator_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown emulator 'magic'; available emulators: none, mean-shift"):
        get_emulator("magic")
    ckpt = tmp_path / "generator.ckpt"
    with pytest.raises(ValueError, match="no checkpoint at .*generator.ckpt"):
        get_emulator(str(ckpt))  # a path selects the learned generator (tests/test_l96_learned_emulator.py)
