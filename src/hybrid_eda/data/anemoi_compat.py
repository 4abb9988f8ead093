"""The one anemoi-datasets version whose private internals the store builder and the member subsets use.

:mod:`hybrid_eda.data.store_build` reuses anemoi-datasets' statistics collectors (``_Collector``,
``_ConstantsCollector`` and their private attributes) and gridded creator, and :mod:`hybrid_eda.data.members`
replaces ``anemoi.datasets.usage.gridded.ensemble.Number`` by a view built on ``usage.forwards.Forwards`` and
``usage.debug.Node``. None of these is public API: they were read from, and are tested against, anemoi-datasets
0.5.47 only, so pyproject pins that version and both modules import this one before anything of anemoi-datasets.
Importing it checks the installed version (:func:`require_anemoi_datasets`): another version stops there with a
message that names both versions and the fix, instead of an ``ImportError`` from a renamed internal or, worse, a
store built with silently different internals. Nothing else imports it, so every other command works with any
anemoi-datasets: the ``lorenz96`` source and the ``ensemble-statistics`` filter use anemoi's public plugin API.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["REQUIRED_ANEMOI_DATASETS", "IncompatibleAnemoiError", "require_anemoi_datasets"]

#: The anemoi-datasets release whose internals :mod:`~hybrid_eda.data.store_build` and
#: :mod:`~hybrid_eda.data.members` were written against (pinned in pyproject.toml).
REQUIRED_ANEMOI_DATASETS = "0.5.47"


class IncompatibleAnemoiError(RuntimeError):
    """The installed anemoi package is not the version whose private internals hybrid-eda relies on."""


def installed_version(distribution: str = "anemoi-datasets") -> str | None:
    """Version of an installed distribution, or ``None`` when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def require_anemoi_datasets(installed: str | None = None) -> None:
    """Stop unless anemoi-datasets :data:`REQUIRED_ANEMOI_DATASETS` is installed.

    Parameters
    ----------
    installed : str, optional
        The installed version (default: read from the package metadata).

    Raises
    ------
    IncompatibleAnemoiError
        If another version, or none, is installed.
    """
    installed = installed_version() if installed is None else installed
    if installed == REQUIRED_ANEMOI_DATASETS:
        return
    found = "is not installed" if installed is None else f"{installed} is installed"
    raise IncompatibleAnemoiError(
        f"hybrid-eda's store builder and member subsets use private internals of anemoi-datasets "
        f"{REQUIRED_ANEMOI_DATASETS}, but anemoi-datasets {found}; "
        f"fix: pip install anemoi-datasets=={REQUIRED_ANEMOI_DATASETS}"
    )


require_anemoi_datasets()
