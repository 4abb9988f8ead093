"""The EDA archive of a Lorenz-96 run: every cycle's background and analysis members, truth and observations.

Cycle ``t`` is valid at ``start_date + t * cycle_hours`` (by convention 0.05 model time units = 6 hours).
The archive is what the ``lorenz96`` anemoi-datasets source turns into a zarr store for training.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_eda.errors import UserInputError

__all__ = ["EDAArchive"]


@dataclass
class EDAArchive:
    """Arrays of one EDA run.

    Attributes
    ----------
    truth : np.ndarray
        ``[T, n]`` true state at each cycle time.
    observations : np.ndarray
        ``[T, p]`` observations at each cycle time (the first of the window for 4D-Var).
    obs_index : np.ndarray
        ``[p]`` indices of the observed variables.
    background : np.ndarray
        ``[T, N, n]`` background members (forecasts from the previous analyses).
    analysis : np.ndarray
        ``[T, N, n]`` analysis members.
    settings : dict
        JSON-serialisable description of the run (preset, method, members, inflation, seed, ...).
    start_date : str
        ISO date of cycle 0.
    cycle_hours : int
        Hours between cycles.
    """

    truth: np.ndarray
    observations: np.ndarray
    obs_index: np.ndarray
    background: np.ndarray
    analysis: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    start_date: str = "2000-01-01T00:00:00"
    cycle_hours: int = 6

    def __post_init__(self) -> None:
        t, n = self.truth.shape
        if self.background.shape[0] != t or self.analysis.shape[0] != t or self.observations.shape[0] != t:
            raise ValueError(
                "EDA archive arrays disagree on the number of cycles: "
                f"truth {self.truth.shape}, observations {self.observations.shape}, "
                f"background {self.background.shape}, analysis {self.analysis.shape}."
            )
        if self.background.shape != self.analysis.shape or self.background.shape[-1] != n:
            raise ValueError(
                f"background {self.background.shape} and analysis {self.analysis.shape} must both be [T, N, n={n}]."
            )
        if self.obs_index.ndim != 1 or self.observations.shape[1:] != self.obs_index.shape:
            raise ValueError(
                f"observations {self.observations.shape} must be [T, p] with p = len(obs_index) "
                f"(obs_index has shape {self.obs_index.shape})."
            )
        if self.obs_index.size and not (0 <= self.obs_index.min() and self.obs_index.max() < n):
            raise ValueError(f"obs_index must hold variable indices in [0, {n}), got {self.obs_index.tolist()}.")
        if int(self.cycle_hours) < 1:
            raise ValueError(f"cycle_hours must be a positive number of hours, got {self.cycle_hours}; use e.g. 6.")
        _parse_date(self.start_date)  # fail early on an unreadable date

    @property
    def cycles(self) -> int:
        return int(self.truth.shape[0])

    @property
    def members(self) -> int:
        return int(self.background.shape[1])

    @property
    def first_date(self) -> datetime:
        """Valid time of cycle 0 (``start_date`` as a naive UTC datetime)."""
        return _parse_date(self.start_date)

    @property
    def dates(self) -> list[datetime]:
        """Valid time of every cycle: ``start_date + t * cycle_hours`` for ``t = 0 .. T-1``."""
        step = timedelta(hours=int(self.cycle_hours))
        return [self.first_date + t * step for t in range(self.cycles)]

    def observations_on_grid(self) -> np.ndarray:
        """Observations scattered onto the state: ``[T, n]``, NaN at unobserved variables."""
        out = np.full(self.truth.shape, np.nan, dtype=np.result_type(self.observations.dtype, np.float32))
        out[:, self.obs_index] = self.observations
        return out

    def cycle_indices(self, dates: Iterable[datetime | str]) -> np.ndarray:
        """Cycle index ``t`` of each requested date.

        Parameters
        ----------
        dates : iterable of datetime or str
            Valid times; each must be a cycle time of this archive.

        Returns
        -------
        np.ndarray
            ``[len(dates)]`` integer cycle indices.

        Raises
        ------
        ValueError
            If a date is outside the archive or falls between two cycles; the message names the archive's range.
        """
        step = timedelta(hours=int(self.cycle_hours))
        first, last = self.first_date, self.first_date + (self.cycles - 1) * step
        indices, outside, between = [], [], []
        for date in dates:
            date = _parse_date(date)
            t, rest = divmod(date - first, step)
            if date < first or date > last:
                outside.append(date)
            elif rest:
                between.append(date)
            indices.append(t)
        if outside or between:
            bad = outside or between
            what = "outside the archive" if outside else "between two cycles"
            raise ValueError(
                f"{len(bad)} requested date(s) {what} (first: {bad[0].isoformat()}); the archive holds "
                f"{self.cycles} cycles every {self.cycle_hours} h from {first.isoformat()} to {last.isoformat()}. "
                "Choose recipe dates inside this range with a frequency that is a multiple of the cycle length, "
                "or write a longer archive."
            )
        return np.asarray(indices, dtype=np.int64)

    def from_cycle(self, first: int) -> EDAArchive:
        """The cycles ``first .. T-1`` (e.g. without a spin-up), with ``start_date`` moved to cycle ``first``."""
        if not 0 <= int(first) < self.cycles:
            raise ValueError(f"first cycle must be in [0, {self.cycles}), got {first}.")
        cut = slice(int(first), None)
        return EDAArchive(
            truth=self.truth[cut],
            observations=self.observations[cut],
            obs_index=self.obs_index,
            background=self.background[cut],
            analysis=self.analysis[cut],
            settings=dict(self.settings),
            start_date=self.dates[int(first)].isoformat(),
            cycle_hours=self.cycle_hours,
        )

    @classmethod
    def concatenate(cls, archives: Sequence[EDAArchive]) -> EDAArchive:
        """Archives one after another in time: the result starts at the first one's ``start_date``.

        Cycle ``t`` of archive ``k`` becomes cycle ``sum(T_0 .. T_{k-1}) + t``; the dates of the later archives are
        renumbered (they are training samples, not a continuous run). ``settings`` holds ``parts``, the settings
        and cycle count of each archive.

        Raises
        ------
        ValueError
            When the archives differ in members, state size, observed variables or cycle length.
        """
        archives = list(archives)
        if not archives:
            raise ValueError("concatenate needs at least one EDA archive.")
        first = archives[0]
        for k, other in enumerate(archives[1:], start=1):
            same = (
                other.members == first.members
                and other.truth.shape[-1] == first.truth.shape[-1]
                and np.array_equal(other.obs_index, first.obs_index)
                and int(other.cycle_hours) == int(first.cycle_hours)
            )
            if not same:
                raise ValueError(
                    f"cannot concatenate EDA archive {k} (N={other.members}, n={other.truth.shape[-1]}, "
                    f"{other.obs_index.size} observed, {other.cycle_hours} h) with archive 0 (N={first.members}, "
                    f"n={first.truth.shape[-1]}, {first.obs_index.size} observed, {first.cycle_hours} h); "
                    "record them with the same members, state size, observations and cycle length."
                )
        return cls(
            truth=np.concatenate([a.truth for a in archives]),
            observations=np.concatenate([a.observations for a in archives]),
            obs_index=first.obs_index,
            background=np.concatenate([a.background for a in archives]),
            analysis=np.concatenate([a.analysis for a in archives]),
            settings={"parts": [{"cycles": a.cycles, "settings": a.settings} for a in archives]},
            start_date=first.start_date,
            cycle_hours=first.cycle_hours,
        )

    def save(self, path: str | Path) -> Path:
        """Write the archive to a compressed ``.npz`` file (its folder is created if missing) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            truth=self.truth,
            observations=self.observations,
            obs_index=self.obs_index,
            background=self.background,
            analysis=self.analysis,
            meta=np.array(
                json.dumps({"settings": self.settings, "start_date": self.start_date, "cycle_hours": self.cycle_hours})
            ),
        )
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> EDAArchive:
        """Read an archive written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path`` (nor at ``path.npz``).
        UserInputError
            If the file is not such an archive (not an ``.npz``, truncated, keys or metadata missing, arrays that
            disagree); the message names the file and how to write a valid one.
        """
        path = Path(path)
        if not path.exists() and path.with_name(path.name + ".npz").exists():
            path = path.with_name(path.name + ".npz")  # np.savez appends the suffix
        if not path.exists():
            raise FileNotFoundError(
                f"No EDA archive at {path}; write one with `hybrid-eda l96 run ... --archive {path}`."
            )
        if path.is_dir():
            raise UserInputError(f"{path} is a folder, not an EDA archive; {_HOW_TO_WRITE.format(path=path)}")
        with path.open("rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # every .npz is a zip file
                raise UserInputError(
                    f"{path} is not an EDA archive: it is not an .npz (zip) file; {_HOW_TO_WRITE.format(path=path)}"
                )
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = set(_KEYS) - set(f.files)
                if missing:
                    raise UserInputError(
                        f"{path} is not a hybrid-eda L96 archive: it lacks {sorted(missing)}; "
                        + _HOW_TO_WRITE.format(path=path)
                    )
                meta = json.loads(str(f["meta"]))
                arrays = {name: f[name] for name in _KEYS if name != "meta"}
            return cls(
                **arrays,
                settings=meta["settings"],
                start_date=meta["start_date"],
                cycle_hours=int(meta["cycle_hours"]),
            )
        except UserInputError:
            raise
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error) as err:
            # np.load of a file that is not a zip (ValueError: "pickled data"), a truncated one (BadZipFile,
            # EOFError), a corrupted member (zlib.error, BadZipFile: bad CRC), unreadable or incomplete metadata.
            reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise UserInputError(
                f"cannot read the EDA archive {path}: it is not a complete .npz written by hybrid-eda ({reason}); "
                + _HOW_TO_WRITE.format(path=path)
            ) from err


#: Arrays (and the JSON ``meta``) an archive file holds.
_KEYS = ("truth", "observations", "obs_index", "background", "analysis", "meta")
_HOW_TO_WRITE = "write a valid one with `hybrid-eda l96 run ... --archive {path}`."


def _parse_date(date: datetime | str) -> datetime:
    """A naive UTC ``datetime`` from an ISO string or a datetime (an aware one is converted to UTC)."""
    if isinstance(date, str):
        try:
            date = datetime.fromisoformat(date)
        except ValueError as err:
            raise ValueError(
                f"Cannot read the date {date!r}; write it in ISO format, e.g. 2000-01-01T00:00:00."
            ) from err
    if not isinstance(date, datetime):
        raise ValueError(f"Expected a datetime or an ISO date string, got {date!r} ({type(date).__name__}).")
    if date.tzinfo is not None:
        date = date.astimezone(UTC).replace(tzinfo=None)
    return date
