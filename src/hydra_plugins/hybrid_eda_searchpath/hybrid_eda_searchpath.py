"""Hydra search-path plugin: after ``pip install hybrid-eda``, ``anemoi-training train --config-name=<ours>``
finds the package's configs from any directory (Hydra discovers every module under ``hydra_plugins``)."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class HybridEDASearchPathPlugin(SearchPathPlugin):
    """Append ``hybrid_eda``'s config folder to Hydra's search path (after the caller's own paths)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from hybrid_eda.resources import configs_dir

        search_path.append(provider="hybrid-eda", path=f"file://{configs_dir()}")
