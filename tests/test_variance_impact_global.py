"""The variance-impact experiment on the synthetic global EDA: the linear analysis with B = D C D against a dense
BLUE, its expected error variance against diag(B - B H^T S^-1 H B), a seeded short run (rows ordered as the
theory says), the emulator plumbing, ``hybrid-eda evaluate variance-impact`` and its errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hybrid_eda.cli import main
from hybrid_eda.evaluation.data import config_from_manifest
from hybrid_eda.evaluation.variance_impact import LevelAnalysis, run_variance_impact
from hybrid_eda.evaluation.variance_impact_scores import impact_summary
from hybrid_eda.synthetic import ObservationConfig, SyntheticEDAConfig, write_synthetic_eda
from hybrid_eda.synthetic.analysis import observation_correlations, unit_vectors
from hybrid_eda.synthetic.fields import SphericalTransform, correlation_function, gaussian_spectrum, random_alm
from hybrid_eda.synthetic.grids import make_grid

TINY = dict(grid="O16", levels=2, variables=("t", "q"), start="2023-01-01T00", frequency_hours=6,
            observations=ObservationConfig(count=200))  # fmt: skip


# ------------------------------------------------------------------------------------------------ the analysis
def _problem(seed: int = 0, p: int = 40):
    """O4 (208 points), a 1500 km Gaussian correlation, ``p`` observed points, smooth positive std."""
    grid = make_grid("O4")
    transform = SphericalTransform(grid)
    spectrum = gaussian_spectrum(transform.lmax, 1500.0)
    rng = np.random.default_rng(seed)
    obs_index = np.sort(rng.choice(grid.npoints, p, replace=False))
    points = unit_vectors(grid.latitudes, grid.longitudes)  # [G, 3]
    sigma = 1.0 + 0.5 * np.sin(np.radians(grid.latitudes)) ** 2 + 0.2 * np.cos(np.radians(grid.longitudes))  # [G]
    obs_std = 0.6 + 0.2 * rng.random(p)  # [p]
    correlations = observation_correlations(spectrum, points[obs_index])
    analysis = LevelAnalysis(transform, spectrum, correlations, obs_index, obs_std)
    dense_c = correlation_function(spectrum, np.clip(points @ points.T, -1.0, 1.0))  # [G, G] Legendre series
    return analysis, sigma, dense_c, rng


def _dense_update(dense_c, std, obs_index, obs_std, background_errors, obs_error):
    """``e_b + B H^T (H B H^T + R)^-1 (eps_o - H e_b)`` with dense matrices, ``B = D C D``."""
    b = std[:, None] * dense_c * std[None, :]
    h = np.eye(b.shape[0])[obs_index]  # [p, G]
    s = h @ b @ h.T + np.diag(obs_std**2)
    gain = b @ h.T @ np.linalg.inv(s)  # [G, p]
    innovations = obs_error - background_errors @ h.T  # [K, p]
    return background_errors + innovations @ gain.T, b, h, s


@pytest.mark.parametrize("wrong_std", [False, True])
def test_the_analysis_is_the_dense_linear_update(wrong_std):
    analysis, sigma, dense_c, rng = _problem()
    std = sigma * (1.0 + 0.3 * rng.standard_normal(sigma.size)).clip(0.3) if wrong_std else sigma  # B_s or B
    errors_b = rng.standard_normal((3, sigma.size)) * sigma  # [K, G]
    obs_error = analysis.obs_std * rng.standard_normal(analysis.obs_index.size)  # [p]
    expected, *_ = _dense_update(dense_c, std, analysis.obs_index, analysis.obs_std, errors_b, obs_error)
    got = analysis.errors(std, errors_b, obs_error)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 * np.abs(expected).max())
    per_draw = analysis.errors(std, errors_b, np.stack([obs_error] * 3))  # [K, p] observation errors
    np.testing.assert_allclose(per_draw, got, rtol=0, atol=1e-12)


def test_the_expected_analysis_error_variance_is_diag_of_b_minus_bht_s_inv_hb():
    analysis, sigma, dense_c, rng = _problem(seed=1)
    k = 6000
    errors_b = sigma * analysis.transform.synthesis(random_alm(rng, analysis.spectrum, analysis.transform, (k,)))
    obs_error = analysis.obs_std * rng.standard_normal((k, analysis.obs_index.size))  # [K, p]: fresh each draw
    errors_a = analysis.errors(sigma, errors_b, obs_error)  # [K, G]
    _, b, h, s = _dense_update(dense_c, sigma, analysis.obs_index, analysis.obs_std, errors_b[:1], obs_error[:1])
    expected = np.diag(b - b @ h.T @ np.linalg.solve(s, h @ b))  # [G]
    assert expected.min() < 0.7 * sigma[analysis.obs_index].min() ** 2  # the observations do reduce the error
    mc = np.mean(errors_a**2, axis=0)  # [G]
    sampling = expected * np.sqrt(2.0 / k)  # std of a Gaussian sample variance
    assert np.max(np.abs(mc - expected) / sampling) < 5.0
    assert abs(mc.mean() / expected.mean() - 1.0) < 0.01
    # a wrong std gives a larger expected error (the BLUE is optimal) and Monte Carlo sees it
    worse = analysis.errors(sigma * np.where(np.arange(sigma.size) % 2, 2.0, 0.5), errors_b, obs_error)
    assert np.mean(worse**2) > 1.02 * np.mean(errors_a**2)


def test_a_std_that_is_not_positive_is_refused():
    analysis, sigma, _, _ = _problem()
    with pytest.raises(ValueError, match="positive and finite"):
        analysis.errors(np.where(np.arange(sigma.size) == 3, 0.0, sigma), sigma[None], np.zeros(40))


# ------------------------------------------------------------------------------------------------ short runs
@pytest.fixture(scope="module")
def eda(tmp_path_factory) -> Path:
    """O16, 2 levels, t and q, 30 members, 4 dates (written once: the CLI reads folders)."""
    root = tmp_path_factory.mktemp("variance_impact") / "eda"
    write_synthetic_eda(SyntheticEDAConfig(members=30, seed=2, end="2023-01-01T18", **TINY), root)
    return root


def _config(eda: Path) -> SyntheticEDAConfig:
    return config_from_manifest(json.loads((eda / "manifest.json").read_text()))


def test_the_observations_are_the_edas_own(eda):
    from hybrid_eda.synthetic.eda import SyntheticEDA

    generator = SyntheticEDA(_config(eda))
    state = next(generator.states())
    stored = np.load(eda / "truth" / "obs_2023010100.npz")
    blocks = list(generator.fields(state))
    np.testing.assert_array_equal(stored["obs_index"], state.obs_index)
    assert list(stored["variables"]) == [b.name for b in blocks]
    np.testing.assert_array_equal(stored["values"], np.stack([b.observations for b in blocks]))


def test_a_seeded_short_run_orders_the_rows(eda):
    config = _config(eda)
    result = run_variance_impact(config, m=5, draws=6, seed=3)
    assert result.sources == ("sigma_b", "ensemble_N", "raw_M") and result.n == 30
    assert result.variables == ("t_1", "t_2", "q_1", "q_2") and result.groups == (1, 2, 1, 2)
    assert result.analysis_mse.shape == (4, 3, 4) and result.background_mse.shape == (4, 4)
    summary = impact_summary(result)
    rms = summary["overall"]["rms"]
    assert rms["sigma_b"] < rms["ensemble_N"] < rms["raw_M"] < 0.95 * rms["background"]
    assert rms["background"] == pytest.approx(1.0, abs=0.05)  # control backgrounds drawn with sigma_b
    change = summary["overall"]["change"]
    assert change["raw_M"]["significant"] and change["raw_M"]["change"] > 0.004
    assert change["sigma_b"]["change"] < 0
    for name in ("t", "q"):
        group = summary["variable"][name]["rms"]
        assert group["sigma_b"] <= group["ensemble_N"] * 1.001 and group["ensemble_N"] < group["raw_M"]
    assert summary["std_bias"]["raw_M"] < -0.02  # s_5 is biased low (c4(5) = 0.94)
    error = summary["std_relative_rms_error"]  # ~ 1 / sqrt(2 (n - 1)) for a sample std of n members
    assert error["sigma_b"] == 0 and 0.1 < error["ensemble_N"] < 0.16 < 0.3 < error["raw_M"] < 0.42
    again = run_variance_impact(config, m=5, draws=6, seed=3)
    np.testing.assert_array_equal(again.analysis_mse, result.analysis_mse)  # seeded
    other = run_variance_impact(config, m=5, draws=6, seed=4, dates=[0, 2])
    assert other.dates == result.dates[::2]
    assert not np.allclose(other.background_mse, result.background_mse[::2])  # other control backgrounds
    np.testing.assert_allclose(other.sigma_b_ms, result.sigma_b_ms[::2])  # the same EDA


class _Emulator:
    """A stand-in emulator: log-normal at ``log(scale s_M)`` with a tiny width, reading the fields in reverse."""

    family = "lognormal"
    variables = ("q_2", "q_1", "t_2", "t_1")

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, members: np.ndarray) -> np.ndarray:
        mu = np.log(self.scale * members.std(axis=1, ddof=1))  # [date, grid, field]
        return np.stack([mu, np.full_like(mu, 1e-4)], axis=1)  # [date, 2, grid, field]


def test_the_emulator_rows_see_the_first_m_members(eda):
    result = run_variance_impact(_config(eda), n=20, m=5, predictor=_Emulator(), draws=3, dates=[0, 1])
    assert result.sources[3:] == ("emulator", "emulator_median") and result.n == 20
    raw, emulator, median = (result.analysis_mse[:, result.sources.index(s)] for s in result.sources[2:])
    np.testing.assert_allclose(emulator, raw, rtol=1e-5)  # exp(log s_M + 1e-8 / 2) = s_M
    np.testing.assert_allclose(median, raw, rtol=1e-5)
    inflated = run_variance_impact(_config(eda), n=20, m=5, predictor=_Emulator(1.3), draws=3, dates=[0, 1])
    assert not np.allclose(inflated.analysis_mse[:, 3], raw)


# ------------------------------------------------------------------------------------------------ the command
def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["evaluate", "variance-impact", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stand_in_checkpoint(monkeypatch, tmp_path):
    """``read_variance_checkpoint`` returning the stand-in emulator on ``grid`` (set ``holder["grid"]``)."""
    from hybrid_eda.inference import variance_checkpoint

    holder = {"grid": "O16", "predictor": _Emulator(1.1)}

    def read(path):
        return variance_checkpoint.VarianceCheckpoint(path=Path(path), predictor=holder["predictor"], fields=(),
                                                      grid=make_grid(holder["grid"]), training_members=5,
                                                      run_id=None)  # fmt: skip

    monkeypatch.setattr(variance_checkpoint, "read_variance_checkpoint", read)
    (tmp_path / "model.ckpt").write_bytes(b"")
    return holder, tmp_path / "model.ckpt"


def test_the_command_writes_the_summary_and_the_figure(eda, stand_in_checkpoint, tmp_path, capsys):
    _, checkpoint = stand_in_checkpoint
    code, out, err = _run(capsys, checkpoint, "--test", eda, "--draws", 3, "--test-dates",
                          "2023-01-01T00/2023-01-01T12", "--out", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["dates"] == ["2023-01-01T00:00:00", "2023-01-01T06:00:00", "2023-01-01T12:00:00"]
    assert summary["settings"]["n"] == 30 and summary["settings"]["seen_members"] == [1, 2, 3, 4, 5]
    assert set(summary["variable"]) == {"t", "q"} and set(summary["level_group"]) == {"1", "2"}
    assert set(summary["per_field"]) == {"t_1", "t_2", "q_1", "q_2"}
    assert set(summary["overall"]["change"]) == {"sigma_b", "raw_M", "emulator", "emulator_median"}
    verdict = summary["verdict"]
    assert {"emulator_change", "emulator_within_tolerance", "emulator_below_raw_M", "raw_M_change"} <= set(verdict)
    assert "normalised RMS analysis error" in out and "emulator_median" in out
    assert (tmp_path / "out" / "impact.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _error(capsys, *argv) -> str:
    code, _, err = _run(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1  # one line
    return err


def _other_model_checkpoint(path: Path) -> Path:
    metadata = {"config": {"model": {"model": {"_target_": "anemoi.models.models.AnemoiModelEncProcDec"}}}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/anemoi-metadata/anemoi.json", json.dumps(metadata))
    return path


def test_clear_errors(eda, tmp_path, capsys):
    out = ["--out", tmp_path / "out"]
    assert "the synthetic EDA has 30" in _error(capsys, "--test", eda, "--reference-members", 50, *out)
    assert "must be fewer than the N = 5" in _error(capsys, "--test", eda, "--reference-members", 5, *out)
    assert "use M >= 2" in _error(capsys, "--test", eda, "--members", 1, *out)
    assert "at least one control background" in _error(capsys, "--test", eda, "--draws", 0, *out)
    (tmp_path / "store.zarr").mkdir()
    assert "needs a synthetic EDA folder" in _error(capsys, "--test", tmp_path / "store.zarr", *out)
    assert "does not exist" in _error(capsys, "--test", tmp_path / "missing", *out)
    err = _error(capsys, "--test", eda, "--test-dates", "2023-01-01T00/2023-01-01T06", *out)
    assert "at least three test dates" in err
    (tmp_path / "junk.ckpt").write_text("not a zip")
    assert "not an anemoi inference checkpoint" in _error(capsys, tmp_path / "junk.ckpt", "--test", eda, *out)
    other = _other_model_checkpoint(tmp_path / "l96.ckpt")
    assert "not of the variance emulator" in _error(capsys, other, "--test", eda, *out)
    assert "model.ckpt does not exist" in _error(capsys, tmp_path / "model.ckpt", "--test", eda, *out)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_checkpoint_of_another_grid_or_other_fields_is_refused(eda, stand_in_checkpoint, tmp_path, capsys):
    holder, checkpoint = stand_in_checkpoint
    out = ["--draws", 1, "--out", tmp_path / "out"]
    holder["grid"] = "O32"
    err = _error(capsys, checkpoint, "--test", eda, *out)
    assert "trained on O32 (5248 points) and the EDA is on O16 (1600 points)" in err
    holder["grid"], holder["predictor"] = "O16", _Emulator()
    holder["predictor"].variables = ("t_1", "t_2")
    assert "predicts 2 fields and the data has 4" in _error(capsys, checkpoint, "--test", eda, *out)
