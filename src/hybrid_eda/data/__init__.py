"""Data plumbing between hybrid-eda and anemoi-datasets.

``lorenz96_source``
    The ``lorenz96`` anemoi-datasets source (entry point group ``anemoi.datasets.create.sources``): turns a
    Lorenz-96 EDA archive (:class:`hybrid_eda.l96.archive.EDAArchive`) into fields on a ring of grid points,
    members on the ensemble dimension, so ``anemoi-datasets create recipes/l96-eda.yaml l96.zarr`` builds a
    zarr store that anemoi-training reads.
``statistics``
    The ``ensemble-statistics`` anemoi-transform filter (entry point group ``anemoi.transform.filters``): the
    N-member std (mean, var, log-std) of every field, computed once at build time, streamed member by member.
``members``
    ``MemberSubset``: M of N members (fixed or seeded random) read selectively in training, replacing
    anemoi-datasets 0.5.47's ``Number`` view where it crashes; ``check_store_pair`` for input/target stores.
``grids``
    Grid files computed locally so that anemoi never downloads one (``use_local_grids``).

Nothing here imports anemoi at package import time; each module does when it is loaded.
"""
