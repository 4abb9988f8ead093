"""``runner: member-generator``: backgrounds + N_s real analyses (GRIB) -> generated members (GRIB, numbered after
the real ones), on a tiny synthetic EDA (O16 x 2 levels x t, q, lnsp, 6 members, 2 dates; ~1 s) with a member
generator core whose last layer is random (so drift corrections and noise are not zero). The values read back are
the core's own ``generate`` on the same inputs and seed to GRIB packing precision; then seeds, member counts, the
whole hybrid in one file, the shipped config, ``hybrid-eda inference-config`` and the errors a user can run into.

The checkpoint-loading function (``read_member_checkpoint``) is the only piece not run on a trained checkpoint
here: its model check is tested on checkpoint files holding anemoi metadata only."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hybrid_eda.inference.member_checkpoint import from_core, read_member_checkpoint
from hybrid_eda.inference.member_runner import MemberInferenceRunner, date_seed
from hybrid_eda.inference.variance_checkpoint import FieldId
from hybrid_eda.resources import inference_configs_dir
from hybrid_eda.synthetic.gribio import BACKGROUND, GribEncoder, packing_tolerance
from hybrid_eda.synthetic.grids import make_grid
from member_generator_checkpoints import SYNTHETIC_SPLITS

CONFIG = inference_configs_dir() / "member_generator.yaml"
DATE = datetime(2023, 1, 1, 6)
FIELDS = (FieldId("t_1", "t", 130, 1), FieldId("t_2", "t", 130, 2), FieldId("q_1", "q", 133, 1),
          FieldId("q_2", "q", 133, 2), FieldId("lnsp_1", "lnsp", 152, 1))  # fmt: skip
REAL = [1, 2, 3]


@pytest.fixture(scope="module")
def eda(tmp_path_factory):
    """A tiny synthetic EDA folder (24-bit GRIB) and the generator core on its grid."""
    from hybrid_eda.layers.graphs import sphere_graph
    from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings
    from hybrid_eda.synthetic import ObservationConfig, SyntheticEDAConfig, write_synthetic_eda

    root = tmp_path_factory.mktemp("member_inference") / "synthetic-eda"
    config = SyntheticEDAConfig(grid="O16", levels=2, members=6, start="2023-01-01T00", end="2023-01-01T06", seed=4,
                                variables=("t", "q", "lnsp"), bits_per_value=24,
                                observations=ObservationConfig(count=200))  # fmt: skip
    write_synthetic_eda(config, root)
    grid = make_grid("O16")
    torch.manual_seed(0)
    scale = torch.tensor([10.0, 10.0, 1e-3, 1e-3, 0.05])
    mean = torch.tensor([220.0, 270.0, 1e-5, 5e-3, 11.5])
    settings = MemberGeneratorSettings(latent=8, rounds=1, steps=3)
    graph = sphere_graph(grid.latitudes, grid.longitudes)
    core = MemberGeneratorCore(n_variables=5, graph=graph, variable_mean=mean, variable_scale=scale, settings=settings)
    nn.init.normal_(core.output.weight, std=0.05)
    nn.init.normal_(core.output.bias, std=0.05)
    return {"root": root, "grid": grid, "checkpoint": from_core(core, FIELDS, grid), "core": core}


def _runner(eda, tmp_path, *, analyses=None, backgrounds=None, options=None, **config):
    from anemoi.inference.config.run import RunConfiguration

    grib = eda["root"] / "grib"
    inputs = {
        "backgrounds": backgrounds or {"grib": {"path": str(grib / "bg_{date:strftime(%Y%m%d%H)}.grib")}},
        "analyses": analyses or {"grib": {"path": str(grib / "an_{date:strftime(%Y%m%d%H)}.grib"), "number": REAL}},
    }
    settings = {"checkpoint": "unused.ckpt", "date": DATE, "input": inputs,
                "output": {"grib": str(tmp_path / "members.grib")}, **config}  # fmt: skip
    return MemberInferenceRunner(RunConfiguration(**settings), checkpoint=eda["checkpoint"], **(options or {}))


def _read(path: Path) -> dict[int, np.ndarray]:
    """``{number: [G, F]}`` of a GRIB file of members, and checks the keys of every message."""
    import earthkit.data as ekd

    out: dict[int, np.ndarray] = {}
    for field in ekd.from_source("file", str(path)):
        md = field.metadata
        i = [f.name for f in FIELDS].index(f"{md('shortName')}_{md('level')}")
        out.setdefault(md("number"), np.full((1600, len(FIELDS)), np.nan))[:, i] = field.to_numpy(flatten=True)
        keys = (md("class"), md("stream"), md("type"), md("levtype"), md("typeOfLevel"))
        assert keys == ("od", "elda", "an", "ml", "hybrid")
        assert (md("dataDate"), md("dataTime"), md("step"), md("N")) == (20230101, 600, 0, 16)
    return out


def _inputs(eda, date=DATE):
    import earthkit.data as ekd

    def stack(kind, numbers):
        fields = ekd.from_source("file", str(eda["root"] / "grib" / f"{kind}_{date:%Y%m%d%H}.grib"))
        return np.stack([np.stack([fields.sel(param=f.param, level=f.level, number=n)[0].to_numpy(flatten=True)
                                   for f in FIELDS], axis=-1) for n in numbers])  # fmt: skip

    return stack("bg", range(1, 7)), stack("an", REAL)  # [6, G, F], [3, G, F]


# ------------------------------------------------------------------------------------------------ round trip
def test_generated_members_round_trip_through_grib(eda, tmp_path):
    runner = _runner(eda, tmp_path, seed=5)
    (emulated,) = runner.execute()
    assert emulated.numbers == (4, 5, 6) and emulated.start_numbers == (4, 5, 6) and emulated.real_numbers == (1, 2, 3)
    backgrounds, analyses = _inputs(eda)
    with torch.no_grad():
        expected = eda["core"].generate(
            torch.tensor(backgrounds[3:], dtype=torch.float32), torch.tensor(analyses, dtype=torch.float32), 3,
            torch.Generator().manual_seed(date_seed(5, DATE)),
            guide_backgrounds=torch.tensor(backgrounds[:3], dtype=torch.float32),
        ).members.numpy()  # fmt: skip
    written = _read(tmp_path / "members.grib")
    assert sorted(written) == [4, 5, 6]
    for j, number in enumerate((4, 5, 6)):
        for i in range(len(FIELDS)):
            reference = expected[j, :, i].astype(np.float64)
            assert np.abs(written[number][:, i] - reference).max() <= packing_tolerance(reference, 16)
    # the members are not their backgrounds: the flow moved them (towards the analyses' mean increment)
    assert not np.allclose(expected, backgrounds[3:], rtol=1e-4)


def test_seed_date_and_member_count(eda, tmp_path):
    first = _runner(eda, tmp_path, seed=1).emulate(*_runner(eda, tmp_path).read_inputs()[0])
    again = _runner(eda, tmp_path, seed=1).emulate(*_runner(eda, tmp_path).read_inputs()[0])
    other = _runner(eda, tmp_path, seed=2).emulate(*_runner(eda, tmp_path).read_inputs()[0])
    np.testing.assert_array_equal(first.values, again.values)
    assert np.abs(first.values - other.values).max() > 0
    assert date_seed(1, DATE) != date_seed(1, datetime(2023, 1, 1, 0)) and date_seed(1, DATE) != date_seed(2, DATE)
    # N = 9: members 4..9, starting from backgrounds 4, 5, 6, 4, 5, 6
    more = _runner(eda, tmp_path, seed=1, options={"members": 9}).emulate(*_runner(eda, tmp_path).read_inputs()[0])
    assert more.numbers == tuple(range(4, 10)) and more.start_numbers == (4, 5, 6, 4, 5, 6)
    assert np.abs(more.values[3:] - more.values[:3]).max() > 0  # a second ensemble from the same starts


def test_every_date_and_the_whole_hybrid_in_one_file(eda, tmp_path):
    grib = eda["root"] / "grib"
    bg, an = ([str(grib / f"{kind}_2023010100.grib"), str(grib / f"{kind}_2023010106.grib")] for kind in ("bg", "an"))
    runner = _runner(eda, tmp_path, date=None, output={"grib": str(tmp_path / "hybrid_{date:strftime(%H)}.grib")},
                     backgrounds={"grib": {"path": bg}}, analyses={"grib": {"path": an, "number": REAL}},
                     options={"include_real": True})  # fmt: skip
    results = runner.execute()
    assert [r.date for r in results] == [datetime(2023, 1, 1, 0), DATE]
    written = _read(tmp_path / "hybrid_06.grib")
    assert sorted(written) == [1, 2, 3, 4, 5, 6]
    _, analyses = _inputs(eda)
    for j, number in enumerate(REAL):
        assert np.abs(written[number] - analyses[j]).max() <= 2 * packing_tolerance(analyses[j], 16)
    assert (tmp_path / "hybrid_00.grib").stat().st_size > 0


# ------------------------------------------------------------------------------------------------ configs
def test_shipped_config_is_an_anemoi_inference_run_config():
    from anemoi.inference.config.run import RunConfiguration
    from anemoi.inference.runners import runner_registry

    config = RunConfiguration.load(str(CONFIG))
    assert set(config.runner) == {"member-generator"} and set(config.input) == {"backgrounds", "analyses"}
    assert config.input["analyses"]["grib"]["number"] == list(range(1, 15)) and config.seed == 0
    assert runner_registry.lookup("member-generator").__name__ == "MemberInferenceRunner"  # the entry point


def _fake_checkpoint(path: Path, target: str, **config) -> Path:
    """A zip holding anemoi metadata only (what the model check and inference-config read)."""
    metadata = {"config": {"model": {"model": {"_target_": target}}, **config}, "dataset": {}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("checkpoint/anemoi-metadata/anemoi.json", json.dumps(metadata))
    return path


def test_inference_config_fills_in_the_member_template(eda, tmp_path):
    from hybrid_eda.inference.config import inference_config

    store = eda["root"].parent / "analyses.zarr"
    store.mkdir(exist_ok=True)
    test = {"datasets": {"members": {"dataset_config": {"dataset": str(store)}, "start": "2023-01-01T06:00:00"}}}
    ckpt = _fake_checkpoint(tmp_path / "m.ckpt", "hybrid_eda.models.MemberGenerator", dataloader={"test": test})
    config = inference_config(ckpt)
    assert config["checkpoint"] == str(ckpt.resolve()) and config["date"] == "2023-01-01T06:00:00"
    assert "member-generator" in config["runner"]
    bg = config["input"]["backgrounds"]["grib"]["path"]
    assert bg == str(eda["root"].resolve() / "grib" / "bg_{date:strftime(%Y%m%d%H)}.grib")
    assert config["input"]["analyses"]["grib"]["number"] == list(range(1, 15))
    # the EDA folder itself as --dataset, another date; a date it does not hold is explained
    config = inference_config(ckpt, dataset=eda["root"], date="2023-01-01T00")
    assert config["date"] == "2023-01-01T00:00:00" and Path(config["input"]["analyses"]["grib"]["path"]).is_absolute()
    with pytest.raises(ValueError, match="no backgrounds GRIB .* for 2023-02-01T00:00:00 .* pass --dataset FOLDER"):
        inference_config(ckpt, dataset=eda["root"], date="2023-02-01")
    with pytest.raises(ValueError, match="its template is --template member_generator"):
        inference_config(ckpt, template="variance_emulator")


# ------------------------------------------------------------------------------------------------ errors
def test_checkpoint_of_another_model_is_explained(tmp_path):
    other = _fake_checkpoint(tmp_path / "v.ckpt", "hybrid_eda.models.VarianceEmulator")
    with pytest.raises(ValueError, match="checkpoint of hybrid_eda.models.VarianceEmulator, not of the member gen"):
        read_member_checkpoint(other)
    (tmp_path / "junk.ckpt").write_text("not a zip")
    with pytest.raises(ValueError, match="not an anemoi inference checkpoint"):
        read_member_checkpoint(tmp_path / "junk.ckpt")
    with pytest.raises(ValueError, match="no checkpoint at"):
        read_member_checkpoint(tmp_path / "none.ckpt")


def test_fewer_than_two_real_analyses_and_missing_guide_backgrounds(eda, tmp_path):
    grib = eda["root"] / "grib"
    one = {"grib": {"path": str(grib / "an_2023010106.grib"), "number": [2]}}
    with pytest.raises(ValueError, match=r"input: analyses: .*1 member\(s\) \(numbers \[2\]\); the member generator"):
        _runner(eda, tmp_path, analyses=one).execute()
    some = {"grib": {"path": str(grib / "bg_2023010106.grib"), "number": [3, 4, 5, 6]}}
    with pytest.raises(ValueError, match=r"the backgrounds lack members \[1, 2\] of the real analyses"):
        _runner(eda, tmp_path, backgrounds=some).execute()
    guides_only = {"grib": {"path": str(grib / "bg_2023010106.grib"), "number": REAL}}
    with pytest.raises(ValueError, match="every background .* has a real analysis: nothing to start from"):
        _runner(eda, tmp_path, backgrounds=guides_only).execute()


def test_backgrounds_on_another_grid_are_refused(eda, tmp_path):
    grid = make_grid("O32")
    path = tmp_path / "o32.grib"
    with open(path, "wb") as stream, GribEncoder(grid, members=6) as encoder:
        for number in range(1, 7):
            encoder.write(stream, np.full(grid.npoints, 250.0), kind=BACKGROUND, param_id=130, level=1,
                          valid=DATE, step_hours=6, number=number)  # fmt: skip
    with pytest.raises(ValueError, match=r"o32.grib is on a reduced_gg grid of 5248 points, the checkpoint on O16"):
        _runner(eda, tmp_path, backgrounds={"grib": str(path)}).execute()
    with pytest.raises(ValueError, match="built for 5 variables on 1600 points, not 5 fields on O32"):
        from_core(eda["core"], FIELDS, grid)


def test_config_errors_name_the_fix(eda, tmp_path):
    with pytest.raises(ValueError, match=r"needs input: \{backgrounds: \.\.\., analyses: \.\.\.\}"):
        _runner(eda, tmp_path, input={"grib": "bg.grib"})
    with pytest.raises(ValueError, match="input: analyses: needs one of grib, dataset"):
        _runner(eda, tmp_path, analyses={"netcdf": "an.nc"})
    with pytest.raises(ValueError, match="needs an output: grib"):
        _runner(eda, tmp_path, output="printer")
    with pytest.raises(ValueError, match="leaves nothing to generate"):
        _runner(eda, tmp_path, options={"members": 2})
    with pytest.raises(ValueError, match="is not more than the 3 real analyses"):
        _runner(eda, tmp_path, options={"members": 3}).execute()


# ------------------------------------------------------------------------------------------------ trained checkpoint
#: The tiny global store's date splits (2-step training, as tests/test_member_generator_training.py).
SPLITS = [
    *SYNTHETIC_SPLITS,
    # the tiny EDA has 6 members; the shipped config reads 10 per sample (6-8 guides)
    "dataloader.members_per_sample=6",
    "model.model.guides=[2,4]",
    "model.model.validation_guides=3",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """member_generator_synthetic trained 2 steps on O32 x 2 levels, 6 members, 6 dates (as a user would run it)."""
    import sys

    from isolated_run import run_command
    from member_generator_checkpoints import tiny_synthetic_store

    work = tmp_path_factory.mktemp("member_trained")
    env = tiny_synthetic_store(work, "synthetic-eda-generator.yaml", "eda-generator.zarr", members=6)
    bin_dir = Path(sys.executable).parent
    run_command([str(bin_dir / "anemoi-training"), "train", "--config-name=member_generator_synthetic", *SPLITS],
                work, env)  # fmt: skip
    (checkpoint,) = (work / "output" / "member_generator_synthetic" / "checkpoint").glob("*/inference-last.ckpt")
    return {"work": work, "env": env, "checkpoint": checkpoint, "bin": bin_dir}


@pytest.mark.slow
def test_inference_config_and_anemoi_inference_run_round_trip(trained):
    """`hybrid-eda inference-config RUN_FOLDER` then `anemoi-inference run` from an empty folder: 3 real analyses of
    the test date in, members 4..6 out, equal to load_member_generator(...).generate on the same inputs and seed."""
    import earthkit.data as ekd
    import yaml

    from hybrid_eda.models import load_member_generator
    from isolated_run import run_command

    work, env, bin_dir = trained["work"], trained["env"], trained["bin"]
    empty = work / "empty"
    empty.mkdir()
    run_folder = work / "output" / "member_generator_synthetic"
    run_command([str(bin_dir / "hybrid-eda"), "inference-config", str(run_folder), "--out", "m.yaml"], empty, env)
    config = yaml.safe_load((empty / "m.yaml").read_text())
    assert config["checkpoint"] == str(trained["checkpoint"].resolve()) and config["date"] == "2023-01-02T00:00:00"
    assert Path(config["input"]["backgrounds"]["grib"]["path"]).is_absolute()
    config["input"]["analyses"]["grib"]["number"] = REAL  # the tiny EDA has 6 members
    (empty / "m.yaml").write_text(yaml.safe_dump(config))
    out = run_command([str(bin_dir / "anemoi-inference"), "run", "m.yaml", "seed=7"], empty, env)
    assert "member generator: 33 GRIB messages (1 date(s) x 3 members x 11 fields; N_s=3 real, members 4..6)" in (
        out.stdout + out.stderr
    )
    ck = read_member_checkpoint(trained["checkpoint"])
    assert len(ck.fields) == 11 and all("_an" in f.name for f in ck.fields) and ck.grid.name == "O32"
    date = datetime(2023, 1, 2)
    grib = work / "synthetic-eda" / "grib"
    files = {kind: ekd.from_source("file", str(grib / f"{kind}_2023010200.grib")) for kind in ("bg", "an")}

    def stack(kind, numbers):
        return np.stack([np.stack([files[kind].sel(paramId=f.param_id, level=f.level, number=n)[0].to_numpy(
            flatten=True) for f in ck.fields], axis=-1) for n in numbers])  # fmt: skip

    backgrounds = stack("bg", range(1, 7))
    expected = load_member_generator(trained["checkpoint"]).generate(
        backgrounds[3:].astype(np.float32), stack("an", REAL).astype(np.float32), 3,
        torch.Generator().manual_seed(date_seed(7, date)), guide_backgrounds=backgrounds[:3].astype(np.float32),
    )  # fmt: skip
    written = ekd.from_source("file", str(empty / "emulated-members.grib"))
    assert len(written) == 3 * len(ck.fields) and set(written.metadata("number")) == {4, 5, 6}
    for field in written:
        md = field.metadata
        i = [(f.param_id, f.level) for f in ck.fields].index((md("paramId"), md("level")))
        reference = expected[md("number") - 4, :, i].astype(np.float64)
        assert np.abs(field.to_numpy(flatten=True) - reference).max() <= packing_tolerance(reference, 16)
        keys = (md("stream"), md("type"), md("dataDate"), md("numberOfForecastsInEnsemble"))
        assert keys == ("elda", "an", 20230102, 6)
    with pytest.raises(ValueError, match="not of the member generator"):
        _ = read_member_checkpoint(_fake_checkpoint(work / "v.ckpt", "hybrid_eda.models.VarianceEmulator"))
