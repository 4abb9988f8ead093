"""Configuration checks, overrides, and the ``hybrid-eda synthetic`` command."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from hybrid_eda.synthetic import SyntheticEDAConfig
from hybrid_eda.synthetic.config import config_with_overrides


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": "T639"}, "unknown grid 'T639'; supported grids: octahedral O<n>"),
        ({"grid": "N81"}, "N80, N96"),
        ({"members": 1}, "members must be >= 2"),
        ({"levels": 0}, "levels must be >= 1"),
        ({"start": "2023-01-02T00", "end": "2023-01-01T00"}, "is before start"),
        ({"start": "yesterday"}, "is not an ISO date"),
        ({"frequency_hours": 0}, "frequency_hours must be >= 1"),
        ({"variables": ("t", "u")}, "variables must be distinct names among vo, d, t, lnsp, q, o3"),
        ({"variables": ("t", "t")}, "variables must be distinct"),
        ({"bits_per_value": 4}, "bits_per_value must be in 8..32"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_input_is_explained(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SyntheticEDAConfig(**kwargs)


def test_too_many_observations_for_the_grid():
    with pytest.raises(ValueError, match="more than half the 544 points of O8; use at most 272"):
        SyntheticEDAConfig(grid="O8")  # default 1200 observations


def test_generate_refuses_what_does_not_fit_in_memory():
    from hybrid_eda.synthetic import generate

    config = SyntheticEDAConfig(grid="N80", levels=137, members=50)
    with pytest.raises(ValueError, match=r"would hold 18\.6 GiB in memory .* use write_synthetic_eda"):
        generate(config)


def test_dates_and_strings():
    config = SyntheticEDAConfig(grid="o32", start="2023-01-01T00", end="2023-01-02T00", frequency_hours=12)
    assert config.grid == "O32"
    assert config.dates == (datetime(2023, 1, 1, 0), datetime(2023, 1, 1, 12), datetime(2023, 1, 2, 0))
    assert config.date_index("2023-01-01T12") == 1
    with pytest.raises(ValueError, match="not one of the EDA dates"):
        config.date_index("2023-01-01T06")
    assert json.loads(json.dumps(config.to_dict()))["start"] == "2023-01-01T00:00:00"


def test_overrides():
    config = config_with_overrides(
        SyntheticEDAConfig(), ["errors.front_factor=4", "observations.count=500", "flow.rossby_waves=false"]
    )
    assert config.errors.front_factor == 4.0 and config.observations.count == 500
    assert config.flow.rossby_waves is False
    with pytest.raises(ValueError, match="unknown key 'errors.front'; valid keys of errors: length_scale_km"):
        config_with_overrides(config, ["errors.front=1"])
    with pytest.raises(ValueError, match="SECTION.KEY=VALUE"):
        config_with_overrides(config, ["front_factor=1"])
    with pytest.raises(ValueError, match="errors.front_factor must be positive"):
        config_with_overrides(config, ["errors.front_factor=0"])


def test_command_writes_an_eda(tmp_path, capsys):
    from hybrid_eda.cli import main

    out = tmp_path / "eda"
    argv = ["synthetic", "--grid", "O32", "--levels", "2", "--members", "2", "--start", "2023-01-01T00",
            "--end", "2023-01-01T06", "--seed", "1", "--variables", "t", "lnsp", "--set", "observations.count=100",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "O32 x 2 levels x 2 variables x 2 members x 2 dates" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["observations"]["count"] == 100 and manifest["seed"] == 1
    assert (out / "grib" / "bg_2023010106.grib").stat().st_size > 0
    # a second run into the same folder is refused with a clear message (exit status 2), unless --overwrite
    assert main(argv) == 2
    assert "already holds a synthetic EDA" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
