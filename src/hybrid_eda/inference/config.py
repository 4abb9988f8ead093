"""Fill a shipped anemoi-inference config in for one checkpoint, so ``anemoi-inference run`` needs no path edits.

Why a helper: anemoi-inference's default input (``input: test``, and ``dataset`` without arguments) strips the
store path recorded in the checkpoint down to its name (``l96-truth``) and looks that up in anemoi's settings
(``[datasets] named`` / ``path`` in ``~/.config/anemoi/settings.toml``); nobody has set that up for our local
stores, hence ``Cannot find a dataset that matched 'l96-truth'``. The shipped configs therefore read
``input: {test: {use_original_paths: true}}``: the test period of the training config, opened at the path that
training recorded (absolute, since ``l96_forecaster`` writes ``${hydra:runtime.cwd}/l96-truth.zarr``). What a
config cannot know is the checkpoint (``<root>/checkpoint/<run-id>/inference-last.ckpt``), a start date inside
the test period with enough input steps before it, and, for a moved store or one recorded relative to another
folder, where the store is now: :func:`inference_config` fills those in from the checkpoint's metadata.
"""

from __future__ import annotations

import datetime as dt
import logging
import zipfile
from pathlib import Path
from typing import Any

import yaml

from hybrid_eda.resources import find_shipped, inference_configs_dir

__all__ = ["DEFAULT_TEMPLATE", "TEMPLATES_BY_MODEL", "find_checkpoint", "inference_config", "write_config"]

LOGGER = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "l96_forecaster"
#: Shipped template of each model class (``model.model._target_`` of the training config) that has its own runner.
TEMPLATES_BY_MODEL = {
    "hybrid_eda.models.VarianceEmulator": "variance_emulator",
    "hybrid_eda.models.MemberGenerator": "member_generator",
}
_CHECKPOINT = "inference-last.ckpt"


def find_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a file, else the newest ``inference-last.ckpt`` below the folder ``path``."""
    if path.is_file():
        return path.resolve()
    if not path.is_dir():
        raise ValueError(
            f"no checkpoint at {path}; train one first (anemoi-training train --config-name={DEFAULT_TEMPLATE}) and "
            f"give its {_CHECKPOINT} or the run's output folder (output/{DEFAULT_TEMPLATE})"
        )
    found = sorted(path.rglob(_CHECKPOINT), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ValueError(f"no {_CHECKPOINT} below {path}; has a training run written its first checkpoint there?")
    if len(found) > 1:
        LOGGER.info("%d checkpoints below %s; using the newest, %s", len(found), path, found[-1])
    return found[-1].resolve()


def _metadata(checkpoint: Path) -> dict[str, Any]:
    from anemoi.utils.checkpoints import load_metadata

    try:
        metadata = load_metadata(str(checkpoint))
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{checkpoint} is not an anemoi inference checkpoint ({err}); give an inference-*.ckpt written by "
            "anemoi-training (not last.ckpt, which holds the training state)"
        ) from err
    if not metadata or "config" not in metadata:
        raise ValueError(f"{checkpoint} holds no anemoi-training metadata; give an inference-*.ckpt")
    return metadata


def _test_split(metadata: dict[str, Any]) -> tuple[str, str | None]:
    """Store path and first date of the test period in the checkpoint's training config (anemoi-training 0.17)."""
    names = metadata.get("metadata_inference", {}).get("dataset_names") or ["data"]
    if len(names) != 1:
        raise ValueError(f"checkpoint trained on {len(names)} datasets ({', '.join(names)}); only one is supported")
    try:
        split = metadata["config"]["dataloader"]["test"]["datasets"][names[0]]
    except (KeyError, TypeError) as err:
        raise ValueError("the checkpoint's training config has no test dataloader; pass --dataset and --date") from err
    store = split.get("dataset_config", split)
    store = store["dataset"] if isinstance(store, dict) else store
    if not isinstance(store, str):
        raise ValueError(f"the checkpoint's test dataset is not one store ({store!r}); pass --dataset")
    return store, split.get("start")


def _first_date(checkpoint: Path, start: str | None) -> str:
    """The first date of the test period that has all the model's input steps (lagged -6 h, 0 h) inside it."""
    from anemoi.inference.checkpoint import Checkpoint

    if start is None:
        raise ValueError("the checkpoint's test period has no start date; pass --date")
    first = dt.datetime.fromisoformat(str(start))
    return (first - min(Checkpoint(str(checkpoint)).lagged)).isoformat()


def _model_target(metadata: dict[str, Any]) -> str:
    try:
        return str(metadata["config"]["model"]["model"]["_target_"])
    except (KeyError, TypeError):
        return ""


def _variance_config(
    config: dict[str, Any], metadata: dict[str, Any], dataset: Path | None, date: str | None
) -> dict[str, Any]:
    """The ``variance_emulator`` template for a variance-emulator checkpoint: its test date and M members.

    Input: ``--dataset`` (a member store) if given; else the GRIB backgrounds of the synthetic EDA that
    ``hybrid-eda variance-data`` wrote beside the member store, if they are there; else the member store the
    checkpoint was trained on.
    """
    try:
        split = metadata["config"]["dataloader"]["test"]["datasets"]["members"]
        source = split["dataset_config"]
    except (KeyError, TypeError) as err:
        raise ValueError(
            "the checkpoint's training config has no test split of a 'members' dataset; pass --dataset and --date"
        ) from err
    selection = source.get("number") if isinstance(source, dict) else None
    m = selection.get("random") if isinstance(selection, dict) else None
    numbers = list(range(1, int(m) + 1)) if m else config["input"]["grib"].get("number")
    if date is None:
        if not split.get("start"):
            raise ValueError("the checkpoint's test period has no start date; pass --date")
        date = dt.datetime.fromisoformat(str(split["start"])).isoformat()
    config["date"] = date
    store = dataset if dataset is not None else Path(source["dataset"] if isinstance(source, dict) else source)
    if not store.exists():
        raise ValueError(
            f"member store {store} does not exist here; pass --dataset PATH (a member store built by the same recipe)"
        )
    grib = store.resolve().parent / Path(config["input"]["grib"]["path"])
    stamp = dt.datetime.fromisoformat(date).strftime("%Y%m%d%H")
    if dataset is None and Path(str(grib).replace("{date:strftime(%Y%m%d%H)}", stamp)).exists():
        config["input"] = {"grib": {**config["input"]["grib"], "path": str(grib), "number": numbers}}
    else:
        config["input"] = {"dataset": {"dataset": str(store.resolve()), "number": numbers}}
    return config


def inference_config(
    checkpoint: Path,
    *,
    template: str | None = None,
    dataset: Path | None = None,
    date: str | None = None,
    lead_time: int | None = None,
) -> dict[str, Any]:
    """The shipped inference config ``template`` filled in for ``checkpoint`` (a file, or a run folder).

    Parameters
    ----------
    checkpoint : Path
        An ``inference-*.ckpt``, or a folder below which the newest ``inference-last.ckpt`` is taken.
    template : str, optional
        Name of a config in ``hybrid_eda/inference/configs`` (default: the one of the checkpoint's model,
        :data:`TEMPLATES_BY_MODEL`, else :data:`DEFAULT_TEMPLATE`).
    dataset : Path, optional
        Store to read the initial states from (default: the one training recorded, if it exists).
    date : str, optional
        Start date (default: the first date of the test period with all input steps).
    lead_time : int, optional
        Forecast length in hours (default: the template's).

    Returns
    -------
    dict
        The anemoi-inference run config.
    """
    if lead_time is not None and lead_time <= 0:
        raise ValueError(f"--lead-time must be a positive number of hours, not {lead_time}")
    if template is not None:
        find_shipped(inference_configs_dir(), template, "inference config", "--template")
    path = find_checkpoint(checkpoint)
    metadata = _metadata(path)
    own = TEMPLATES_BY_MODEL.get(_model_target(metadata))
    if template is None:
        template = own or DEFAULT_TEMPLATE
    elif own is not None and template != own:
        raise ValueError(f"{path} is a {_model_target(metadata)} checkpoint; its template is --template {own}")
    elif own is None and template in TEMPLATES_BY_MODEL.values():
        model = _model_target(metadata) or "an unknown model"
        raise ValueError(f"--template {template} is for another model; {path} is a checkpoint of {model}")
    config = yaml.safe_load(
        find_shipped(inference_configs_dir(), template, "inference config", "--template").read_text()
    )
    if own == "member_generator":
        from hybrid_eda.inference.member_checkpoint import member_inference_config

        return member_inference_config({**config, "checkpoint": str(path)}, metadata, dataset, date)
    if own is not None:
        return _variance_config({**config, "checkpoint": str(path)}, metadata, dataset, date)
    recorded, start = _test_split(metadata) if dataset is None or date is None else ("", None)
    config = {"checkpoint": str(path), **config}
    store = Path(recorded) if dataset is None else dataset
    if not store.exists():
        if dataset is not None:
            raise ValueError(f"--dataset {dataset} does not exist; give the zarr store to read the initial states from")
        raise ValueError(
            f"the checkpoint was trained on {recorded}, which does not exist here; pass --dataset PATH (the store "
            "built by the same recipe, e.g. l96-truth.zarr)"
        )
    if dataset is not None or not store.is_absolute():  # a store elsewhere, or one recorded relative to training
        config["input"] = {"dataset": str(store.resolve())}
    config["date"] = date if date is not None else _first_date(path, start)
    if lead_time is not None:
        config["lead_time"] = lead_time
    return config


def write_config(config: dict[str, Any], out: Path | None = None) -> str:
    """The config as YAML, with a header saying how to run it; also written to ``out`` when given."""
    header = (
        "# anemoi-inference run config written by `hybrid-eda inference-config`; run it with\n"
        f"#   anemoi-inference run {out.name if out is not None else 'FILE'}\n"
        "# (any key can be overridden there as key=value, e.g. lead_time=240)\n"
    )
    text = header + yaml.safe_dump(config, sort_keys=False)
    if out is not None:
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give a file name such as infer.yaml")
        out.write_text(text)
    return text
