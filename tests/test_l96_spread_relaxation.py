"""Relaxation to prior spread (RTPS): the closed form, the cycle setting and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_eda.l96.config import ExperimentConfig
from hybrid_eda.l96.cycle import _AnalysisStep
from hybrid_eda.l96.experiment import run_experiment
from hybrid_eda.l96.spread_relaxation import relax_to_prior_spread


def _ensembles(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    background = 3.0 + 2.0 * rng.standard_normal((3, 8, 5))  # [B, N, n]
    analysis = 1.0 + 0.5 * rng.standard_normal((3, 8, 5))
    return background, analysis


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0])
def test_spread_moves_alpha_of_the_way_to_the_background_and_the_mean_stays(alpha: float) -> None:
    background, analysis = _ensembles()
    out = relax_to_prior_spread(background, analysis, alpha)
    sigma_a, sigma_b = analysis.std(axis=1, ddof=1), background.std(axis=1, ddof=1)
    np.testing.assert_allclose(out.std(axis=1, ddof=1), sigma_a + alpha * (sigma_b - sigma_a), rtol=1e-12)
    np.testing.assert_allclose(out.mean(axis=1), analysis.mean(axis=1), atol=1e-12)
    # per variable a pure rescaling of the anomalies: correlations between members unchanged
    a, o = analysis - analysis.mean(1, keepdims=True), out - out.mean(1, keepdims=True)
    np.testing.assert_allclose(o / a, np.broadcast_to((o / a)[:, :1], o.shape), rtol=1e-10)


def test_zero_alpha_one_member_and_no_spread_leave_the_members_alone() -> None:
    background, analysis = _ensembles()
    assert relax_to_prior_spread(background, analysis, 0.0) is analysis
    np.testing.assert_array_equal(relax_to_prior_spread(background[:, :1], analysis[:, :1], 0.5), analysis[:, :1])
    flat = np.broadcast_to(analysis[:, :1], analysis.shape).copy()
    np.testing.assert_array_equal(relax_to_prior_spread(background, flat, 0.5), flat)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_zero_one_is_refused(alpha: float) -> None:
    background, analysis = _ensembles()
    with pytest.raises(ValueError, match="between 0 .off. and 1"):
        relax_to_prior_spread(background, analysis, alpha)
    with pytest.raises(ValueError, match="rtps"):  # NaN is refused by the finite-number check, naming --rtps too
        ExperimentConfig.from_preset("pan2026", method="enkf", rtps=alpha)


def test_shapes_must_agree() -> None:
    background, analysis = _ensembles()
    with pytest.raises(ValueError, match="same"):
        relax_to_prior_spread(background[:, :4], analysis, 0.3)


def test_deterministic_methods_run_without_it() -> None:
    assert ExperimentConfig.from_preset("pan2026", method="3dvar", rtps=0.5).rtps == 0.0
    assert ExperimentConfig.from_preset("pan2026", method="enkf").rtps == 0.0


class _Fixed:
    """A method returning fixed analyses (the step's contract: ``analyse(xb, y, rng) -> [B, N, n]``)."""

    def __init__(self, analysis: np.ndarray) -> None:
        self.analysis = analysis

    def analyse(self, xb, y, rng, n_analyses=None):  # noqa: ANN001, ANN201
        return self.analysis


def test_the_cycle_step_relaxes_the_whole_analysis() -> None:
    background, analysis = _ensembles(1)
    step = _AnalysisStep(_Fixed(analysis), None, analysis.shape[1], rtps=0.3)
    np.testing.assert_array_equal(step(background, None, None, None), relax_to_prior_spread(background, analysis, 0.3))


def test_seeded_enkf_cycle_with_rtps_is_reproducible_and_spreads_more() -> None:
    kw = dict(method="enkf", members=20, inflation=1.2, cycles=60, spinup=10, batch=2, seed=5)
    plain = run_experiment(ExperimentConfig.from_preset("pan2026", **kw)).output.experiments
    relaxed = [run_experiment(ExperimentConfig.from_preset("pan2026", rtps=0.3, **kw)).output.experiments for _ in "ab"]
    assert [e["analysis_rmse"] for e in relaxed[0]] == [e["analysis_rmse"] for e in relaxed[1]]
    for p, r in zip(plain, relaxed[0], strict=True):
        assert r["analysis_spread"] > p["analysis_spread"]
