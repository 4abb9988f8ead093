"""What the variance emulator's runner needs from a checkpoint, read from anemoi's own metadata.

An ``inference-*.ckpt`` written by ``anemoi-training`` for ``--config-name=variance_emulator_*`` already holds
everything (nothing is added at training time):

==================  ===================================================================================
what                where in ``anemoi-metadata/anemoi.json`` (and the supporting arrays)
==================  ===================================================================================
the model           ``config.model.model._target_`` (``hybrid_eda.models.VarianceEmulator``), checked
                    before the pickled model is unpickled
variables           the predictor's ``variables`` (``t_137``, ...), one output field each
GRIB identity       ``dataset.<members>.variables_metadata[name]``: ``grib.paramId``/``shortName``,
                    ``mars.levelist``/``levtype`` (from the GRIB the member store was built from)
grid                supporting arrays ``<members>/latitudes``, ``longitudes``: rebuilt here as the
                    reduced/octahedral Gaussian grid they are (ring sizes from the latitude runs)
M of training       ``config.dataloader.members_per_sample``
family              the loaded predictor's ``family`` (``lognormal`` or ``normal``)
==================  ===================================================================================

The checks and the GRIB and grid reading are shared with the member generator (:mod:`.checkpoint_metadata`,
whose ``FieldId`` is also importable from here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_eda.inference.checkpoint_metadata import FieldId, ModelKind, dataset_grid, field_id, open_checkpoint
from hybrid_eda.synthetic.grids import GaussianGrid

__all__ = ["MIN_MEMBERS", "VARIANCE_EMULATOR", "FieldId", "VarianceCheckpoint", "read_variance_checkpoint"]

LOGGER = logging.getLogger(__name__)

#: The emulator's set pooling needs a sample std, so at least two members.
MIN_MEMBERS = 2
#: The variance emulator as the checkpoint checks name it (``model.model._target_`` of its training configs).
VARIANCE_EMULATOR = ModelKind(
    what="variance emulator",
    config="variance_emulator",
    targets=("hybrid_eda.models.VarianceEmulator",),
    other_runners="runner: member-generator for member generator checkpoints, runner: default for other models",
)


@dataclass(frozen=True)
class VarianceCheckpoint:
    """An inference checkpoint of the variance emulator and what its metadata says.

    ``predictor`` is the loaded :class:`~hybrid_eda.models.VariancePredictor`; ``fields`` are its variables in its
    own field order, ``grid`` the Gaussian grid of the member store it was trained on.
    """

    path: Path
    predictor: Any
    fields: tuple[FieldId, ...]
    grid: GaussianGrid
    training_members: int | None
    run_id: str | None

    @property
    def family(self) -> str:
        return self.predictor.family


def read_variance_checkpoint(checkpoint: str | Path) -> VarianceCheckpoint:
    """Check, load and describe a variance emulator checkpoint (a file, or a run folder: its newest one).

    Raises
    ------
    ValueError
        If it is not an anemoi inference checkpoint, is the checkpoint of another model (e.g. ``l96_forecaster``),
        or lacks the metadata the runner needs.
    """
    from hybrid_eda.models import load_variance_predictor

    opened = open_checkpoint(checkpoint, VARIANCE_EMULATOR)
    path, metadata, config = opened.path, opened.metadata, opened.metadata.get("config") or {}
    predictor = load_variance_predictor(path)
    members = opened.model.get("input_dataset", "members")
    described = (metadata.get("dataset") or {}).get(members) or {}
    variables_metadata = described.get("variables_metadata") or {}
    fields = tuple(field_id(name, variables_metadata.get(name)) for name in predictor.variables)
    grid = dataset_grid(path, opened.arrays.get(members) or {}, members)
    trained_m = (config.get("dataloader") or {}).get("members_per_sample")
    LOGGER.info("variance emulator %s: %d fields on %s, %s, trained on M=%s", path, len(fields), grid.name,
                predictor.family, trained_m)  # fmt: skip
    return VarianceCheckpoint(path=path, predictor=predictor, fields=fields, grid=grid,
                              training_members=None if trained_m is None else int(trained_m),
                              run_id=metadata.get("run_id"))  # fmt: skip
