"""``runner: member-generator``: anemoi-inference for the EDA member generator (backgrounds + N_s analyses in,
emulated analysis members out, as GRIB).

    anemoi-inference run members.yaml          # configs/member_generator.yaml, documented there

The runner takes a member generator checkpoint (a file, or a run folder: its newest ``inference-last.ckpt``), the
background members of a date and N_s >= 2 real analyses of it (GRIB, ``grib:``, or anemoi datasets, ``dataset:``;
:mod:`.member_fields`), and writes the generated analysis members as GRIB (MARS ``stream=elda type=an``, the keys
of the synthetic EDA's analyses, :mod:`hybrid_eda.synthetic.gribio`) numbered after the real ones: with real
analyses ``1 .. N_s`` the generated members are ``N_s + 1 .. N``.

What the generator sees: every background (its own starts, and the guides' backgrounds, matched to the analyses by
member number) and the N_s analyses, nothing else. Members start from the backgrounds that have no real analysis,
in number order; with ``members: N`` (default: one per such background) member ``N_s + j`` starts from the
``j``-th of them, cycling when there are fewer. The noise is seeded by anemoi's ``seed:`` (default 0) and the
date, so a date's members do not depend on the other dates of the run.

Why its own runner: like the variance emulator's (:mod:`.variance_runner`), the generator maps one set of members
to another at the same date, which anemoi-inference's forecasters (lead times, rollout) do not. This runner keeps
anemoi-inference's command, config file and registry (entry point ``anemoi.inference.runners``) and reads
``input: {backgrounds: ..., analyses: ...}`` and ``output: {grib: ...}`` itself. ``lead_time`` is ignored.

A generator trained with observations (``model.model.observations``) also takes ``input: observations: {grib:
{path: obs_{date:strftime(%Y%m%d%H)}.grib}}``: the date's observations on the grid, one message per field (any
member number: they are the same for every member), missing (bitmap) where unobserved, as the synthetic EDA writes
them (:mod:`hybrid_eda.synthetic.observation_grib`). Without it such a generator runs as if nothing were observed
(with a warning).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from anemoi.inference.config.run import RunConfiguration
from anemoi.inference.runner import Runner

from hybrid_eda.inference.member_checkpoint import MemberCheckpoint, read_member_checkpoint
from hybrid_eda.inference.member_fields import MemberFields, expand_path, input_members
from hybrid_eda.inference.part_files import PartFiles

__all__ = ["EmulatedMembers", "MemberInferenceRunner", "date_seed"]

LOGGER = logging.getLogger(__name__)

_SOURCES = ("grib", "dataset")
_ROLES = ("backgrounds", "analyses")
_OPTIONAL_ROLES = ("observations",)
#: Smallest N_s: the generator pools the guides' spread and mean increment.
MIN_GUIDES = 2


def date_seed(seed: int, date: datetime) -> int:
    """The noise seed of one date: ``seed`` and the date's ``YYYYMMDDHH`` mixed by numpy's ``SeedSequence``."""
    return int(np.random.SeedSequence([int(seed), int(date.strftime("%Y%m%d%H"))]).generate_state(1)[0])


@dataclass(frozen=True)
class EmulatedMembers:
    """The generated members of one date: ``values [n, G, F]`` and their member ``numbers`` (after the real ones)."""

    date: datetime
    numbers: tuple[int, ...]
    values: np.ndarray
    start_numbers: tuple[int, ...]
    real_numbers: tuple[int, ...]


def _source(block: Any, role: str) -> tuple[str, Any]:
    if isinstance(block, dict) and len(block) == 1 and next(iter(block)) in _SOURCES:
        return next(iter(block.items()))
    raise ValueError(
        f"input: {role}: needs one of {', '.join(_SOURCES)}, e.g. {role}: {{grib: {{path: bg.grib}}}} or "
        f"{role}: {{dataset: {{dataset: members.zarr, number: [1, 2, 3]}}}}; got {block!r}"
    )


class MemberInferenceRunner(Runner):
    """anemoi-inference runner of the member generator (registered as ``member-generator``).

    Parameters
    ----------
    config : RunConfiguration
        The run config (``anemoi-inference run FILE``): ``checkpoint``, ``date``, ``seed``, ``device``,
        ``input: {backgrounds: {grib|dataset: ...}, analyses: {grib|dataset: ...}}``, ``output: {grib: ...}``.
    members : int, optional
        N, real plus generated (default: N_s plus one per background without a real analysis).
    steps : int, optional
        Integration steps of the flow (default: the checkpoint's).
    include_real : bool
        Also write the N_s real analyses (re-encoded), so that the output is the whole hybrid EDA.
    checkpoint : MemberCheckpoint, optional
        A generator already in memory (e.g. :func:`~hybrid_eda.inference.member_checkpoint.from_core`) instead of
        ``config.checkpoint``.
    """

    def __init__(self, config: RunConfiguration, *, members: int | None = None, steps: int | None = None,
                 include_real: bool = False, checkpoint: MemberCheckpoint | None = None) -> None:  # fmt: skip
        # Runner.__init__ builds forecaster inputs/outputs per dataset of the checkpoint; only its settings are used.
        self.config = config
        self._device = config.device or "cpu"
        self.reference_date = config.date
        self.verbosity = config.verbosity
        self.seed = 0 if config.seed is None else int(config.seed)
        if members is not None and int(members) < MIN_GUIDES + 1:
            raise ValueError(f"members: {members} leaves nothing to generate; N is real plus generated, e.g. 50")
        self.members = None if members is None else int(members)
        if steps is not None and int(steps) < 1:
            raise ValueError(f"steps: must be >= 1, got {steps}")
        self.steps = None if steps is None else int(steps)
        self.include_real = bool(include_real)
        block = config.input if isinstance(config.input, dict) else {}
        if not set(_ROLES) <= set(block) <= set(_ROLES) | set(_OPTIONAL_ROLES):
            raise ValueError(
                "the member-generator runner needs input: {backgrounds: ..., analyses: ...} (all N background "
                "members and the N_s real analyses, GRIB or dataset), e.g. input: {backgrounds: {grib: bg.grib}, "
                f"analyses: {{grib: {{path: an.grib, number: [1, 2, 3]}}}}}} (and optionally observations: {{grib: "
                f"obs.grib}}); got {config.input!r}"
            )
        self.inputs = {role: _source(block[role], role) for role in _ROLES + _OPTIONAL_ROLES if role in block}
        if "observations" in self.inputs and self.inputs["observations"][0] != "grib":
            raise ValueError("input: observations: reads GRIB only, e.g. observations: {grib: {path: obs.grib}}")
        output = config.output
        if not (isinstance(output, dict) and set(output) == {"grib"}):
            raise ValueError(f"the member-generator runner needs an output: grib, e.g. output: {{grib: members.grib}}; "
                             f"got {output!r}")  # fmt: skip
        output = {"path": output["grib"]} if isinstance(output["grib"], str) else dict(output["grib"])
        if "path" not in output:
            raise ValueError("output: grib: needs a path, e.g. output: {grib: {path: members.grib}}")
        self.output_path = str(output.pop("path"))
        self.bits_per_value = int(output.pop("bits_per_value", 16))
        if output:
            raise ValueError(f"unknown output: grib: options {sorted(output)}; known: path, bits_per_value")
        self._member: MemberCheckpoint | None = checkpoint

    @property
    def member(self) -> MemberCheckpoint:
        """The checked and loaded member generator."""
        if self._member is None:
            self._member = read_member_checkpoint(self.config.checkpoint)
        if hasattr(self._member.generator, "to"):
            self._member.generator.to(self.device)
        return self._member

    # ---------------------------------------------------------------------------------------------------- input
    def _read(self, role: str) -> list[MemberFields]:
        try:
            return self._read_members(role)
        except ValueError as err:  # member_fields' count check speaks of the variance emulator: say what we need
            where, sep, _ = str(err).partition("; the variance emulator needs at least")
            if not sep:
                raise
            raise ValueError(
                f"input: {role}: {where}; the member generator needs at least {MIN_GUIDES} real analyses (N_s >= "
                f"{MIN_GUIDES}) and their backgrounds, e.g. number: [1, 2, ..., 14]"
            ) from err

    def _read_members(self, role: str) -> list[MemberFields]:
        ck = self.member
        kind, options = self.inputs[role]
        return input_members(
            kind, options, ck.grid, grib_fields=ck.fields,
            dataset_fields=ck.background_fields if role == "backgrounds" else ck.fields,
            reference_date=self.reference_date, where=f"input: {role}",
        )  # fmt: skip

    def read_inputs(self) -> list[tuple[MemberFields, MemberFields]]:
        """``(backgrounds, analyses)`` per date, with the same dates in both."""
        backgrounds = {m.date: m for m in self._read("backgrounds")}
        analyses = {m.date: m for m in self._read("analyses")}
        if missing := sorted(set(backgrounds) ^ set(analyses)):
            raise ValueError(
                f"backgrounds and analyses hold different dates ({', '.join(f'{d:%Y-%m-%dT%H}' for d in missing)} "
                "in one only); set date: or give both for the same dates"
            )
        return [(backgrounds[d], analyses[d]) for d in sorted(backgrounds)]

    def read_observations(self, date: datetime) -> np.ndarray | None:
        """The observations of ``date`` on the grid, ``[G, F]`` in the checkpoint's field order, NaN where unobserved
        (and for the fields the generator was not trained to observe); None without ``input: observations``."""
        if "observations" not in self.inputs:
            return None
        from hybrid_eda.inference.member_observations import grib_observations

        options = self.inputs["observations"][1]
        path = options if isinstance(options, str) else options.get("path")
        if not path:
            raise ValueError("input: observations: grib: needs a path, e.g. {grib: {path: obs.grib}}")
        ck = self.member
        values = grib_observations(expand_path(str(path), date), ck.fields, ck.grid, date)
        wanted = getattr(ck.generator, "observation_variables", None)
        if wanted is not None:
            values[:, [name is None for name in wanted]] = np.nan
        return values

    # ---------------------------------------------------------------------------------------------------- model
    def emulate(
        self, backgrounds: MemberFields, analyses: MemberFields, observations: np.ndarray | None = None
    ) -> EmulatedMembers:
        """The generated members of one date (see the module docstring for starts and numbers); ``observations
        [G, F]`` (NaN where unobserved) go to a generator trained with them."""
        import torch

        real = tuple(analyses.numbers)
        if len(real) < MIN_GUIDES:
            raise ValueError(f"{len(real)} real analysis (numbers {list(real)}) at {analyses.date:%Y-%m-%dT%H}; the "
                             f"member generator needs N_s >= {MIN_GUIDES}")  # fmt: skip
        index = {n: i for i, n in enumerate(backgrounds.numbers)}
        if absent := [n for n in real if n not in index]:
            raise ValueError(
                f"the backgrounds lack members {absent} of the real analyses at {analyses.date:%Y-%m-%dT%H} (they "
                f"hold {list(backgrounds.numbers)}); give all N backgrounds, the guides' own included"
            )
        starts = [n for n in backgrounds.numbers if n not in set(real)]
        if not starts:
            raise ValueError(f"every background ({list(backgrounds.numbers)}) has a real analysis: nothing to start "
                             "from; give the backgrounds of the members to generate too")  # fmt: skip
        n = len(starts) if self.members is None else self.members - len(real)
        if n < 1:
            raise ValueError(f"members: {self.members} is not more than the {len(real)} real analyses")
        device = self.device
        as_tensor = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)  # noqa: E731
        generator = torch.Generator().manual_seed(date_seed(self.seed, analyses.date))
        extra = {} if self.steps is None else {"steps": self.steps}
        if self.member.uses_observations and observations is None:
            LOGGER.warning("the generator was trained with observations and none are given (input: observations): "
                           "it runs as if nothing were observed")  # fmt: skip
        elif self.member.uses_observations:
            extra["observations"] = as_tensor(observations)  # [G, F]
        elif observations is not None:
            LOGGER.warning("input: observations is ignored: the generator was trained without observations")
        with torch.no_grad():
            out = self.member.generator.generate(
                as_tensor(backgrounds.values[[index[s] for s in starts]]),  # [k, G, F]
                as_tensor(analyses.values),  # [N_s, G, F]
                n,
                generator,
                guide_backgrounds=as_tensor(backgrounds.values[[index[r] for r in real]]),
                **extra,
            )
        values = getattr(out, "members", out).detach().cpu().numpy()  # [n, G, F]
        first = max(real) + 1
        return EmulatedMembers(date=analyses.date, numbers=tuple(range(first, first + n)), values=values,
                               start_numbers=tuple(starts[j % len(starts)] for j in range(n)),
                               real_numbers=real)  # fmt: skip

    def run(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "the member-generator runner has no forecast loop; use emulate(backgrounds, analyses)"
        )

    # ---------------------------------------------------------------------------------------------------- output
    def execute(self) -> list[EmulatedMembers]:
        """Read the inputs, generate, write the GRIB (the ``anemoi-inference run`` entry); returns the members."""
        from hybrid_eda.synthetic.gribio import ANALYSIS, GribEncoder

        started = time.perf_counter()
        ck = self.member
        if bad := [f for f in ck.fields if f.levtype != "ml"]:
            raise ValueError(
                f"{bad[0]}: only model-level fields (levtype ml) are written, not levtype {bad[0].levtype}"
            )
        loaded = time.perf_counter()
        inputs = self.read_inputs()
        read = time.perf_counter()
        results, written = [], 0
        with PartFiles() as files:
            for backgrounds, analyses in inputs:
                emulated = self.emulate(backgrounds, analyses, self.read_observations(analyses.date))
                results.append(emulated)
                total = len(emulated.real_numbers) + len(emulated.numbers)
                rows = [(n, emulated.values[j]) for j, n in enumerate(emulated.numbers)]
                if self.include_real:
                    rows = [(n, analyses.values[j]) for j, n in enumerate(analyses.numbers)] + rows
                stream = files.stream(expand_path(self.output_path, emulated.date))
                with GribEncoder(ck.grid, members=total, bits_per_value=self.bits_per_value) as encoder:
                    for number, values in rows:  # values [G, F]
                        for i, field in enumerate(ck.fields):
                            encoder.write(stream, values[:, i], kind=ANALYSIS, param_id=field.param_id,
                                          level=field.level, valid=emulated.date, number=number)  # fmt: skip
                            written += 1
        done = time.perf_counter()
        LOGGER.info(
            "member generator: %d GRIB messages (%d date(s) x %d members x %d fields; N_s=%d real, members %s) to %s; "
            "load %.1f s, read %.1f s, generate+write %.1f s",
            written, len(results), written // max(1, len(results) * len(ck.fields)), len(ck.fields),
            len(results[0].real_numbers) if results else 0, _span(results[0].numbers) if results else "-",
            ", ".join(files.paths), loaded - started, read - loaded, done - read,
        )  # fmt: skip
        return results

    def __repr__(self) -> str:
        return f"MemberInferenceRunner({self.config.checkpoint}, members={self.members}, seed={self.seed})"


def _span(numbers: Sequence[int]) -> str:
    return f"{numbers[0]}..{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])
