"""Shared test set-up.

pyproj must load its PROJ library before eccodes (see ``hybrid_eda._eccodes``): several tests import eccodes
directly, and the whole pytest process would otherwise crash at exit after every test passed.
"""

import pyproj  # noqa: F401
