"""``hybrid-eda recipes``: the anemoi-datasets recipes shipped inside the package, for installed users.

    hybrid-eda recipes                          list them, one line each
    hybrid-eda recipes copy NAME|all [--to DIR] [--force]   copy one or all into a folder (default: here)
    hybrid-eda recipes path NAME                print the recipe's absolute path, e.g. for
                                                anemoi-datasets create "$(hybrid-eda recipes path l96-eda)" l96.zarr

A recipe's relative paths (the offline twins' ``synthetic-eda/grib/...``, a ``lorenz96`` ``archive:``) are read
from the folder where ``anemoi-datasets create`` runs, not from the recipe's folder, so a copied recipe and the
shipped one (``path``) build the same store when run from the same folder.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

from hybrid_eda.resources import find_shipped, recipes_dir, shipped

__all__ = ["add_parser", "copy_recipes", "describe_recipes"]

_LISTING = "hybrid-eda recipes"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``recipes`` command on the top-level ``hybrid-eda`` parser."""
    parser = subparsers.add_parser(
        "recipes",
        help="list, copy or locate the shipped anemoi-datasets recipes",
        description="The anemoi-datasets recipes shipped with hybrid-eda. Without an action, list them.",
    )
    parser.set_defaults(func=_run_list)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="list the recipes with a one-line description (the default)")
    listing.set_defaults(func=_run_list)
    copy = actions.add_parser("copy", help="copy one recipe, or all, into a folder")
    copy.add_argument("name", help="recipe name (as listed, .yaml optional) or 'all'")
    copy.add_argument("--to", type=Path, default=Path("."), help="destination folder, made if missing (default: .)")
    copy.add_argument("--force", action="store_true", help="overwrite files that already exist")
    copy.set_defaults(func=_run_copy)
    path = actions.add_parser("path", help="print the absolute path of a shipped recipe")
    path.add_argument("name", help="recipe name (as listed, .yaml optional)")
    path.set_defaults(func=_run_path)


def describe_recipes() -> dict[str, str]:
    """One-line description (the recipe's ``description:``) of every shipped recipe, by name."""
    descriptions = {}
    for name, path in shipped(recipes_dir()).items():
        recipe = yaml.safe_load(path.read_text()) or {}
        descriptions[name] = " ".join(str(recipe.get("description", "")).split())
    return descriptions


def copy_recipes(name: str, destination: Path, *, force: bool = False) -> list[Path]:
    """Copy the recipe ``name`` (or every recipe for ``"all"``) into ``destination``; returns the new files.

    Nothing is copied unless every target can be written: an existing file stops the copy (``force`` overwrites).

    Raises
    ------
    ValueError
        For an unknown recipe, a destination that is not a folder, or files that exist without ``force``.
    """
    sources = (
        list(shipped(recipes_dir()).values())
        if name == "all"
        else [find_shipped(recipes_dir(), name, "recipe", _LISTING)]
    )
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"--to {destination} is a file, not a folder; give a folder to copy the recipes into")
    targets = [destination / source.name for source in sources]
    existing = [target for target in targets if target.exists()]
    if existing and not force:
        names = ", ".join(target.name for target in existing)
        raise ValueError(
            f"{names} already in {destination.resolve()}; pass --force to overwrite, or --to another folder"
        )
    destination.mkdir(parents=True, exist_ok=True)
    for source, target in zip(sources, targets, strict=True):
        shutil.copyfile(source, target)
    return targets


def _run_list(args: argparse.Namespace) -> int:
    descriptions = describe_recipes()
    width = max(map(len, descriptions))
    print(f"anemoi-datasets recipes shipped with hybrid-eda (in {recipes_dir()}):")
    for name, description in descriptions.items():
        print(f"  {name:<{width}}  {description}")
    print("Build one: hybrid-eda recipes copy NAME && anemoi-datasets create NAME.yaml NAME.zarr")
    return 0


def _run_copy(args: argparse.Namespace) -> int:
    for target in copy_recipes(args.name, args.to, force=args.force):
        print(target)
    return 0


def _run_path(args: argparse.Namespace) -> int:
    print(find_shipped(recipes_dir(), args.name, "recipe", _LISTING).resolve())
    return 0
