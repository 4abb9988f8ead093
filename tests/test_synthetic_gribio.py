"""GRIB written like MARS retrievals: keys read back with earthkit-data, values within packing precision."""

from __future__ import annotations

import json

import earthkit.data as ekd
import numpy as np
import pytest

from hybrid_eda.synthetic import ObservationConfig, SyntheticEDAConfig, generate, write_synthetic_eda
from hybrid_eda.synthetic.gribio import packing_tolerance


def _config(grid: str) -> SyntheticEDAConfig:
    return SyntheticEDAConfig(
        grid=grid, levels=2, members=3, start="2023-01-01T00", end="2023-01-01T06", seed=3,
        variables=("t", "lnsp", "q"), observations=ObservationConfig(count=200),
    )  # fmt: skip


@pytest.fixture(scope="module", params=["O32", "N32"])
def written(request, tmp_path_factory):
    config = _config(request.param)
    files = write_synthetic_eda(config, tmp_path_factory.mktemp(request.param))
    return config, files


def test_layout_and_manifest(written):
    config, files = written
    assert [p.name for p in files.backgrounds] == ["bg_2023010100.grib", "bg_2023010106.grib"]
    assert [p.relative_to(files.root).as_posix() for p in files.analyses] == [
        "grib/an_2023010100.grib", "grib/an_2023010106.grib"]  # fmt: skip
    assert files.truth[1].name == "truth_2023010106.grib" and files.sigma_b[0].name == "sigma_b_2023010100.grib"
    assert not list(files.root.rglob("*.part"))
    manifest = json.loads(files.manifest.read_text())
    assert manifest["seed"] == 3 and manifest["members"] == 3 and manifest["levels"] == [1, 2]
    assert manifest["grid"]["name"] == config.grid and manifest["grid"]["npoints"] == config.npoints
    assert manifest["dates"] == ["2023-01-01T00:00:00", "2023-01-01T06:00:00"]
    assert {v["param"]: v["levelist"] for v in manifest["variables"]} == {"t": [1, 2], "lnsp": [1], "q": [1, 2]}
    assert manifest["config"]["errors"]["front_factor"] == config.errors.front_factor
    assert all((files.root / name).exists() for names in manifest["files"].values() for name in names)


def test_mars_keys_read_back(written):
    config, files = written
    fields = ekd.from_source("file", str(files.backgrounds[1]))
    assert len(fields) == 5 * 3  # (t, q on 2 levels + lnsp on 1) x 3 members
    keys = ["shortName", "levtype", "levelist", "number", "type", "stream", "class", "expver", "date", "time", "step"]
    rows = {tuple(f.metadata(k) for k in keys) for f in fields}
    expected = {
        (param, "ml", level, number, "fc", "elda", "od", "0001", 20230101, 0, 6)
        for param, levels in (("t", (1, 2)), ("lnsp", (1,)), ("q", (1, 2)))
        for level in levels
        for number in (1, 2, 3)
    }
    assert rows == expected
    assert {f.metadata("valid_datetime") for f in fields} == {"2023-01-01T06:00:00"}
    assert fields[0].metadata("gridType") == "reduced_gg"
    assert fields[0].metadata("isOctahedral") == int(config.grid.startswith("O"))
    assert fields[0].metadata("numberOfForecastsInEnsemble") == 3
    analyses = ekd.from_source("file", str(files.analyses[1]))
    assert {(f.metadata("type"), f.metadata("step"), f.metadata("date"), f.metadata("time")) for f in analyses} == {
        ("an", 0, 20230101, 600)}  # fmt: skip
    truth = ekd.from_source("file", str(files.truth[1]))
    sigma = ekd.from_source("file", str(files.sigma_b[1]))
    assert len(truth) == len(sigma) == 5
    assert {(f.metadata("type"), f.metadata("stream")) for f in truth} == {("an", "oper")}
    assert {(f.metadata("type"), f.metadata("stream")) for f in sigma} == {("es", "elda")}
    assert {f.metadata("number", default=None) for f in truth} <= {None, 0}


def test_values_round_trip(written):
    config, files = written
    sample = generate(config, "2023-01-01T06")
    backgrounds = ekd.from_source("file", str(files.backgrounds[1]))
    analyses = ekd.from_source("file", str(files.analyses[1]))
    truth = ekd.from_source("file", str(files.truth[1]))
    sigma = ekd.from_source("file", str(files.sigma_b[1]))
    for j, name in enumerate(sample.variables):
        param, level = name.rsplit("_", 1)
        selection = {"param": param, "levelist": int(level)}
        for number in range(1, config.members + 1):
            for source, reference in ((backgrounds, sample.backgrounds), (analyses, sample.analyses)):
                (field,) = source.sel(number=number, **selection)
                expected = reference[number - 1, :, j]
                assert np.abs(field.to_numpy() - expected).max() <= packing_tolerance(expected, 16), name
        for source, reference in ((truth, sample.truth), (sigma, sample.sigma_b)):
            (field,) = source.sel(**selection)
            assert np.abs(field.to_numpy() - reference[:, j]).max() <= packing_tolerance(reference[:, j], 16)
    lat, lon = backgrounds[0].grid_points()
    assert np.abs(lat - sample.latitudes).max() < 1e-9 and np.abs(lon - sample.longitudes).max() < 1e-9
    observations = np.load(files.observations[1])
    assert np.array_equal(observations["obs_index"], sample.obs_index)
    assert list(observations["variables"]) == list(sample.variables)
    assert np.allclose(observations["values"], sample.observations.T)


def test_refuses_to_overwrite(written):
    config, files = written
    with pytest.raises(ValueError, match="already holds a synthetic EDA"):
        write_synthetic_eda(config, files.root)


def test_more_bits_are_more_precise(tmp_path):
    config = SyntheticEDAConfig(grid="O32", levels=1, members=2, variables=("t",), bits_per_value=24,
                                observations=ObservationConfig(count=50))  # fmt: skip
    files = write_synthetic_eda(config, tmp_path)
    sample = generate(config)
    (field,) = ekd.from_source("file", str(files.backgrounds[0])).sel(number=2)
    error = np.abs(field.to_numpy() - sample.backgrounds[1, :, 0]).max()
    assert error <= packing_tolerance(sample.backgrounds[1, :, 0], 24)
    assert packing_tolerance(sample.backgrounds[1, :, 0], 24) < packing_tolerance(sample.backgrounds[1, :, 0], 16) / 200
