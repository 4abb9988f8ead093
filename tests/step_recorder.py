"""A Lightning callback for the end-to-end tests: what each rank trained on at every step, as JSON lines.

Added to a run with ``diagnostics.callbacks=[{_target_:step_recorder.StepRecorder,path:...}]`` (``tests/`` on
``PYTHONPATH``). anemoi logs only the rank-averaged loss (to the progress bar, 3 digits); this keeps each rank's
own loss in full precision, the learning rate and a fingerprint of every sample of its batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import Callback


class StepRecorder(Callback):
    """Write one JSON line per training step and rank to ``{path}.rank{global_rank}``.

    Each line: ``step``, ``rank``, ``world_size``, ``loss`` (this rank's batch-mean loss), ``lr`` and ``samples``:
    per sample of the batch and dataset, the float64 sum of its tensor ``[time, ens, grid, var]`` (which
    identifies the date and, for the members, the M members drawn).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        samples = {name: [float(x.double().sum()) for x in tensor] for name, tensor in batch.items()}
        record = {
            "step": int(trainer.global_step),
            "rank": int(trainer.global_rank),
            "world_size": int(trainer.world_size),
            "loss": float(loss.detach().double()),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
            "samples": samples,
        }
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as out:
            out.write(json.dumps(record) + "\n")
