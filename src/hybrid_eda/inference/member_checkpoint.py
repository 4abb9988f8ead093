"""What the member generator's runner needs from a checkpoint: the generator, its fields and grid, from anemoi metadata.

The only function here that touches a trained model is :func:`read_member_checkpoint`; the runner
(:mod:`.member_runner`) takes any :class:`MemberCheckpoint`, so it runs as well on an untrained
:class:`~hybrid_eda.models.member_generator_core.MemberGeneratorCore` (:func:`from_core`, tests and baselines).

==================  ===================================================================================
what                where in ``anemoi-metadata/anemoi.json`` (and the supporting arrays)
==================  ===================================================================================
the model           ``config.model.model._target_`` (:data:`MODEL_TARGETS`), checked before unpickling
the generator       ``hybrid_eda.models.load_member_generator(checkpoint)``: ``.generate(backgrounds, guides,
                    n, generator, *, guide_backgrounds)`` in physical units
variables           the generator's ``variables`` (else the dataset's), one GRIB field each
GRIB identity       ``dataset.<name>.variables_metadata[variable]``: ``grib.paramId``, ``mars.levelist`` ...
grid                supporting arrays ``<name>/latitudes``, ``longitudes`` (the reduced Gaussian grid)
==================  ===================================================================================
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_eda.inference.checkpoint_metadata import FieldId, ModelKind, dataset_grid, field_id, open_checkpoint
from hybrid_eda.synthetic.grids import GaussianGrid

__all__ = ["MEMBER_GENERATOR", "MODEL_TARGETS", "MemberCheckpoint", "from_core", "read_member_checkpoint"]

LOGGER = logging.getLogger(__name__)

#: ``model.model._target_`` of the member generator's anemoi adapter.
MODEL_TARGETS = ("hybrid_eda.models.MemberGenerator",)
#: The member generator as the checkpoint checks name it.
MEMBER_GENERATOR = ModelKind(
    what="member generator",
    config="member_generator",
    targets=MODEL_TARGETS,
    other_runners="runner: variance-emulator for variance emulator checkpoints, runner: default for forecasters",
)


@dataclass(frozen=True)
class MemberCheckpoint:
    """A member generator and what the runner needs to read and write its fields.

    ``generator.generate(backgrounds[k, G, F], guide_analyses[N_s, G, F], n, torch.Generator, *,
    guide_backgrounds[N_s, G, F])`` returns the ``[n, G, F]`` members (or an object with ``.members``), physical
    units; ``fields`` are its (analysis) variables in its own order, ``grid`` the Gaussian grid it runs on;
    ``background_names`` the names of the same fields' backgrounds in a dataset (default: the fields' names; the
    anemoi adapter's stores name them apart, ``t_an_1`` and ``t_1``), used to read backgrounds from a dataset.
    """

    path: Path | None
    generator: Any
    fields: tuple[FieldId, ...]
    grid: GaussianGrid
    run_id: str | None = None
    background_names: tuple[str, ...] | None = None
    uses_observations: bool = False

    @property
    def background_fields(self) -> tuple[FieldId, ...]:
        """The fields with their backgrounds' dataset names (same GRIB identity)."""
        if self.background_names is None:
            return self.fields
        return tuple(dataclasses.replace(f, name=n) for f, n in zip(self.fields, self.background_names, strict=True))


def from_core(core: Any, fields: tuple[FieldId, ...], grid: GaussianGrid) -> MemberCheckpoint:
    """A :class:`MemberCheckpoint` of a generator in memory (e.g. an untrained core) on ``grid``."""
    if len(fields) != getattr(core, "n_variables", len(fields)) or grid.npoints != getattr(
        core, "n_grid", grid.npoints
    ):
        raise ValueError(
            f"the generator is built for {getattr(core, 'n_variables', '?')} variables on "
            f"{getattr(core, 'n_grid', '?')} points, not {len(fields)} fields on {grid.name} ({grid.npoints} points)"
        )
    return MemberCheckpoint(path=None, generator=core, fields=tuple(fields), grid=grid)


def _grib_id(entry: dict[str, Any] | None) -> bool:
    return bool(((entry or {}).get("grib") or {}).get("paramId"))


def _dataset_entry(metadata: dict[str, Any], arrays: dict[str, Any], variables: list[str] | None):
    """The (name, description, supporting arrays) of the dataset that holds the generator's variables."""
    datasets = metadata.get("dataset") or {}
    if "variables_metadata" in datasets:  # a single-dataset checkpoint
        datasets = {"data": datasets}
    for name, described in datasets.items():
        held = (described or {}).get("variables_metadata") or {}
        if held and (variables is None or all(v in held for v in variables)):
            points = arrays.get(name) or arrays
            return name, described, points
    raise ValueError(
        "the checkpoint's metadata describes no dataset with GRIB metadata of its variables; train on stores built "
        "from GRIB (recipes/eda-*-ml*.yaml) so that anemoi records them"
    )


def read_member_checkpoint(checkpoint: str | Path) -> MemberCheckpoint:
    """Check, load and describe a member generator checkpoint (a file, or a run folder: its newest one).

    Raises
    ------
    ValueError
        If it is not an anemoi inference checkpoint, is a checkpoint of another model (e.g. the variance emulator),
        or lacks the metadata the runner needs.
    """
    opened = open_checkpoint(checkpoint, MEMBER_GENERATOR)
    path, metadata, arrays = opened.path, opened.metadata, opened.arrays
    try:
        from hybrid_eda.models import load_member_generator
    except ImportError as err:  # pragma: no cover - the adapter ships with the package
        raise ValueError(f"this installation cannot load member generator checkpoints ({err})") from err
    generator = load_member_generator(path)
    variables = list(getattr(generator, "variables", None) or []) or None
    background_names = list(getattr(generator, "background_variables", None) or []) or None
    name, described, points = _dataset_entry(metadata, arrays, variables)
    held = described["variables_metadata"]
    variables = variables or list(described.get("variables") or held)
    pairs = zip(variables, background_names or variables, strict=True)
    # an analysis renamed in the store (t_an_1) may have lost its GRIB keys: its background's (t_1) are the same field
    fields = tuple(dataclasses.replace(field_id(b, held.get(b)), name=v) if not _grib_id(held.get(v)) and held.get(b)
                   else field_id(v, held.get(v)) for v, b in pairs)  # fmt: skip
    grid = dataset_grid(path, points, name)
    uses_observations = bool(getattr(generator, "uses_observations", False))
    LOGGER.info("member generator %s: %d fields on %s", path, len(fields), grid.name)
    return MemberCheckpoint(path=path, generator=generator, fields=fields, grid=grid, run_id=metadata.get("run_id"),
                            background_names=None if not background_names else tuple(background_names),
                            uses_observations=uses_observations)  # fmt: skip


def _test_stores(metadata: dict[str, Any]) -> tuple[list[Path], str | None]:
    """The stores and the start date of the test split of the checkpoint's training config (any dataset names)."""
    try:
        splits = metadata["config"]["dataloader"]["test"]["datasets"]
    except (KeyError, TypeError):
        return [], None
    stores, start = [], None
    for split in (splits or {}).values():
        if not isinstance(split, dict):
            continue
        source = split.get("dataset_config", split)
        source = source.get("dataset") if isinstance(source, dict) else source
        if isinstance(source, str):
            stores.append(Path(source))
        start = start or split.get("start")
    return stores, None if start is None else str(start)


#: Where a synthetic EDA keeps each date's observations on the grid (hybrid_eda.synthetic.observation_grib).
OBSERVATIONS_GRIB = "synthetic-eda/grib/obs_{date:strftime(%Y%m%d%H)}.grib"


def _trained_with_observations(metadata: dict[str, Any]) -> bool:
    """Whether the checkpoint's training config maps analysis variables to observations (model.model.observations)."""
    try:
        return bool(metadata["config"]["model"]["model"].get("observations"))
    except (KeyError, TypeError, AttributeError):
        return False


def member_inference_config(
    config: dict[str, Any], metadata: dict[str, Any], dataset: Path | None, date: str | None
) -> dict[str, Any]:
    """The ``member_generator`` template filled in for a checkpoint: a test date and absolute GRIB paths.

    The GRIB files are looked for in ``dataset`` (``--dataset``: a synthetic EDA folder, holding ``grib/bg_*``
    and ``grib/an_*``, or the folder above it) if given, else beside the stores the checkpoint was trained on. A
    generator trained with observations also gets ``input: observations`` (``grib/obs_*``, :data:`OBSERVATIONS_GRIB`).
    """
    import datetime as dt

    stores, start = _test_stores(metadata)
    if date is None:
        if start is None:
            raise ValueError("the checkpoint's test period has no start date; pass --date")
        date = start
    config["date"] = dt.datetime.fromisoformat(str(date)).isoformat()
    stamp = dt.datetime.fromisoformat(config["date"])
    folders = [dataset] if dataset is not None else [s.resolve().parent for s in stores if s.exists()]
    if dataset is not None and not dataset.is_dir():
        raise ValueError(f"--dataset {dataset} is not a folder; give the synthetic EDA folder holding grib/bg_*.grib")
    inputs = {}
    roles = ["backgrounds", "analyses"]
    if _trained_with_observations(metadata):  # the synthetic EDA's observations on the grid, beside its members
        config["input"].setdefault("observations", {"grib": {"path": OBSERVATIONS_GRIB}})
        roles.append("observations")
    for role in roles:
        grib = dict(config["input"][role]["grib"])
        pattern = Path(grib["path"])
        candidates = [f / p for f in folders for p in (pattern, Path(*pattern.parts[1:]))]
        found = [
            c for c in candidates if Path(str(c).replace("{date:strftime(%Y%m%d%H)}", f"{stamp:%Y%m%d%H}")).is_file()
        ]
        if not found and role == "observations":
            where = ", ".join(str(f) for f in folders) or "(no training store exists here)"
            raise ValueError(
                f"the generator was trained with observations but there is no {pattern} for {config['date']} in "
                f"{where}; write them with `hybrid-eda synthetic-obs-grib FOLDER` (from its truth/obs_*.npz), or pass "
                "--dataset FOLDER, a synthetic EDA folder that has them"
            )
        if not found:
            where = ", ".join(str(f) for f in folders) or "(no training store exists here)"
            raise ValueError(
                f"no {role} GRIB {pattern} for {config['date']} in {where}; pass --dataset FOLDER, the synthetic EDA "
                "folder (hybrid-eda synthetic --out FOLDER) of that date, or --date a date it holds"
            )
        inputs[role] = {"grib": {**grib, "path": str(found[0].resolve())}}
    config["input"] = inputs
    return config
