"""``inference.checkpoint_metadata``: the checks and the field and grid reading shared by both runners' readers."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from hybrid_eda.inference.checkpoint_metadata import ModelKind, dataset_grid, field_id, open_checkpoint
from hybrid_eda.inference.member_checkpoint import MEMBER_GENERATOR
from hybrid_eda.inference.variance_checkpoint import VARIANCE_EMULATOR, FieldId
from hybrid_eda.synthetic.grids import make_grid

TOY = ModelKind(what="toy model", config="toy_model", targets=("toy.Model",), other_runners="runner: default")


def _metadata_only(path: Path, target: str) -> Path:
    """A zip holding anemoi metadata only (all the checks read; nothing to unpickle)."""
    metadata = {"config": {"model": {"model": {"_target_": target, "input_dataset": "m"}}}, "run_id": "r1"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("checkpoint/anemoi-metadata/anemoi.json", json.dumps(metadata))
    return path


def test_a_checkpoint_of_the_kind_is_opened_from_its_file_or_its_run_folder(tmp_path):
    run = tmp_path / "output" / "checkpoint" / "r1"
    run.mkdir(parents=True)
    ckpt = _metadata_only(run / "inference-last.ckpt", "toy.Model")
    for given in (ckpt, tmp_path / "output"):
        opened = open_checkpoint(given, TOY)
        assert opened.path == ckpt.resolve() and opened.metadata["run_id"] == "r1"
        assert opened.model == {"_target_": "toy.Model", "input_dataset": "m"}


@pytest.mark.parametrize(
    ("kind", "other", "runners"),
    [
        (MEMBER_GENERATOR, "hybrid_eda.models.VarianceEmulator", "runner: variance-emulator for variance emulator"),
        (VARIANCE_EMULATOR, "hybrid_eda.models.MemberGenerator", "runner: member-generator for member generator"),
    ],
)
def test_each_runner_refuses_the_other_models_checkpoint_and_names_its_runner(tmp_path, kind, other, runners):
    ckpt = _metadata_only(tmp_path / "other.ckpt", other)
    message = (
        rf"is a checkpoint of {other}, not of the {kind.what} \({kind.targets[0]}\); the {kind.runner} runner needs "
        rf"one trained with --config-name={kind.config}_\* \({runners}"
    )
    with pytest.raises(ValueError, match=message):
        open_checkpoint(ckpt, kind)
    (tmp_path / "junk.ckpt").write_text("not a zip")
    junk = rf"junk\.ckpt is not an anemoi inference checkpoint .*; give the inference-last\.ckpt of a {kind.what} run"
    with pytest.raises(ValueError, match=junk + r" \(not last\.ckpt, the training checkpoint\)"):
        open_checkpoint(tmp_path / "junk.ckpt", kind)
    missing = rf"no checkpoint at .*none\.ckpt; .*--config-name={kind.config}_synthetic\)"
    with pytest.raises(ValueError, match=missing):
        open_checkpoint(tmp_path / "none.ckpt", kind)


def test_grid_and_fields_from_the_metadata(tmp_path):
    grid = make_grid("O32")
    points = {"latitudes": grid.latitudes, "longitudes": grid.longitudes}
    assert dataset_grid(tmp_path, points, "members").name == "O32"
    with pytest.raises(ValueError, match="has no latitudes/longitudes of dataset 'members' among its supporting"):
        dataset_grid(tmp_path, {"latitudes": grid.latitudes}, "members")
    entry = {"grib": {"paramId": 130, "shortName": "t"}, "mars": {"levelist": 137, "levtype": "ml"}}
    assert field_id("t_137", entry) == FieldId(name="t_137", param="t", param_id=130, level=137, levtype="ml")
    assert field_id("t_an_1", {"grib": {"paramId": 130}, "mars": {"levelist": 1}}).param == "t_an"  # from the name
    with pytest.raises(ValueError, match="no GRIB paramId/level for t_137; train on a member store built from GRIB"):
        field_id("t_137", {"mars": {"levelist": 137}})
