"""Where the package's shipped resources (Hydra configs, dataset recipes, inference configs) live.

In a wheel they are installed inside the package (``hybrid_eda/configs``, ``hybrid_eda/recipes``); in a source
checkout (editable install, tests) they are the top-level ``configs/`` and ``recipes/`` folders. The
anemoi-inference configs are package data in both (``hybrid_eda/inference/configs``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["configs_dir", "find_shipped", "inference_configs_dir", "recipes_dir", "shipped"]

_PACKAGE = Path(__file__).resolve().parent


def _resource(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"hybrid-eda cannot find its '{name}' folder next to {_PACKAGE}; reinstall the package with "
        "`pip install hybrid-eda` (or `pip install .` from a checkout)."
    )


def configs_dir() -> Path:
    """Folder holding the Hydra configs used by ``anemoi-training train --config-name=...``."""
    return _resource("configs")


def recipes_dir() -> Path:
    """Folder holding the anemoi-datasets recipes."""
    return _resource("recipes")


def inference_configs_dir() -> Path:
    """Folder holding the anemoi-inference configs (templates of :mod:`hybrid_eda.inference`)."""
    return _PACKAGE / "inference" / "configs"


def shipped(folder: Path) -> dict[str, Path]:
    """The YAML files of a resource folder by name (file name without ``.yaml``), sorted."""
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def find_shipped(folder: Path, name: str, kind: str, listing: str) -> Path:
    """The shipped YAML file ``name`` (with or without ``.yaml``) of ``folder``.

    Raises
    ------
    ValueError
        If there is none; the message lists the names there are and the command ``listing`` that shows them.
    """
    available = shipped(folder)
    stem = name.removesuffix(".yaml")
    if stem not in available:
        raise ValueError(f"no {kind} named '{name}'; shipped: {', '.join(available)} (see `{listing}`)")
    return available[stem]
