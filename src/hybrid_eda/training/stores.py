"""The embedded data of the variance emulator in one command: a synthetic EDA, its member store and std store.

    hybrid-eda variance-data [--out .] [--grid O32] [--levels 5] [--members 50] \\
        [--start 2023-01-01T00] [--end 2023-01-31T18] [--seed 0] [--set errors.front_factor=4 ...]

(the options of ``hybrid-eda synthetic``, with the defaults of the embedded training data)

writes, under ``--out``::

    synthetic-eda/       the synthetic EDA (GRIB; truth and sigma_b for the evaluation), hybrid_eda.synthetic
    eda-members.zarr     N members per date       (recipes/eda-n80-ml-local.yaml, streamed by member)
    eda-std.zarr         their N-member std       (recipes/eda-n80-ml-std-local.yaml)
    eda-*-local.yaml     the recipes as run (dates and absolute GRIB paths filled in)

which is what ``anemoi-training train --config-name=variance_emulator_synthetic`` reads from the current folder
(defaults: its date splits). The shipped recipes are used unchanged but for their dates and paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

LOGGER = logging.getLogger(__name__)

MEMBERS_STORE, SPREAD_STORE, SYNTHETIC_DIR = "eda-members.zarr", "eda-std.zarr", "synthetic-eda"
RECIPES = {MEMBERS_STORE: "eda-n80-ml-local", SPREAD_STORE: "eda-n80-ml-std-local"}


@dataclasses.dataclass(frozen=True)
class VarianceStores:
    """Paths of the synthetic EDA and its two stores."""

    synthetic: Path
    members: Path
    spread: Path


def _map_grib_sources(node: Any, update: Callable[[dict], dict | None]) -> Any:
    """The recipe ``node`` with every ``grib`` source's options replaced by ``update(options)``; a source for
    which it returns None is dropped from its list (``join``)."""
    if isinstance(node, list):
        kept = [_map_grib_sources(value, update) for value in node]
        return [value for value in kept if value is not None]
    if not isinstance(node, dict):
        return node
    grib = node.get("grib")
    if isinstance(grib, dict):
        options = update(grib)
        return None if options is None else {**node, "grib": options}
    return {key: _map_grib_sources(value, update) for key, value in node.items()}


def _local_source(grib: dict, root: Path, variables: Sequence[str]) -> dict | None:
    """A ``grib`` source reading only ``variables`` (None if it reads none of them), its path absolute under
    ``root``."""
    grib = dict(grib)
    if "param" in grib:
        grib["param"] = [p for p in grib["param"] if p in variables]
        if not grib["param"]:
            return None
    if "path" in grib and not Path(grib["path"]).is_absolute():
        grib["path"] = str(root / grib["path"])
    return grib


def local_recipe(name: str, root: Path, config: Any) -> dict:
    """The shipped recipe ``name`` with the dates of ``config`` (a SyntheticEDAConfig) and absolute paths."""
    from hybrid_eda.resources import recipes_dir

    recipe = yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text())
    dates = config.dates  # a property
    recipe["dates"] = {
        "start": dates[0].isoformat(),
        "end": dates[-1].isoformat(),
        "frequency": f"{int(config.frequency_hours)}h",
    }
    variables = tuple(config.variables)
    recipe["input"] = _map_grib_sources(recipe["input"], lambda grib: _local_source(grib, root, variables))
    return recipe


def make_variance_stores(out_dir: str | Path, config: Any, *, overwrite: bool = False) -> VarianceStores:
    """Write the synthetic EDA of ``config`` (a :class:`~hybrid_eda.synthetic.SyntheticEDAConfig`) and build both
    stores under ``out_dir``.

    Raises
    ------
    FileExistsError
        If a store exists and ``overwrite`` is False.
    """
    from anemoi.datasets.create.tasks import run_task

    from hybrid_eda.data.store_build import CREATE_STEPS, run_steps
    from hybrid_eda.synthetic import write_synthetic_eda

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for store in RECIPES:
        if (out / store).exists() and not overwrite:
            raise FileExistsError(f"{out / store} exists; pass --overwrite to rebuild it")
    start = time.perf_counter()
    write_synthetic_eda(config, out / SYNTHETIC_DIR, overwrite=overwrite)
    LOGGER.info("synthetic EDA written in %.1f s", time.perf_counter() - start)
    for store, name in RECIPES.items():
        recipe_path = out / f"{name}.yaml"
        recipe_path.write_text(yaml.safe_dump(local_recipe(name, out, config), sort_keys=False))
        start = time.perf_counter()
        if store == MEMBERS_STORE:
            run_steps(CREATE_STEPS, out / store, recipe_path, overwrite=True)
        else:
            for task in ("init", "load", "finalise"):
                run_task(task, recipe=str(recipe_path), path=str(out / store), overwrite=True)
        LOGGER.info("%s built in %.1f s", store, time.perf_counter() - start)
    return VarianceStores(out / SYNTHETIC_DIR, out / MEMBERS_STORE, out / SPREAD_STORE)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybrid_eda.synthetic.cli import add_eda_arguments

    parser.add_argument("--out", default=".", help="folder of the stores (default: the current one)")
    add_eda_arguments(parser, levels=5, members=50, end="2023-01-31T18")
    parser.add_argument("--overwrite", action="store_true", help="replace stores that already exist")


def _run(args: argparse.Namespace) -> int:
    from hybrid_eda.synthetic.cli import config_from_args

    stores = make_variance_stores(args.out, config_from_args(args), overwrite=args.overwrite)
    print(f"members: {stores.members}\nspread:  {stores.spread}\nsynthetic EDA: {stores.synthetic}")
    return 0


def add_parser(subparsers: Any) -> None:
    """``hybrid-eda variance-data``: the same as ``python -m hybrid_eda.training.stores``."""
    parser = subparsers.add_parser(
        "variance-data",
        help="make the variance emulator's embedded training data (synthetic EDA, member and std stores)",
        description=__doc__.split("\n")[0],
    )
    _add_arguments(parser)
    parser.set_defaults(func=_run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybrid_eda.training.stores``: the ``hybrid-eda variance-data`` command."""
    from hybrid_eda.cli import main as cli_main

    return cli_main(["variance-data", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
