"""``anemoi-inference run`` with ``runner: variance-emulator``: a tiny checkpoint (trained one step on a tiny
synthetic EDA, built once per module, ~30 s) -> the shipped config -> GRIB, read back with earthkit-data: the
values are the predictor's mean and quantiles on the same members to GRIB packing precision, the keys those of
the synthetic sigma_b (mean) and GRIB2's quantile template (quantiles); and the errors a user can run into."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from hybrid_eda.inference.checkpoint_metadata import grid_from_points
from hybrid_eda.inference.std_grib import quantile_keys
from hybrid_eda.resources import inference_configs_dir
from hybrid_eda.synthetic.gribio import BACKGROUND, GribEncoder, packing_tolerance
from hybrid_eda.synthetic.grids import make_grid
from isolated_run import isolated_environment, run_command
from tiny_variance import BIN, stores_command, train_command

CONFIG = inference_configs_dir() / "variance_emulator.yaml"
DATE = datetime(2023, 1, 2, 0)  # a date of the tiny EDA below
NUMBERS = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The training folder of a one-step variance emulator on O32 x 2 levels x 6 variables, 6 members, 6 dates."""
    root = tmp_path_factory.mktemp("variance_inference")
    env = isolated_environment(root)
    work = root / "run"
    run_command(stores_command(work), root, env)
    run_command(train_command("variance_emulator_synthetic", 1), work, env)
    (checkpoint,) = (work / "output" / "variance_emulator_synthetic" / "checkpoint").glob("*/inference-last.ckpt")
    return {"work": work, "env": env, "checkpoint": checkpoint}


def _runner(trained, tmp_path, **config):
    from anemoi.inference.config.run import RunConfiguration

    from hybrid_eda.inference.variance_runner import VarianceEmulatorRunner

    options = config.pop("options", {})
    settings = {"checkpoint": str(trained["checkpoint"]), "date": DATE,
                "output": {"grib": str(tmp_path / "std.grib")}, **config}  # fmt: skip
    return VarianceEmulatorRunner(RunConfiguration(**settings), **options)


def _grib_input(trained, **extra):
    return {"grib": {"path": str(trained["work"] / "synthetic-eda" / "grib" / "bg_2023010200.grib"), **extra}}


# ------------------------------------------------------------------------------------------------ no checkpoint
def test_quantiles_are_exact_fractions():
    assert quantile_keys(0.05) == (5, 100) and quantile_keys(0.5) == (50, 100) and quantile_keys(0.025) == (25, 1000)
    for bad in (0.0, 1.0, 1.5, 0.123456):
        with pytest.raises(ValueError, match="quantile"):
            quantile_keys(bad)


@pytest.mark.parametrize("name", ["O32", "N32", "O16"])
def test_the_grid_is_recovered_from_the_checkpoint_points(name):
    grid = make_grid(name)
    assert grid_from_points(grid.latitudes, grid.longitudes - 360.0 * (grid.longitudes > 180)).name == name
    with pytest.raises(ValueError, match="not a reduced Gaussian grid|not those of"):
        grid_from_points(np.linspace(90, -90, 100), np.zeros(100))


def test_shipped_config_is_an_anemoi_inference_run_config():
    from anemoi.inference.config.run import RunConfiguration
    from anemoi.inference.runners import runner_registry

    config = RunConfiguration.load(str(CONFIG))
    assert config.runner == {"variance-emulator": {"mean": True, "quantiles": [0.05, 0.5, 0.95]}}
    assert set(config.input) == {"grib"} and set(config.output) == {"grib"} and config.date is not None
    assert runner_registry.lookup("variance-emulator").__name__ == "VarianceEmulatorRunner"  # the entry point


# ------------------------------------------------------------------------------------------------ round trip
@pytest.mark.slow
def test_shipped_config_round_trip_through_grib(trained):
    import earthkit.data as ekd
    import torch

    from hybrid_eda.models import load_variance_predictor

    work = trained["work"]
    shutil.copy(CONFIG, work / "variance.yaml")
    out = run_command([str(BIN / "anemoi-inference"), "run", "variance.yaml", f"date={DATE.isoformat()}"], work,
               trained["env"])  # fmt: skip
    assert "44 GRIB messages (1 date(s) x 4 statistics x 11 fields, M=5)" in out.stdout + out.stderr

    predictor = load_variance_predictor(trained["checkpoint"])
    members = ekd.from_source("file", str(work / "synthetic-eda" / "grib" / "bg_2023010200.grib"))
    x = np.stack(
        [
            np.stack(
                [
                    members.sel(param=v.split("_")[0], level=int(v.split("_")[1]), number=n)[0].to_numpy(flatten=True)
                    for v in predictor.variables
                ],
                axis=-1,
            )  # fmt: skip
            for n in NUMBERS
        ]
    )  # [M, G, F]
    dist = predictor(x[None])
    expected = {None: dist.mean()[0, 0]} | {q: dist.quantile(q)[0, 0] for q in (0.05, 0.5, 0.95)}

    fields = ekd.from_source("file", str(work / "variance-emulator-std.grib"))
    assert len(fields) == 4 * len(predictor.variables)
    for field in fields:
        md = field.metadata
        i = predictor.variables.index(f"{md('shortName')}_{md('level')}")
        quantile = None if md("type") == "es" else md("quantileValue") / md("totalNumberOfQuantiles")
        reference = expected[quantile][:, i].numpy().astype(np.float64)
        assert np.abs(field.to_numpy(flatten=True) - reference).max() <= packing_tolerance(reference, 16)
        assert (md("class"), md("stream"), md("expver"), md("levtype"), md("typeOfLevel")) == (
            "od",
            "elda",
            "0001",
            "ml",
            "hybrid",
        )
        assert (md("dataDate"), md("dataTime"), md("step"), md("gridType"), md("N")) == (
            20230102,
            0,
            0,
            "reduced_gg",
            32,
        )
        assert md("paramId") == {"t": 130, "q": 133, "vo": 138, "d": 155, "lnsp": 152, "o3": 203}[md("shortName")]
        assert md("productDefinitionTemplateNumber") == (0 if quantile is None else 86)
        assert md("type") == ("es" if quantile is None else "pd") and md("bitsPerValue") == 16
    assert torch.all(expected[0.05] < expected[0.95])


@pytest.mark.slow
def test_inference_config_runs_from_an_empty_folder(trained, tmp_path):
    """`hybrid-eda inference-config RUN_FOLDER` picks the variance template, the checkpoint, a test date and the
    members; `anemoi-inference run` then works from an empty folder; the member store gives the same run."""
    import yaml

    empty = tmp_path / "empty"
    empty.mkdir()
    run_folder = trained["work"] / "output" / "variance_emulator_synthetic"
    hybrid_eda = str(BIN / "hybrid-eda")
    run_command([hybrid_eda, "inference-config", str(run_folder), "--out", "v.yaml"], empty, trained["env"])
    config = yaml.safe_load((empty / "v.yaml").read_text())
    assert config["checkpoint"] == str(trained["checkpoint"].resolve()) and "variance-emulator" in config["runner"]
    assert config["date"] == "2023-01-02T00:00:00"  # the test split of tiny_variance.SPLITS
    assert config["input"]["grib"]["number"] == NUMBERS and Path(config["input"]["grib"]["path"]).is_absolute()
    out = run_command([str(BIN / "anemoi-inference"), "run", "v.yaml"], empty, trained["env"])
    assert "44 GRIB messages (1 date(s) x 4 statistics x 11 fields, M=5)" in out.stdout + out.stderr
    assert (empty / "variance-emulator-std.grib").stat().st_size > 0

    store = trained["work"] / "eda-members.zarr"
    args = ["inference-config", str(run_folder), "--dataset", str(store), "--out", "d.yaml"]
    run_command([str(BIN / "hybrid-eda"), *args], empty, trained["env"])
    assert yaml.safe_load((empty / "d.yaml").read_text())["input"] == {
        "dataset": {"dataset": str(store.resolve()), "number": NUMBERS}
    }
    wrong = run_command([str(BIN / "hybrid-eda"), "inference-config", str(run_folder), "--template", "l96_forecaster"],
                        empty, trained["env"], check=False)  # fmt: skip
    assert wrong.returncode == 2 and "its template is --template variance_emulator" in wrong.stderr


@pytest.mark.slow
def test_member_store_gives_the_same_std_as_the_grib(trained, tmp_path):
    import earthkit.data as ekd

    store = {"dataset": str(trained["work"] / "eda-members.zarr"), "number": NUMBERS}
    output = {"grib": str(tmp_path / "store_{statistic}.grib")}
    runner = _runner(trained, tmp_path, input={"dataset": store}, output=output, options={"quantiles": [0.9]})
    runner.execute()
    from_store = runner.emulate(runner.read_members()[0])
    from_grib = _runner(trained, tmp_path, input=_grib_input(trained, number=NUMBERS), options={"quantiles": [0.9]})
    from_grib = from_grib.emulate(from_grib.read_members()[0])
    for q in (None, 0.9):
        np.testing.assert_allclose(from_store[q], from_grib[q], rtol=1e-5)  # float32 sums in another order
    assert sorted(p.name for p in tmp_path.glob("store_*.grib")) == ["store_mean.grib", "store_q90.grib"]
    assert set(ekd.from_source("file", str(tmp_path / "store_q90.grib")).metadata("quantileValue")) == {90}


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.slow
def test_checkpoint_of_another_model_is_explained(trained, tmp_path):
    from anemoi.utils.checkpoints import load_metadata, replace_metadata

    other = tmp_path / "l96.ckpt"
    shutil.copy(trained["checkpoint"], other)
    metadata = load_metadata(str(other))
    metadata["config"]["model"]["model"]["_target_"] = "anemoi.models.models.AnemoiModelEncProcDec"
    replace_metadata(str(other), metadata)
    with pytest.raises(ValueError, match="checkpoint of anemoi.models.models.AnemoiModelEncProcDec, not of the var"):
        _runner(trained, tmp_path, checkpoint=str(other), input=_grib_input(trained)).execute()
    (tmp_path / "junk.ckpt").write_text("not a zip")
    with pytest.raises(ValueError, match="not an anemoi inference checkpoint"):
        _runner(trained, tmp_path, checkpoint=str(tmp_path / "junk.ckpt"), input=_grib_input(trained)).execute()
    with pytest.raises(ValueError, match="training checkpoint"):
        last = trained["checkpoint"].parent / "last.ckpt"
        _runner(trained, tmp_path, checkpoint=str(last), input=_grib_input(trained)).execute()


@pytest.mark.slow
def test_fewer_than_two_members_are_refused(trained, tmp_path):
    with pytest.raises(ValueError, match=r"1 member\(s\) \(numbers \[3\]\); the variance emulator needs at least 2"):
        _runner(trained, tmp_path, input=_grib_input(trained, number=[3])).read_members()
    store = str(trained["work"] / "eda-members.zarr")
    with pytest.raises(ValueError, match="needs at least 2"):
        _runner(trained, tmp_path, input={"dataset": {"dataset": store, "number": [2]}}).read_members()
    with pytest.raises(ValueError, match="no ensemble dimension"):
        _runner(trained, tmp_path, input={"dataset": str(trained["work"] / "eda-std.zarr")}).read_members()


@pytest.mark.slow
def test_members_on_another_grid_are_refused(trained, tmp_path):
    grid = make_grid("O16")
    path = tmp_path / "o16.grib"
    with open(path, "wb") as stream, GribEncoder(grid, members=5) as encoder:
        for number in NUMBERS:
            encoder.write(stream, np.full(grid.npoints, 250.0), kind=BACKGROUND, param_id=130, level=1,
                          valid=DATE, step_hours=6, number=number)  # fmt: skip
    with pytest.raises(ValueError, match=r"o16.grib is on a reduced_gg grid of 1600 points, the checkpoint on O32"):
        _runner(trained, tmp_path, input={"grib": str(path)}).read_members()


@pytest.mark.slow
def test_missing_variables_dates_and_members_are_named(trained, tmp_path):
    from hybrid_eda._eccodes import eccodes

    source = trained["work"] / "synthetic-eda" / "grib" / "bg_2023010200.grib"
    partial = tmp_path / "no_q.grib"
    with open(source, "rb") as stream, open(partial, "wb") as out:
        while (handle := eccodes.codes_grib_new_from_file(stream)) is not None:
            if eccodes.codes_get_string(handle, "shortName") != "q":
                out.write(eccodes.codes_get_message(handle))
            eccodes.codes_release(handle)
    with pytest.raises(ValueError, match=r"lacks 2 of the checkpoint's fields: q \(paramId 133\) ml level 1, q "):
        _runner(trained, tmp_path, input={"grib": str(partial)}).read_members()
    with pytest.raises(ValueError, match="no member fields valid at the requested date.*2023-01-02T00"):
        _runner(trained, tmp_path, date=datetime(2023, 1, 1, 18), input=_grib_input(trained)).read_members()
    with pytest.raises(ValueError, match=r"no member number \[9\]"):
        _runner(trained, tmp_path, input=_grib_input(trained, number=[1, 9])).read_members()
    sigma_b = trained["work"] / "synthetic-eda" / "truth" / "sigma_b_2023010200.grib"
    with pytest.raises(ValueError, match="without an ensemble number"):
        _runner(trained, tmp_path, input={"grib": str(sigma_b)}).read_members()
    with pytest.raises(ValueError, match="has no date 2023-02-01T00"):
        store = str(trained["work"] / "eda-members.zarr")
        _runner(trained, tmp_path, date=datetime(2023, 2, 1), input={"dataset": store}).read_members()


def test_config_errors_name_the_fix(tmp_path):
    from anemoi.inference.config.run import RunConfiguration

    from hybrid_eda.inference.variance_runner import VarianceEmulatorRunner

    base = {"checkpoint": str(tmp_path / "none.ckpt"), "output": {"grib": "std.grib"}, "input": {"grib": "bg.grib"}}
    with pytest.raises(ValueError, match="needs an input: one of grib, dataset"):
        VarianceEmulatorRunner(RunConfiguration(**{**base, "input": "test"}))
    with pytest.raises(ValueError, match="needs an output: one of grib"):
        VarianceEmulatorRunner(RunConfiguration(**{**base, "output": "printer"}))
    with pytest.raises(ValueError, match="nothing to write"):
        VarianceEmulatorRunner(RunConfiguration(**base), mean=False, quantiles=[])
    with pytest.raises(ValueError, match="no checkpoint at"):
        VarianceEmulatorRunner(RunConfiguration(**base)).execute()
