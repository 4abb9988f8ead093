"""Where the package's shipped resources (Hydra configs, dataset recipes) live.

In a wheel they are installed inside the package (``hybrid_eda/configs``, ``hybrid_eda/recipes``); in a source
checkout (editable install, tests) they are the top-level ``configs/`` and ``recipes/`` folders.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["configs_dir", "recipes_dir"]

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
