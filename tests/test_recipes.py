"""Every EDA recipe: the MARS ones validated offline (schema, request expansion, a build against a mocked MARS),
the offline twins built with ``anemoi-datasets create`` from the synthetic EDA."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import zlib
from importlib.metadata import entry_points
from pathlib import Path

# pyproj must load its PROJ library before eccodes does: findlibs loads eckitlib's bundled libproj globally and a
# pyproj imported afterwards binds to it (then crashes the interpreter at exit).
import pyproj  # noqa: F401  isort: skip
import numpy as np
import pytest
import yaml

from hybrid_eda.recipes_cli import copy_recipes
from hybrid_eda.resources import recipes_dir

PARAMS_3D = ("vo", "d", "t", "q", "o3")
EDA_RECIPES = sorted(p.name for p in recipes_dir().glob("eda-*.yaml"))
MARS_RECIPES = {
    # name: grid, first and last date, number of dates, MARS types retrieved
    "eda-n80-ml.yaml": ("N80", dt.datetime(2023, 1, 1, 0), dt.datetime(2023, 12, 31, 12), 730, {"fc"}),
    "eda-n80-ml-std.yaml": ("N80", dt.datetime(2023, 1, 1, 0), dt.datetime(2023, 12, 31, 12), 730, {"fc"}),
    "eda-n128-ml.yaml": ("N128", dt.datetime(2024, 7, 1, 0), dt.datetime(2025, 6, 30, 12), 730, {"fc", "an"}),
}
LOCAL_RECIPES = [name for name in EDA_RECIPES if name.endswith("-local.yaml")]
NPOINTS = {"N32": 6114, "N80": 35718, "N128": 88838}


def _load(name: str) -> dict:
    return yaml.safe_load((recipes_dir() / name).read_text())


def _mars_requests(node, found=None) -> list[dict]:
    """Every ``mars:`` request of a recipe's ``input`` tree (YAML anchors already merged)."""
    found = [] if found is None else found
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "mars":
                found.append(dict(value))
            else:
                _mars_requests(value, found)
    elif isinstance(node, list):
        for item in node:
            _mars_requests(item, found)
    return found


def _walk(node, key):
    """Every value stored under ``key`` in a nested recipe."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield node, v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def test_recipes_are_found_and_every_mars_recipe_has_an_offline_twin():
    assert set(MARS_RECIPES) <= set(EDA_RECIPES)
    assert set(LOCAL_RECIPES) == {name.replace(".yaml", "-local.yaml") for name in MARS_RECIPES}
    assert set(EDA_RECIPES) == set(MARS_RECIPES) | set(LOCAL_RECIPES)  # a new recipe must be added to the tests


def test_ensemble_statistics_filter_is_registered_by_entry_point():
    names = {ep.name: ep.value for ep in entry_points(group="anemoi.transform.filters")}
    assert names.get("ensemble-statistics") == "hybrid_eda.data.statistics:EnsembleStatistics", (
        "the ensemble-statistics filter is not installed; run `pip install -e .` after adding the entry point"
    )
    from anemoi.transform.filters import filter_registry

    assert filter_registry.lookup("ensemble-statistics").__name__ == "EnsembleStatistics"


@pytest.mark.parametrize("name", EDA_RECIPES)
def test_recipe_passes_the_anemoi_schema(name):
    from anemoi.datasets.create.recipe import loader_recipe_from_yaml

    recipe = loader_recipe_from_yaml(str(recipes_dir() / name))
    dates = list(recipe.dates)
    assert dates and dates == sorted(dates)
    assert recipe.output.chunking.get("ensembles", 1) == 1  # one member per chunk: selective member reads


@pytest.mark.parametrize("name", sorted(MARS_RECIPES))
def test_mars_requests_expand_offline(name):
    """Dates, param/levelist/number lists and grid of every MARS request, through anemoi's own factorisation."""
    from anemoi.datasets.create.recipe import loader_recipe_from_yaml
    from anemoi.datasets.create.sources.mars.retrieval import (
        _validate_keys,
        _validate_params,
        expand_to_by,
        factorise_requests,
    )

    grid, first, last, n_dates, types = MARS_RECIPES[name]
    dates = list(loader_recipe_from_yaml(str(recipes_dir() / name)).dates)
    assert (dates[0], dates[-1], len(dates)) == (first, last, n_dates)
    requests = _mars_requests(_load(name)["input"])
    assert {r["type"] for r in requests} == types
    fields = set()
    for request in requests:
        _validate_keys([request])
        _validate_params([request])
        for r in factorise_requests(dates, request):
            assert (r["class"], r["stream"], r["expver"], r["levtype"], r["grid"]) == ("od", "elda", "0001", "ml", grid)
            numbers = expand_to_by(r["number"])
            assert [int(n) for n in numbers] == list(range(1, 51)), r["number"]
            params = r["param"] if isinstance(r["param"], (list, tuple)) else [r["param"]]
            levels = [int(v) for v in expand_to_by(r["levelist"])]
            assert levels == (list(range(1, 138)) if "lnsp" not in params else [1])
            step = int(r.get("step", 0))
            assert (r["type"] == "fc") == (step > 0)  # backgrounds: forecasts valid at the date; analyses: step 0
            for base in _base_times(r):
                valid = base + dt.timedelta(hours=step)
                fields.update((valid, r["type"], p, lev) for p in params for lev in levels)
    per_date = {(t, p, lev) for (_, t, p, lev) in fields}
    assert {d for d, *_ in fields} == set(dates)
    assert len(fields) == len(dates) * len(per_date)
    assert len(per_date) == len(types) * (len(PARAMS_3D) * 137 + 1)  # 686 fields (of 50 members) per type


def _base_times(request: dict) -> list[dt.datetime]:
    """The base date-times of a (factorised, hypercube) MARS request: every ``date`` x every ``time``."""
    dates = request["date"] if isinstance(request["date"], (list, tuple)) else [request["date"]]
    times = request["time"] if isinstance(request["time"], (list, tuple)) else [request["time"]]
    return [dt.datetime.strptime(f"{d}{int(t):04d}", "%Y%m%d%H%M") for d in dates for t in times]


# -- a build against a mocked MARS --------------------------------------------------------------------------------
def _grib_messages(request: dict, path: Path) -> None:
    """Write the fields a MARS request asks for (model levels, reduced Gaussian grid) with eccodes."""
    import eccodes
    from anemoi.datasets.create.sources.mars.retrieval import expand_to_by

    n = int(str(request["grid"]).upper().lstrip("N"))
    params = request["param"] if isinstance(request["param"], (list, tuple)) else str(request["param"]).split("/")
    with open(path, "wb") as out:
        for base, number in ((b, n) for b in _base_times(request) for n in expand_to_by(request["number"])):
            for param in params:
                for level in expand_to_by(request["levelist"]):
                    handle = eccodes.codes_grib_new_from_samples(f"reduced_gg_pl_{n}_grib2")
                    eccodes.codes_set(handle, "setLocalDefinition", 1)
                    eccodes.codes_set(handle, "localDefinitionNumber", 1)
                    for key in ("class", "stream", "type", "expver"):
                        eccodes.codes_set(handle, key, str(request[key]))
                    eccodes.codes_set(handle, "productDefinitionTemplateNumber", 1)
                    eccodes.codes_set(handle, "perturbationNumber", int(number))
                    eccodes.codes_set(handle, "numberOfForecastsInEnsemble", 50)
                    eccodes.codes_set(handle, "typeOfLevel", "hybrid")
                    eccodes.codes_set(handle, "level", int(level))
                    eccodes.codes_set(handle, "shortName", param)
                    eccodes.codes_set(handle, "dataDate", int(base.strftime("%Y%m%d")))
                    eccodes.codes_set(handle, "dataTime", int(base.strftime("%H%M")))
                    eccodes.codes_set(handle, "stepUnits", 1)
                    eccodes.codes_set(handle, "step", int(request.get("step", 0)))
                    seed = zlib.crc32(f"{base:%Y%m%d%H}{request['type']}{param}{level}".encode())
                    mean = np.random.default_rng(seed).standard_normal(NPOINTS[f"N{n}"])
                    noise = np.random.default_rng([seed, int(number)]).standard_normal(mean.size)
                    eccodes.codes_set(handle, "bitsPerValue", 24)
                    eccodes.codes_set_values(handle, 250.0 + 5.0 * mean + (1.0 + 0.1 * int(number)) * noise)
                    eccodes.codes_write(handle, out)
                    eccodes.codes_release(handle)


@contextlib.contextmanager
def _mocked_mars(tmp_path: Path):
    """Route anemoi's MARS retrievals to local GRIB files; record the requests."""
    import earthkit.data
    from anemoi.datasets.create.sources.mars import retrieval

    real = retrieval.from_source
    seen = []

    def fake(name, *args, **request):
        if name != "mars":
            return real(name, *args, **request)
        seen.append(request)
        path = tmp_path / f"mars-{len(seen)}.grib"
        _grib_messages(request, path)
        return earthkit.data.from_source("file", str(path))

    retrieval.from_source = fake
    try:
        yield seen
    finally:
        retrieval.from_source = real


def _shrunk(name: str, members: int = 3, levels: int = 2) -> dict:
    """The shipped MARS recipe, for its first two dates, ``members`` members and ``levels`` levels."""
    recipe = _load(name)
    dates = recipe["dates"]
    start = dates["start"] if isinstance(dates["start"], dt.datetime) else dt.datetime.fromisoformat(dates["start"])
    dates["end"] = (start + dt.timedelta(hours=12)).isoformat()
    recipe.pop("common", None)
    for request in _mars_requests(recipe["input"]):
        assert request["number"] == "1/to/50"
    for node, _ in list(_walk(recipe["input"], "mars")):
        node["mars"] = dict(node["mars"], number=f"1/to/{members}")
        if node["mars"]["levelist"] == "1/to/137":
            node["mars"]["levelist"] = f"1/to/{levels}"
    for node, _ in list(_walk(recipe["input"], "ensemble-statistics")):
        node["ensemble-statistics"]["members"] = members
    return recipe


def _absolute_paths(recipe: dict, root: Path) -> dict:
    """Make the twin's relative GRIB paths absolute: earthkit caches open GRIB readers by path, so relative paths
    in builds from different folders of one process would hit another folder's files."""
    for node, _ in list(_walk(recipe["input"], "grib")):
        node["grib"]["path"] = str(root / node["grib"]["path"])
    return recipe


def _build_in_process(recipe: dict, root: Path, name: str) -> str:
    from anemoi.datasets.create.tasks import run_task

    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    store = str(root / f"{name}.zarr")
    for task in ("init", "load", "finalise"):
        run_task(task, recipe=str(path), path=store, overwrite=True)
    return store


def test_n80_mars_recipes_build_against_a_mocked_mars(tmp_path):
    """Member and std stores from the shipped MARS recipes (shrunk): variables, grid, members, std = numpy's."""
    from anemoi.datasets import open_dataset

    with _mocked_mars(tmp_path) as seen:
        members = open_dataset(_build_in_process(_shrunk("eda-n80-ml.yaml"), tmp_path, "members"))
        std = open_dataset(_build_in_process(_shrunk("eda-n80-ml-std.yaml"), tmp_path, "std"))
    assert {(r["grid"], r["stream"], r["type"], r["number"]) for r in seen} == {("N80", "elda", "fc", "1/to/3")}
    expected = {f"{p}_{lev}" for p in PARAMS_3D for lev in (1, 2)} | {"lnsp_1"}
    assert set(members.variables) == expected
    assert members.shape == (2, 11, 3, NPOINTS["N80"]) and members.resolution == "N80"
    assert set(std.variables) == {
        v.replace("_", "_std_", 1) if not v.startswith("lnsp") else "lnsp_std_1" for v in expected
    }
    assert std.shape == (2, 11, 1, NPOINTS["N80"])
    _assert_std_of_members(members, std)


def test_n128_mars_recipe_builds_backgrounds_and_analyses_against_a_mocked_mars(tmp_path):
    from anemoi.datasets import open_dataset

    with _mocked_mars(tmp_path) as seen:
        ds = open_dataset(_build_in_process(_shrunk("eda-n128-ml.yaml", members=2, levels=1), tmp_path, "gen"))
    assert {(r["grid"], r["type"]) for r in seen} == {("N128", "fc"), ("N128", "an")}
    fc = {f"{p}_1" for p in (*PARAMS_3D, "lnsp")}
    assert set(ds.variables) == fc | {v.replace("_1", "_an_1") for v in fc}
    assert ds.shape == (2, 12, 2, NPOINTS["N128"])
    assert not np.allclose(ds[0, ds.name_to_index["t_1"]], ds[0, ds.name_to_index["t_an_1"]])


def _assert_std_of_members(members, std):
    """The stored std equals numpy's std (ddof=1) over the stored members, to float32 precision."""
    for i, name in enumerate(members.variables):
        param, level = name.rsplit("_", 1)
        values = members[:, i].astype(np.float64)  # [dates, members, grid]
        reference = values.std(axis=1, ddof=1)
        stored = std[:, std.name_to_index[f"{param}_std_{level}"], 0]
        # members are stored in float32: their rounding (<= eps |x|) bounds what the two can agree on
        tolerance = 4 * np.finfo(np.float32).eps * np.abs(values).max() + 1e-6 * reference
        assert np.all(np.abs(stored - reference) <= tolerance), name


# -- the offline twins, built with the anemoi-datasets command --------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_eda(tmp_path_factory) -> Path:
    from hybrid_eda.synthetic import SyntheticEDAConfig, write_synthetic_eda

    root = tmp_path_factory.mktemp("twins")
    config = SyntheticEDAConfig(
        grid="N32", levels=2, members=4, start=dt.datetime(2023, 1, 1, 0), end=dt.datetime(2023, 1, 1, 6)
    )
    write_synthetic_eda(config, root / "synthetic-eda")
    return root


def _create(root: Path, name: str) -> str:
    """``anemoi-datasets create`` of the twin as ``hybrid-eda recipes copy`` puts it in ``root`` (dates set to the
    synthetic EDA's), run in ``root``: its relative ``synthetic-eda/grib/...`` paths are read from there."""
    (copied,) = copy_recipes(name, root, force=True)
    recipe = yaml.safe_load(copied.read_text())
    recipe["dates"] = {"start": "2023-01-01T00:00:00", "end": "2023-01-01T06:00:00", "frequency": "6h"}
    copied.write_text(yaml.safe_dump(recipe))
    store = name.replace(".yaml", ".zarr")
    cli = Path(sys.executable).with_name("anemoi-datasets")
    result = subprocess.run(
        [str(cli), "create", name, store, "--overwrite"], cwd=root, capture_output=True, text=True, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return str(root / store)


@pytest.fixture(scope="module")
def twins(synthetic_eda):
    """``twins(name)``: the store of an offline twin, built by ``anemoi-datasets create`` on first use."""
    built: dict[str, str] = {}

    def build(name: str) -> str:
        if name not in built:
            built[name] = _create(synthetic_eda, name)
        return built[name]

    return build


EXPECTED_N32 = {f"{p}_{lev}" for p in PARAMS_3D for lev in (1, 2)} | {"lnsp_1"}


def test_member_twin_builds_with_the_cli(twins):
    from anemoi.datasets import open_dataset

    members = open_dataset(twins("eda-n80-ml-local.yaml"))
    assert set(members.variables) == EXPECTED_N32
    assert members.shape == (2, 11, 4, NPOINTS["N32"]) and members.resolution == "N32"
    assert members.field_shape == (NPOINTS["N32"],)


def test_std_twin_builds_with_the_cli_and_holds_numpys_std(twins):
    from anemoi.datasets import open_dataset

    std = open_dataset(twins("eda-n80-ml-std-local.yaml"))
    assert set(std.variables) == {v.replace("_", "_std_", 1) for v in EXPECTED_N32}
    assert std.shape == (2, 11, 1, NPOINTS["N32"]) and std.resolution == "N32"
    _assert_std_of_members(open_dataset(twins("eda-n80-ml-local.yaml")), std)


def test_generator_twin_builds_with_the_cli(twins):
    from anemoi.datasets import open_dataset

    generator = open_dataset(twins("eda-n128-ml-local.yaml"))
    assert set(generator.variables) == EXPECTED_N32 | {v.replace("_", "_an_", 1) for v in EXPECTED_N32}
    assert generator.shape == (2, 22, 4, NPOINTS["N32"])
    background, analysis = (generator[:, generator.name_to_index[v]] for v in ("t_2", "t_an_2"))
    assert not np.allclose(background, analysis)  # analyses are the updated members, not copies
    spread_bg, spread_an = background.std(axis=1).mean(), analysis.std(axis=1).mean()
    assert spread_an < spread_bg  # the perturbed-observation update reduces the spread


def test_twin_with_fixed_members_selects_them(twins, synthetic_eda):
    """A member store with M fixed numbers (`number:` in the grib sources) holds exactly those members."""
    from anemoi.datasets import open_dataset

    full = open_dataset(twins("eda-n80-ml-local.yaml"))
    recipe = _load("eda-n80-ml-local.yaml")
    recipe["dates"] = {"start": "2023-01-01T00:00:00", "end": "2023-01-01T06:00:00", "frequency": "6h"}
    for node, _ in list(_walk(recipe["input"], "grib")):
        node["grib"]["number"] = [2, 4]
    subset = open_dataset(_build_in_process(_absolute_paths(recipe, synthetic_eda), synthetic_eda, "fixed"))
    assert subset.shape[2] == 2
    np.testing.assert_array_equal(subset[:], full[:][:, :, [1, 3]])


def test_std_twin_stops_on_a_missing_member(synthetic_eda):
    """Bad input gets a clear error: a twin whose sources miss a member for one field fails naming it."""
    recipe = _load("eda-n80-ml-std-local.yaml")
    recipe["dates"] = {"start": "2023-01-01T00:00:00", "end": "2023-01-01T00:00:00", "frequency": "6h"}
    for node, _ in list(_walk(recipe["input"], "ensemble-statistics")):
        node["ensemble-statistics"]["members"] = 5
    with pytest.raises(ValueError, match=r"has 4 members .* but 5 were expected"):
        _build_in_process(_absolute_paths(recipe, synthetic_eda), synthetic_eda, "missing")
