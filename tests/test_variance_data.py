"""``hybrid-eda variance-data``: the options of ``hybrid-eda synthetic`` (one definition) with the embedded
training data's defaults, and the shipped recipes narrowed to the variables asked for."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from hybrid_eda.synthetic import SyntheticEDAConfig
from hybrid_eda.synthetic.cli import add_eda_arguments, config_from_args
from hybrid_eda.training.stores import RECIPES, _add_arguments, local_recipe


def _parse(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_variance_data_and_synthetic_build_the_same_eda_from_the_same_options():
    argv = ["--grid", "O32", "--levels", "2", "--members", "8", "--start", "2023-02-01T00", "--end", "2023-02-02T00",
            "--seed", "3", "--variables", "t", "lnsp", "--set", "errors.front_factor=4"]  # fmt: skip
    ours = config_from_args(_parse(_add_arguments, argv))
    theirs = config_from_args(_parse(add_eda_arguments, [*argv]))
    assert ours == theirs
    assert ours.errors.front_factor == 4 and ours.variables == ("t", "lnsp") and ours.seed == 3


def test_variance_data_defaults_are_the_embedded_training_data():
    config = config_from_args(_parse(_add_arguments, []))
    assert (config.grid, config.levels, config.members, config.seed) == ("O32", 5, 50, 0)
    assert (
        config.dates[0].isoformat() == "2023-01-01T00:00:00" and config.dates[-1].isoformat() == "2023-01-31T18:00:00"
    )
    with pytest.raises(ValueError, match="front_factor|valid"):
        config_from_args(_parse(_add_arguments, ["--set", "errors.no_such_key=1"]))


def _grib(node, key):
    """The ``key`` of every ``grib`` source in a recipe's input, in order (lists are flattened)."""
    if isinstance(node, list):
        return [v for value in node for v in _grib(value, key)]
    if isinstance(node, dict):
        grib = node.get("grib")
        own = grib[key] if isinstance(grib, dict) else []
        own = list(own) if isinstance(own, list) else [own]
        return own + [v for name, value in node.items() if name != "grib" for v in _grib(value, key)]
    return []


def _params(node):
    return _grib(node, "param")


@pytest.mark.parametrize("name", RECIPES.values())
def test_local_recipes_read_only_the_variables_asked_for_with_absolute_paths(name, tmp_path):
    full = local_recipe(name, tmp_path, SyntheticEDAConfig(grid="O32", levels=2, members=4))
    assert sorted(_params(full["input"])) == sorted(["vo", "d", "t", "q", "o3", "lnsp"])
    some = local_recipe(name, tmp_path, SyntheticEDAConfig(grid="O32", levels=2, members=4, variables=("q", "lnsp")))
    assert sorted(_params(some["input"])) == ["lnsp", "q"]
    text = yaml.safe_dump(some)
    assert str(tmp_path / "synthetic-eda" / "grib") in text
    assert ("ensemble-statistics" in text) == name.endswith("std-local")
    only_t = local_recipe(name, tmp_path, SyntheticEDAConfig(grid="O32", levels=2, members=4, variables=("t",)))
    assert _params(only_t["input"]) == ["t"]  # the lnsp source is dropped from the join
    assert all(Path(p).is_absolute() for p in _grib(only_t["input"], "path"))
