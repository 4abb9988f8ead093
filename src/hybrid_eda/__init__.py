"""hybrid-eda: machine learning for Ensemble Data Assimilation, as a plugin for ECMWF's Anemoi framework.

Importing the package is cheap (no numpy/torch at import), so the CLI can set thread counts first.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hybrid-eda")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
