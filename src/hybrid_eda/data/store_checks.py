"""Checks of a store build's inputs, made before anemoi-datasets runs, with errors that name the fix.

* :func:`read_recipe`: the recipe exists, is a file, is YAML and a mapping (anemoi-datasets would stop with
  ``TypeError: ... argument after ** must be a mapping`` or a YAML parser trace);
* :func:`check_store_path`: the store ends in ``.zarr``; an existing path is replaced only with ``overwrite`` and only
  when it is a zarr store (or an empty folder), never another folder or file;
* :func:`explain_grib_error`: a GRIB decoding error during ``load`` (``PrematureEndOfFileError``) named by the file of
  the recipe that is truncated or corrupted, found by walking the GRIB message headers (no decoding).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hybrid_eda.errors import UserInputError

__all__ = ["check_store_path", "explain_grib_error", "grib_file_problem", "is_zarr_store", "read_recipe"]

#: Files or folders whose presence makes a path a zarr store (zarr v2 and v3).
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")
_RECIPE_HINT = "give an anemoi-datasets recipe (a YAML mapping with dates:, input:, ...); see `hybrid-eda recipes`"


def read_recipe(recipe: str | Path) -> dict[str, Any]:
    """The recipe file as a mapping, or a :class:`UserInputError` that says what is wrong with it."""
    import yaml

    path = Path(recipe).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"recipe {path} does not exist; {_RECIPE_HINT}")
    if not path.is_file():
        raise UserInputError(f"recipe {path} is a folder, not a file; {_RECIPE_HINT}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise UserInputError(f"recipe {path} is not a text file; {_RECIPE_HINT}") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or "cannot be parsed"
        raise UserInputError(f"recipe {path} is not valid YAML{at} ({problem}); fix the YAML syntax") from None
    if not isinstance(loaded, dict):
        kind = "empty" if loaded is None else f"a YAML {type(loaded).__name__}, not a mapping"
        raise UserInputError(f"recipe {path} is {kind}; {_RECIPE_HINT}")
    return loaded


def is_zarr_store(path: Path) -> bool:
    """Whether ``path`` is a folder holding a zarr group or array."""
    return path.is_dir() and any((path / marker).exists() for marker in _ZARR_MARKERS)


def check_store_path(path: str | Path, overwrite: bool) -> Path:
    """Refuse a store path that anemoi-datasets cannot write or that holds something not asked to be replaced."""
    path = Path(path).expanduser()
    if path.suffix != ".zarr":
        raise UserInputError(f"the store path {path} must end in .zarr (e.g. {path.name or 'store'}.zarr)")
    if not path.exists():
        existing = path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise UserInputError(f"cannot create the store {path}: {existing} is a file, not a folder")
        return path
    if not path.is_dir():
        raise UserInputError(f"{path} is a file, not a zarr store; move it away or choose another store path")
    if not overwrite:
        raise UserInputError(f"the store {path} already exists; pass --overwrite to replace it, or choose another path")
    if not is_zarr_store(path) and any(path.iterdir()):
        raise UserInputError(
            f"{path} is a folder that is not a zarr store; --overwrite replaces only a store: move the folder away "
            "or choose another path"
        )
    return path


def grib_file_problem(path: str | Path) -> str | None:
    """What makes a GRIB file unreadable (truncated, corrupted message), from its message headers; ``None`` if fine.

    Reads 16 bytes at each message start and 4 at each end (``GRIB`` ... ``7777``); GRIB 1 messages whose length
    field is extended (over 8 MiB) are not checked.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "it is empty"
    offset = 0
    with path.open("rb") as handle:
        while offset < size:
            handle.seek(offset)
            head = handle.read(16)
            if head[:4] != b"GRIB":
                return None if offset else "it does not start with a GRIB message"
            if len(head) < 16:
                return f"it is truncated: the message at byte {offset} has no complete header"
            edition = head[7]
            if edition == 2:
                length = int.from_bytes(head[8:16], "big")
            elif edition == 1 and not head[4] & 0x80:
                length = int.from_bytes(head[4:7], "big")
            else:
                return None
            if offset + length > size:
                return (
                    f"it is truncated: the message at byte {offset} needs {length} bytes, the file ends "
                    f"{size - offset} bytes after its start"
                )
            handle.seek(offset + length - 4)
            if handle.read(4) != b"7777":
                return f"it is corrupted: the message at byte {offset} does not end with 7777"
            offset += length
    return None


def _grib_paths(recipe: Any) -> Iterator[str]:
    """The ``path`` patterns of every ``grib:`` source in a recipe (any nesting)."""
    if isinstance(recipe, dict):
        for key, value in recipe.items():
            if key == "grib" and isinstance(value, dict):
                paths = value.get("path", [])
                yield from [paths] if isinstance(paths, str) else [p for p in paths if isinstance(p, str)]
            else:
                yield from _grib_paths(value)
    elif isinstance(recipe, list):
        for item in recipe:
            yield from _grib_paths(item)


def explain_grib_error(
    err: BaseException, recipe: dict[str, Any] | None, store: str | Path, step: str, store_left: bool = True
) -> UserInputError:
    """A one-line error for a GRIB decoding failure of ``step``: which file of the recipe is broken, and the fix."""
    broken = []
    for pattern in dict.fromkeys(_grib_paths(recipe)):
        for name in sorted(glob.glob(re.sub(r"\{[^}]*\}", "*", pattern))):
            problem = grib_file_problem(name)
            if problem is not None:
                broken.append(f"{name} ({problem})")
    what = f"GRIB file {broken[0]}" if broken else f"a GRIB file of the recipe ({type(err).__name__}: {err})"
    more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
    again = "with --overwrite (this one is incomplete)" if store_left else "(nothing was written)"
    return UserInputError(
        f"{step} of {store} cannot read {what}{more}; re-write or re-download the file, then build the store {again}"
    )
