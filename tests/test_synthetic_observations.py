"""The synthetic EDA's observations as GRIB on the grid (``grib/obs_*.grib``) and as an input of the evaluation.

A tiny synthetic EDA (O16 x 2 levels, 4 members, 2 dates): the writer's observation GRIB holds the npz values at
the observed points and missing (NaN) elsewhere, one copy per member; ``add_observation_grib`` writes the same
files from the npz into a copy of a folder; ``evaluate members`` hands a generator trained with observations the
test EDA's observations in its own variable order and refuses, naming the fix, a test folder without them.
"""

from __future__ import annotations

import shutil
from datetime import datetime

import numpy as np
import pytest

from hybrid_eda.errors import UserInputError
from hybrid_eda.evaluation.hybrid_members import ModelSource, read_cases
from hybrid_eda.synthetic.gribio import packing_tolerance

N_MEMBERS = 4


@pytest.fixture(scope="module")
def tiny_eda(tmp_path_factory):
    from hybrid_eda.synthetic import ObservationConfig, SyntheticEDAConfig, write_synthetic_eda

    root = tmp_path_factory.mktemp("synthetic_observations") / "eda"
    config = SyntheticEDAConfig(grid="O16", levels=2, members=N_MEMBERS, start="2023-01-01T00", end="2023-01-01T06",
                                seed=3, variables=("t", "q", "lnsp"),
                                observations=ObservationConfig(count=150))  # fmt: skip
    write_synthetic_eda(config, root)
    return root


def _npz(root, stamp):
    with np.load(root / "truth" / f"obs_{stamp}.npz") as obs:
        return {key: obs[key] for key in obs}


def test_observation_grib_holds_the_npz_values_and_missing_elsewhere(tiny_eda):
    import earthkit.data as ekd

    for stamp in ("2023010100", "2023010106"):
        obs = _npz(tiny_eda, stamp)
        fields = ekd.from_source("file", str(tiny_eda / "grib" / f"obs_{stamp}.grib"))
        names = [str(n) for n in obs["variables"]]
        assert len(fields) == len(names) * N_MEMBERS == 5 * N_MEMBERS
        seen = []
        for field in fields:
            keys = field.metadata(("param", "levelist", "number", "stream", "type", "levtype", "valid_datetime"))
            param, level, number, stream, mars_type, levtype, valid = keys
            assert (stream, mars_type, levtype) == ("elda", "gai", "ml")
            assert str(valid).startswith(f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:]}")
            values = field.to_numpy(flatten=True)
            reference = obs["values"][names.index(f"{param}_{level}")]
            unobserved = np.ones(values.size, dtype=bool)
            unobserved[obs["obs_index"]] = False
            assert np.isnan(values[unobserved]).all()
            assert np.abs(values[obs["obs_index"]] - reference).max() <= packing_tolerance(reference, 16)
            seen.append((f"{param}_{level}", number))
        # variable by variable, level by level, member by member
        assert seen == [(name, m) for name in names for m in range(1, N_MEMBERS + 1)]


def test_add_observation_grib_writes_the_writers_files_into_a_copy(tiny_eda, tmp_path):
    from hybrid_eda.cli import main
    from hybrid_eda.synthetic.observation_grib import add_observation_grib

    copy = tmp_path / "copy"
    (copy / "truth").mkdir(parents=True)
    for npz in (tiny_eda / "truth").glob("obs_*.npz"):
        (copy / "truth" / npz.name).symlink_to(npz)
    shutil.copy(tiny_eda / "manifest.json", copy / "manifest.json")
    assert main(["synthetic-obs-grib", str(copy)]) == 0
    for stamp in ("2023010100", "2023010106"):
        written = (copy / "grib" / f"obs_{stamp}.grib").read_bytes()
        assert written == (tiny_eda / "grib" / f"obs_{stamp}.grib").read_bytes()
    with pytest.raises(ValueError, match="exists .* pass overwrite"):
        add_observation_grib(copy)
    assert len(add_observation_grib(copy, overwrite=True)) == 2
    other = tmp_path / "other"
    files = add_observation_grib(copy, out_dir=other)
    assert [f.name for f in files] == ["obs_2023010100.grib", "obs_2023010106.grib"] and not (other / "truth").exists()
    with pytest.raises(ValueError, match="holds no synthetic EDA"):
        add_observation_grib(tmp_path / "nothing")


class _ObservingModel:
    """A generator trained with observations of some of its variables (the runner's attributes); records them."""

    variables = ["lnsp_an_1", "q_an_1", "q_an_2", "t_an_1", "t_an_2"]  # store order, not the EDA's
    observation_variables = ["lnsp_obs_1", None, "q_obs_2", "t_obs_1", "t_obs_2"]
    uses_observations = True

    def __init__(self):
        self.seen = []

    def generate(self, starts, guides, n, generator, *, guide_backgrounds, observations=None, **_):
        self.seen.append(None if observations is None else observations.numpy().astype(np.float64))
        return starts


def test_the_generator_gets_the_test_edas_observations_in_its_order(tiny_eda):
    (case,) = list(read_cases(tiny_eda, dates=[1], observations=True)[0])
    obs = _npz(tiny_eda, "2023010106")
    names = [str(n) for n in obs["variables"]]
    assert case.variables == ("t_1", "t_2", "q_1", "q_2", "lnsp_1")
    model = _ObservingModel()
    source = ModelSource(model, "trained", "test")
    source.members(case, 2, seed=0)
    (given,) = model.seen
    assert given.shape == case.truth.shape
    for f, name in enumerate(model.variables):
        field = name.replace("_an_", "_")
        column = given[:, f]
        if model.observation_variables[f] is None:
            assert np.isnan(column).all()  # a variable the model was not trained to observe
            continue
        expected = obs["values"][names.index(field)].astype(np.float32)
        np.testing.assert_array_equal(column[obs["obs_index"]], expected)
        assert np.isnan(np.delete(column, obs["obs_index"])).all()
    # without observations in the case the source refuses (it would silently generate as if unobserved)
    (bare,) = list(read_cases(tiny_eda, dates=[1])[0])
    assert bare.observations is None
    with pytest.raises(UserInputError, match=r"trained with observations .* observations=True"):
        source.members(bare, 2, seed=0)


def test_a_test_folder_without_observations_is_refused_naming_the_fix(tiny_eda, tmp_path):
    folder = tmp_path / "no-obs"
    shutil.copytree(tiny_eda, folder, ignore=shutil.ignore_patterns("obs_*"))
    with pytest.raises(UserInputError, match=r"no observation file .*obs_2023010100.npz \(2 of 2 dates\).*hybrid-eda "):
        read_cases(folder, observations=True)
    assert next(read_cases(folder)[0]).observations is None  # without observations: unchanged
    assert next(read_cases(tiny_eda, observations=True)[0]).date == datetime(2023, 1, 1)


class _ObservingGenerator:
    """A generator in memory trained with observations of all but ``q_1`` (the runner's attributes); records them."""

    observation_variables = ["t_obs_1", "t_obs_2", None, "q_obs_2", "lnsp_obs_1"]

    def __init__(self):
        self.seen = []

    def generate(self, starts, guides, n, generator, *, guide_backgrounds, observations=None, **_):
        self.seen.append(None if observations is None else observations.numpy().astype(np.float64))
        return starts[:n]


def test_the_inference_runner_reads_observations_from_grib(tiny_eda, tmp_path):
    from anemoi.inference.config.run import RunConfiguration

    from hybrid_eda.inference.member_checkpoint import MemberCheckpoint
    from hybrid_eda.inference.member_runner import MemberInferenceRunner
    from hybrid_eda.inference.variance_checkpoint import FieldId
    from hybrid_eda.synthetic.grids import make_grid

    fields = (FieldId("t_1", "t", 130, 1), FieldId("t_2", "t", 130, 2), FieldId("q_1", "q", 133, 1),
              FieldId("q_2", "q", 133, 2), FieldId("lnsp_1", "lnsp", 152, 1))  # fmt: skip
    grib = tiny_eda / "grib"
    inputs = {"backgrounds": {"grib": str(grib / "bg_{date:strftime(%Y%m%d%H)}.grib")},
              "analyses": {"grib": {"path": str(grib / "an_{date:strftime(%Y%m%d%H)}.grib"), "number": [1, 2]}},
              "observations": {"grib": {"path": str(grib / "obs_{date:strftime(%Y%m%d%H)}.grib")}}}  # fmt: skip

    def run(inputs, uses_observations=True):
        generator = _ObservingGenerator()
        checkpoint = MemberCheckpoint(path=None, generator=generator, fields=fields, grid=make_grid("O16"),
                                      uses_observations=uses_observations)  # fmt: skip
        config = RunConfiguration(checkpoint="unused.ckpt", date=datetime(2023, 1, 1, 6), input=inputs,
                                  output={"grib": str(tmp_path / "members.grib")})  # fmt: skip
        MemberInferenceRunner(config, checkpoint=checkpoint).execute()
        return generator.seen

    (given,) = run(inputs)
    obs = _npz(tiny_eda, "2023010106")
    names = [str(n) for n in obs["variables"]]
    for f, field in enumerate(fields):
        column = given[:, f]
        if field.name == "q_1":  # not observed by this generator
            assert np.isnan(column).all()
            continue
        reference = obs["values"][names.index(field.name)]
        assert np.abs(column[obs["obs_index"]] - reference).max() <= packing_tolerance(reference, 16) * 1.001
        assert np.isnan(np.delete(column, obs["obs_index"])).all()
    assert run({k: v for k, v in inputs.items() if k != "observations"}) == [None]  # none given: unobserved
    assert run(inputs, uses_observations=False) == [None]  # a generator trained without them: ignored
    with pytest.raises(ValueError, match="observations: reads GRIB only"):
        run({**inputs, "observations": {"dataset": {"dataset": "x.zarr"}}})
