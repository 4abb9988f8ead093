"""``runner: variance-emulator``: anemoi-inference for the EDA variance emulator (M members in, emulated std out).

    anemoi-inference run variance.yaml          # configs/variance_emulator.yaml, documented there

The runner takes a variance emulator checkpoint (a file, or a run folder: its newest ``inference-last.ckpt``),
M >= 2 member fields of one or more dates, from GRIB files (``input: {grib: ...}``) or an anemoi member store
(``input: {dataset: ...}``), and writes the mean and chosen quantiles of the emulated N-member std as GRIB
(``output: {grib: ...}``; keys in :mod:`.std_grib`), one message per statistic, variable and level.

Why its own runner: anemoi-inference's runners are forecasters (lead times, rollout, lagged input states) and
their inputs squeeze or reject the ensemble dimension; the emulator maps one set of members to one distribution
at the same date. So this runner keeps anemoi-inference's command, config file (``checkpoint``, ``date``,
``input``, ``output``, ``device``, ``runner`` with its options) and registry (entry point
``anemoi.inference.runners``), and reads the ``input``/``output`` blocks itself, with keys named like anemoi's
(``grib``, ``dataset``, ``path``) but the member selection (``number``) it needs. ``lead_time`` is ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from anemoi.inference.checkpoint import Checkpoint
from anemoi.inference.config.run import RunConfiguration
from anemoi.inference.runner import Runner

from hybrid_eda.inference.member_fields import MemberFields, expand_path, input_members
from hybrid_eda.inference.part_files import PartFiles
from hybrid_eda.inference.std_grib import StdGribEncoder, quantile_keys
from hybrid_eda.inference.variance_checkpoint import VarianceCheckpoint, read_variance_checkpoint

__all__ = ["DEFAULT_QUANTILES", "VarianceEmulatorRunner", "statistic_name"]

LOGGER = logging.getLogger(__name__)

DEFAULT_QUANTILES = (0.05, 0.5, 0.95)
_INPUTS = ("grib", "dataset")


def statistic_name(quantile: float | None) -> str:
    """``mean``, or ``q5``/``q50``/``q2.5`` for the quantiles (the ``{statistic}`` of an output path)."""
    return "mean" if quantile is None else f"q{quantile * 100:g}"


def _single_entry(block: Any, what: str, kinds: Sequence[str], example: str) -> tuple[str, Any]:
    if isinstance(block, dict) and len(block) == 1 and next(iter(block)) in kinds:
        return next(iter(block.items()))
    raise ValueError(
        f"the variance-emulator runner needs {what}: one of {', '.join(kinds)}, e.g. {example}; got {block!r}"
    )


class VarianceEmulatorRunner(Runner):
    """anemoi-inference runner of the variance emulator (registered as ``variance-emulator``).

    Parameters
    ----------
    config : RunConfiguration
        The run config (``anemoi-inference run FILE``).
    quantiles : sequence of float
        Quantiles of the emulated std to write besides its mean (``[]`` for none).
    mean : bool
        Write the mean of the emulated distribution (the MSE-optimal estimate of the N-member std).
    """

    def __init__(self, config: RunConfiguration, *, quantiles: Sequence[float] = DEFAULT_QUANTILES,
                 mean: bool = True) -> None:  # fmt: skip
        # Runner.__init__ builds forecaster inputs/outputs per dataset of the checkpoint; only its settings are used.
        self.config = config
        self._device = config.device or "cpu"
        self.reference_date = config.date
        self.verbosity = config.verbosity
        self.quantiles = tuple(float(q) for q in (quantiles or ()))
        for q in self.quantiles:
            quantile_keys(q)  # fails early on an unencodable quantile
        self.statistics: tuple[float | None, ...] = ((None,) if mean else ()) + self.quantiles
        if not self.statistics:
            raise ValueError("nothing to write: set mean: true or give quantiles")
        self.input_kind, self.input_options = _single_entry(
            config.input, "an input", _INPUTS, "input: {grib: {path: bg.grib, number: [1, 2, 3, 4, 5]}}"
        )
        _, output = _single_entry(config.output, "an output", ("grib",), "output: {grib: std.grib}")
        output = {"path": output} if isinstance(output, str) else dict(output)
        if "path" not in output:
            raise ValueError("output: grib: needs a path, e.g. output: {grib: {path: std.grib}}")
        self.output_path = str(output.pop("path"))
        self.bits_per_value = int(output.pop("bits_per_value", 16))
        self.output_keys = dict(output.pop("keys", {}) or {})
        if output:
            raise ValueError(f"unknown output: grib: options {sorted(output)}; known: path, bits_per_value, keys")
        self._variance: VarianceCheckpoint | None = None
        self._checkpoint = None

    @property
    def variance(self) -> VarianceCheckpoint:
        """The checked and loaded variance emulator checkpoint."""
        if self._variance is None:
            self._variance = read_variance_checkpoint(self.config.checkpoint)
            self._variance.predictor.core.to(self.device)
        return self._variance

    @property
    def checkpoint(self) -> Checkpoint:
        """anemoi-inference's view of the same checkpoint (its metadata)."""
        if self._checkpoint is None:
            self._checkpoint = Checkpoint(str(self.variance.path))
        return self._checkpoint

    # ---------------------------------------------------------------------------------------------------- input
    def read_members(self) -> list[MemberFields]:
        """The member fields of the configured input, per date (``date:`` or every date it holds)."""
        ck = self.variance
        return input_members(
            self.input_kind,
            self.input_options,
            ck.grid,
            grib_fields=ck.fields,
            dataset_fields=ck.fields,
            reference_date=self.reference_date,
        )

    # ---------------------------------------------------------------------------------------------------- model
    def emulate(self, members: MemberFields) -> dict[float | None, np.ndarray]:
        """The configured statistics of the emulated std, ``[G, F]`` each, keyed by quantile (``None``: mean)."""
        import torch

        ck = self.variance
        trained = ck.training_members
        if trained is not None and len(members.numbers) != trained:
            LOGGER.warning("%d members given, the emulator was trained on M=%d: it takes any M >= 2 (set pooling), "
                           "but is calibrated for %d", len(members.numbers), trained, trained)  # fmt: skip
        x = torch.from_numpy(members.values[None]).to(self.device)  # [1, M, G, F]
        dist = ck.predictor(x)  # parameters [1, 1, G, F]
        with torch.no_grad():
            return {q: (dist.mean() if q is None else dist.quantile(q))[0, 0].cpu().numpy() for q in self.statistics}

    def run(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("the variance-emulator runner has no forecast loop; use emulate(members)")

    # ---------------------------------------------------------------------------------------------------- output
    def execute(self) -> None:
        """Read the members, emulate, write the GRIB (the ``anemoi-inference run`` entry)."""
        started = time.perf_counter()
        ck = self.variance
        loaded = time.perf_counter()
        members = self.read_members()
        read = time.perf_counter()
        written = 0
        with PartFiles() as files, StdGribEncoder(ck.grid, self.bits_per_value, self.output_keys) as encoder:
            for date_members in members:
                statistics = self.emulate(date_members)
                for q, values in statistics.items():
                    stream = files.stream(expand_path(self.output_path, date_members.date, statistic=statistic_name(q)))
                    for i, field in enumerate(ck.fields):
                        stream.write(encoder.encode(values[:, i], field=field, valid=date_members.date, quantile=q))
                        written += 1
        done = time.perf_counter()
        LOGGER.info(
            "variance emulator: %d GRIB messages (%d date(s) x %d statistics x %d fields, M=%s) to %s; "
            "load %.1f s, read %.1f s, emulate+write %.1f s",
            written, len(members), len(self.statistics), len(ck.fields), len(members[0].numbers),
            ", ".join(files.paths), loaded - started, read - loaded, done - read,
        )  # fmt: skip

    def __repr__(self) -> str:
        names = [statistic_name(q) for q in self.statistics]
        return f"VarianceEmulatorRunner({self.config.checkpoint}, statistics={names})"
