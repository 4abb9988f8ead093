"""Bad input to ``hybrid-eda`` gives one clear line on stderr, a non-zero exit and no traceback (``-v`` shows it).

One table of bad inputs, run in-process through :func:`hybrid_eda.cli.main`; the files they need (a file where a
folder should be, recipes that are not YAML, a truncated GRIB file, GRIB files on two grids, broken L96 archives)
are made once, tiny, in :func:`bad`.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hybrid_eda.cli import main
from hybrid_eda.resources import recipes_dir

DATE = "2023-01-01T00:00:00"


def _synthetic(root: Path, grid: str) -> Path:
    out = root / grid.lower()
    argv = ["synthetic", "--grid", grid, "--levels", "2", "--members", "3", "--variables", "t", "lnsp"]
    assert main([*argv, "--start", DATE, "--end", DATE, "--out", str(out)]) == 0
    return out / "grib" / "bg_2023010100.grib"


def _grib_recipe(path: Path, first: Path, second: Path) -> None:
    """The shipped offline member recipe on one date, its two GRIB sources reading ``first`` and ``second``."""
    recipe = yaml.safe_load((recipes_dir() / "eda-n80-ml-local.yaml").read_text())
    recipe["dates"] = {"start": DATE, "end": DATE, "frequency": "6h"}
    (t, lnsp) = recipe["input"]["join"]
    t["grib"].update(path=str(first), param=["t"])
    lnsp["grib"].update(path=str(second))
    path.write_text(yaml.safe_dump(recipe))


def _l96_recipe(path: Path, archive: Path) -> None:
    """The shipped L96 recipe reading ``archive`` on four cycles."""
    recipe = yaml.safe_load((recipes_dir() / "l96-eda.yaml").read_text())
    recipe["input"] = {"lorenz96": {"archive": str(archive), "variables": ["x_bg", "truth"]}}
    recipe["dates"] = {"start": "2000-01-01T00:00:00", "end": "2000-01-01T18:00:00", "frequency": "6h"}
    path.write_text(yaml.safe_dump(recipe))


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """A folder of bad inputs (see the module docstring)."""
    from hybrid_eda.l96.archive import EDAArchive

    d = tmp_path_factory.mktemp("bad")
    (d / "afile").write_text("a file, not a folder\n")
    (d / "afile.zarr").write_text("a file, not a store\n")
    (d / "notyaml.yaml").write_text("just some text\n")
    (d / "bad.yaml").write_text("dates: [1, 2\n")
    (d / "list.yaml").write_text("- dates\n- input\n")
    (d / "exists.zarr").mkdir()
    (d / "exists.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    (d / "folder.zarr" / "keep").mkdir(parents=True)
    o32, n32 = _synthetic(d, "O32"), _synthetic(d, "N32")
    _grib_recipe(d / "mem.yaml", o32, o32)
    _grib_recipe(d / "mixed.yaml", o32, n32)  # t on O32, lnsp on N32: one store, two grids
    truncated = d / "truncated.grib"
    truncated.write_bytes(o32.read_bytes()[: o32.stat().st_size // 2])
    _grib_recipe(d / "truncated.yaml", truncated, truncated)

    t, n_members, n = 4, 3, 8
    archive = EDAArchive(
        truth=np.zeros((t, n)),
        observations=np.zeros((t, n)),
        obs_index=np.arange(n),
        background=np.zeros((t, n_members, n)),
        analysis=np.zeros((t, n_members, n)),
    )
    data = archive.save(d / "good.npz").read_bytes()
    (d / "truncated.npz").write_bytes(data[: len(data) // 2])
    (d / "garbage.npz").write_bytes(b"not an archive " * 20)
    np.savez(d / "nokeys.npz", truth=np.zeros((t, n)))
    for name in ("truncated", "garbage", "nokeys", "missing"):
        _l96_recipe(d / f"l96-{name}.yaml", d / f"{name}.npz")
    return d


L96 = ["--cycles", "20", "--no-progress"]
#: (argv with {d} for the folder of bad inputs, exit status, phrase of the message)
CASES = {
    # output paths, checked before anything runs
    "json-under-a-file": (["l96", "run", *L96, "--json", "{d}/afile/out.json"], 2, "afile is a file, not a folder"),
    "json-is-a-folder": (["l96", "run", *L96, "--json", "{d}"], 2, "it is a folder; give a file name"),
    "plot-under-a-file": (["l96", "run", *L96, "--plot", "{d}/afile/run.png"], 2, "afile is a file, not a folder"),
    "plots-is-a-file": (["l96", "run", *L96, "--plots", "{d}/afile"], 2, "it is a file, not a folder"),
    "archive-under-a-file": (["l96", "run", *L96, "--archive", "{d}/afile/a"], 2, "afile is a file, not a folder"),
    "hybrid-json-under-a-file": (
        ["l96", "hybrid", "--emulator", "gaussian", *L96, "--json", "{d}/afile/h.json"],
        2,
        "afile is a file, not a folder",
    ),
    "table-plot-under-a-file": (["l96", "table", *L96, "--plot", "{d}/afile/t.png"], 2, "afile is a file"),
    "synthetic-out-is-a-file": (["synthetic", "--out", "{d}/afile"], 2, "it is a file, not a folder"),
    "grids-dir-is-a-file": (["grids", "--dir", "{d}/afile"], 2, "it is a file, not a folder"),
    "demo-out-is-a-file": (["demo", "--out", "{d}/afile"], 2, "it is a file, not a folder"),
    # options
    "threads-zero": (["--threads", "0", "l96", "presets"], 2, "--threads: expected a positive integer, got 0"),
    "threads-negative": (["--threads", "-2", "l96", "presets"], 2, "expected a positive integer, got -2"),
    "threads-not-a-number": (["--threads", "two", "l96", "presets"], 2, "expected a positive integer, got 'two'"),
    "members-too-many": (["l96", "run", *L96, "--members", "100000000"], 2, "memory"),
    "inflation-inf": (["l96", "run", *L96, "--inflation", "inf"], 2, "inflation"),
    # store recipes
    "recipe-not-yaml-mapping": (["store", "create", "{d}/notyaml.yaml", "{d}/s1.zarr"], 2, "a YAML str, not a mapping"),
    "recipe-bad-yaml": (["store", "create", "{d}/bad.yaml", "{d}/s2.zarr"], 2, "not valid YAML at line 2"),
    "recipe-a-list": (["store", "create", "{d}/list.yaml", "{d}/s3.zarr"], 2, "a YAML list, not a mapping"),
    "recipe-missing": (["store", "create", "{d}/missing.yaml", "{d}/s4.zarr"], 2, "missing.yaml does not exist"),
    "recipe-a-folder": (["store", "create", "{d}/o32", "{d}/s5.zarr"], 2, "is a folder, not a file"),
    "grib-truncated": (["store", "create", "{d}/truncated.yaml", "{d}/s6.zarr"], 2, "truncated.grib (it is truncated"),
    "grib-two-grids": (
        ["store", "create", "{d}/mixed.yaml", "{d}/s7.zarr"],
        2,
        "has 6114 points (N32) but the store's grid has 5248 (O32",
    ),
    # store paths: nothing there is replaced unless asked, and only a store
    "store-exists": (["store", "create", "{d}/mem.yaml", "{d}/exists.zarr"], 2, "already exists; pass --overwrite"),
    "store-is-a-file": (["store", "create", "{d}/mem.yaml", "{d}/afile.zarr"], 2, "is a file, not a zarr store"),
    "overwrite-a-folder": (
        ["store", "create", "{d}/mem.yaml", "{d}/folder.zarr", "--overwrite"],
        2,
        "not a zarr store; --overwrite replaces only a store",
    ),
    "store-not-zarr": (["store", "create", "{d}/mem.yaml", "{d}/store"], 2, "must end in .zarr"),
    "store-load-missing": (["store", "load", "{d}/missing.zarr"], 2, "no store at"),
    # the lorenz96 source's archive
    "archive-garbage": (["store", "create", "{d}/l96-garbage.yaml", "{d}/a1.zarr"], 2, "not an .npz (zip) file"),
    "archive-truncated": (["store", "create", "{d}/l96-truncated.yaml", "{d}/a2.zarr"], 2, "cannot read the EDA"),
    "archive-keys-missing": (["store", "create", "{d}/l96-nokeys.yaml", "{d}/a3.zarr"], 2, "it lacks ['analysis'"),
    "archive-missing": (["store", "create", "{d}/l96-missing.yaml", "{d}/a4.zarr"], 2, "no EDA archive at"),
}


#: Log records (ours: "INFO ...", anemoi's: "2026-01-01 00:00:00,000 - MainProcess - INFO - ...") of the work done
#: before an error are not part of the error.
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d [\d:,]+ - \S+ - )?(DEBUG|INFO|WARNING)\b")


@pytest.fixture(autouse=True)
def _root_handlers():
    """Undo the logging handlers a run installs (anemoi-datasets calls ``logging.basicConfig`` when a source module
    is imported), so that no handler keeps writing to the stderr of an earlier test."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    yield
    root.handlers[:] = handlers


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)``'s exit status (argparse exits, the rest returns) and stderr."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "code", "phrase"), list(CASES.values()), ids=list(CASES))
def test_bad_input_gives_one_line(argv, code, phrase, bad, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(bad / "home"))  # anemoi's config files stay out of the real home
    monkeypatch.chdir(bad)
    before = sorted(p.relative_to(bad) for p in bad.rglob("*") if "s7.zarr" not in p.parts)
    status, err = _run([a.format(d=bad) for a in argv], capsys)
    lines = [line for line in err.splitlines() if line.strip() and not _LOG_LINE.match(line)]
    assert status == code, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("hybrid-eda") and ": error: " in lines[0], err
    assert phrase in lines[0]
    after = sorted(p.relative_to(bad) for p in bad.rglob("*") if "s7.zarr" not in p.parts)
    assert set(before) <= set(after), f"lost {set(before) - set(after)}"  # nothing the user had is removed


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    status, err = _run(["l96", "run", *L96, "--json", str(locked / "out.json")], capsys)
    assert status == 2 and "no permission to write in" in err and err.count("\n") == 1


def test_verbose_shows_the_traceback(bad):
    argv = [sys.executable, "-m", "hybrid_eda.cli", "-v", "store", "create", str(bad / "list.yaml"), "x.zarr"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=bad)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "UserInputError: recipe" in done.stderr
