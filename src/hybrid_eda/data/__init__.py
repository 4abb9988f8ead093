"""Data plumbing between hybrid-eda and anemoi-datasets.

``lorenz96_source``
    The ``lorenz96`` anemoi-datasets source (entry point group ``anemoi.datasets.create.sources``): turns a
    Lorenz-96 EDA archive (:class:`hybrid_eda.l96.archive.EDAArchive`) into fields on a ring of grid points,
    members on the ensemble dimension, so ``anemoi-datasets create recipes/l96-eda.yaml l96.zarr`` builds a
    zarr store that anemoi-training reads.

Nothing here imports anemoi at package import time; the source module does when it is loaded.
"""
