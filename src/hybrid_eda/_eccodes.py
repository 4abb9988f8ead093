"""Import eccodes in a way that is safe next to pyproj.

eccodes' Python wheels load eckitlib's bundled PROJ library with ``RTLD_GLOBAL`` (through findlibs); a pyproj
imported afterwards binds to it and the interpreter then segfaults at exit (exit code 139, after all work is
done, so a GRIB build followed by ``anemoi-datasets`` in one process "fails"). Loading pyproj first avoids it.
Every module of the package that needs eccodes imports it from here.
"""

import pyproj  # noqa: F401  (must come first, see above)

# isort: split
import eccodes

__all__ = ["eccodes"]
