"""``hybrid-eda l96 ...`` end to end through the top-level ``hybrid_eda.cli.main``, on small settings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hybrid_eda.cli import main
from hybrid_eda.l96.archive import EDAArchive
from l96_summary import SUMMARY_KEYS

PNG = b"\x89PNG\r\n\x1a\n"


def _fails(argv: list[str], capsys) -> tuple[int, str]:
    """Run a command that must fail; return its exit status and stderr (``main`` returns it, argparse exits)."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


def test_run_writes_json_plots_and_archive(tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = ["l96", "run", "--preset", "sakov2008", "--members", "20", "--inflation", "1.02", "--cycles", "600"]
    argv += ["--seed", "2", "--spinup", "100", "--json", str(out), "--no-progress"]
    argv += ["--plot", str(tmp_path / "run.png"), "--plots", str(tmp_path / "plots"), "--archive", str(tmp_path / "a")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "analysis RMSE" in printed and "expected median 0.183 [0.179, 1.453]" in printed  # the 32-seed distribution
    summary = json.loads(out.read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert (summary["cycles"], summary["spinup"], summary["scored_cycles"]) == (600, 100, 500)
    assert 0.15 < summary["analysis_rmse"] < 0.25
    assert summary["settings"]["seed"] == 2 and summary["settings"]["preset"] == "sakov2008"
    assert len(summary["rank_histogram"]) == 21 and sum(summary["rank_histogram"]) == 500 * 40
    for png in (tmp_path / "run.png", tmp_path / "plots" / "timeseries.png", tmp_path / "plots" / "rank_histogram.png"):
        assert png.read_bytes()[:8] == PNG
    archive = EDAArchive.load(tmp_path / "a.npz")
    assert archive.analysis.shape == (600, 20, 40)
    # The archive and the JSON describe the same run.
    rmse = np.sqrt(((archive.analysis.mean(1) - archive.truth) ** 2).mean(1))[100:].mean()
    assert rmse == pytest.approx(summary["analysis_rmse"], rel=1e-10)


def test_run_options_obs_every_method_and_batch(tmp_path):
    out = tmp_path / "b.json"
    argv = ["l96", "run", "--cycles", "300", "--obs-every", "2", "--method", "enkf", "--members", "30"]
    assert main([*argv, "--inflation", "1.1", "--batch", "2", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["settings"]["obs_every"] == 2 and summary["method"] == "enkf" and summary["batch"] == 2
    assert len(summary["experiments"]) == 2
    assert summary["analysis_rmse"] == pytest.approx(np.mean([e["analysis_rmse"] for e in summary["experiments"]]))
    assert summary["expected_analysis_rmse"] is None  # not the preset's observation network


def test_run_4dvar_options(tmp_path):
    out = tmp_path / "v.json"
    argv = ["l96", "run", "--method", "4dvar", "--window", "2", "--b-mode", "static", "--members", "1"]
    assert main([*argv, "--cycles", "30", "--spinup", "5", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["settings"]["window"] == 2 and summary["settings"]["b_mode"] == "static"
    assert summary["analysis_rmse"] < 1.0


def test_hybrid_json_has_full_and_hybrid(tmp_path, capsys):
    out = tmp_path / "h.json"
    argv = ["l96", "hybrid", "--n-real", "10", "--emulator", "mean-shift", "--cycles", "300", "--seeds", "3"]
    assert main([*argv, "--json", str(out), "--plot", str(tmp_path / "h.png")]) == 0
    data = json.loads(out.read_text())
    assert SUMMARY_KEYS <= set(data["full"]) and SUMMARY_KEYS <= set(data["hybrid"])
    assert data["emulator"] == "mean-shift" and data["kind"] == "emulator" and data["n_real"] == 10
    assert data["seeds"] == [0, 1, 2] and data["hybrid"]["batch"] == 3
    assert data["hybrid"]["settings"]["preset"] == "pan2026"  # the seed testbed is the default
    assert data["full"]["emulator"] is None and data["hybrid"]["emulator"] == "mean-shift"
    for name in ("full", "hybrid"):
        dist = data[name]["distribution"]
        assert len(dist["values"]) == 3 and dist["median"] == pytest.approx(sorted(dist["values"])[1])
        assert {"low", "high", "lost_fraction", "lost_track_rmse"} <= set(dist)
    ratio = data["hybrid"]["distribution"]["median"] / data["full"]["distribution"]["median"]
    assert data["median_analysis_rmse_ratio"] == pytest.approx(ratio)
    timing = data["timing"]
    assert (timing["full_analyses_per_cycle"], timing["hybrid_analyses_per_cycle"]) == (20, 10)
    assert timing["full_analysis_seconds"] > 0 and timing["hybrid_analysis_seconds"] > 0
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG
    printed = capsys.readouterr().out
    assert "hybrid / full analysis RMSE (medians)" in printed and "lost" in printed and "analysis time" in printed


@pytest.mark.parametrize("argv", [["l96", "table"], ["l96", "hybrid", "--emulator", "all"]])
def test_table_prints_every_emulator(argv, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main([*argv, "--cycles", "200", "--seeds", "2", "--inflations", "1.02,1.1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("full", "none", "mean-shift", "rescaled-anomalies", "gaussian", "oracle"):
        assert f"\n{name} " in printed
    assert "upper bound" in printed and "median" in printed and "lost" in printed
    table = json.loads(out.read_text())
    assert table["inflation_grid"] == [1.02, 1.1] and table["seeds"] == 2
    rows = {r["emulator"]: r for r in table["rows"]}
    assert rows["oracle"]["kind"] == "upper bound" and rows["full"]["kind"] == "full EDA"
    assert set(rows["gaussian"]["by_inflation"]) == {"1.02", "1.1"}
    for row in rows.values():
        ranks = {float(k): (v["lost_fraction"], v["median"]) for k, v in row["by_inflation"].items()}
        assert row["best_inflation"] == min(ranks, key=lambda k: (ranks[k], k))
        assert 0.0 <= row["lost_fraction"] <= 1.0


def test_presets_command_lists_sources_and_scores(capsys):
    assert main(["l96", "presets"]) == 0
    printed = capsys.readouterr().out
    assert "sakov2008" in printed and "pan2026" in printed and "~0.95" in printed and "~0.41" in printed


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["l96", "run", "--members", "1"], 2, "at least 2 members"),
        (["l96", "run", "--inflation", "0.9"], 2, "inflation must be >= 1"),
        (["l96", "run", "--preset", "nope"], 2, "available presets: pan2026, pan2026-marginal, sakov2008"),
        (["l96", "run", "--cycles", "50", "--dt", "0.3"], 1, "truth run became non-finite"),
        (["l96", "run", "--cycles", "100", "--init-spread", "50", "--obs-every", "40"], 1, "filter diverged"),
        (["l96", "hybrid", "--emulator", "gaussian", "--n-real", "20"], 2, "--n-real must be between 1 and"),
        (["l96", "hybrid", "--emulator", "magic"], 2, "unknown emulator 'magic'"),
        (["l96", "hybrid", "--emulator", "runs/gen.ckpt"], 2, "no checkpoint at"),
        (["l96", "table", "--n-real", "25"], 2, "--n-real must be between 1 and --members - 1 = 19"),
        (["l96", "run", "--batch", "2", "--archive", "x"], 2, "single experiment"),
    ],
)
def test_errors_are_one_line_without_traceback(argv, code, message, capsys):
    status, err = _fails([*argv, "--no-progress"], capsys)
    assert status == code
    assert message in err and "Traceback" not in err
    assert err.startswith("hybrid-eda l96: error: ") and err.count("\n") == 1


def test_console_script_runs_as_a_subprocess(tmp_path):
    out = tmp_path / "s.json"
    argv = [sys.executable, "-m", "hybrid_eda.l96.cli", "l96", "run", "--cycles", "200", "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert SUMMARY_KEYS <= set(json.loads(out.read_text()))
    bad = subprocess.run([*argv[:-2], "--members", "1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "at least 2 members" in bad.stderr


@pytest.mark.slow
def test_demo_writes_json_and_pngs(tmp_path):
    from hybrid_eda.l96.cli import demo

    result = demo(tmp_path)
    names = {p.split("/")[-1] for p in result["files"]}
    assert names == {"l96_run.json", "l96_run.png", "l96_table.json", "l96_table.png"}
    assert 0.15 < result["run"]["analysis_rmse"] < 0.22
    rows = {r["emulator"]: r for r in result["table"]["rows"]}
    median = {name: r["median_analysis_rmse"] for name, r in rows.items()}
    assert median["full"] < median["gaussian"] < median["none"]
    assert rows["full"]["lost_fraction"] == 0.0 and rows["none"]["lost_fraction"] == 1.0
    assert rows["oracle"]["kind"] == "upper bound" and median["oracle"] < median["gaussian"]
