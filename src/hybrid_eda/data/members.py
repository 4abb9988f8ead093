"""Member subsets of an ensemble store: M of N members per sample, read selectively, for training.

The variance emulator reads M members of the N-member EDA (``[..., ens=M, grid, var]``) and predicts the N-member
spread, which is stored once in a target store (:mod:`hybrid_eda.data.statistics`). Which M members a sample uses is
set in the dataset config that anemoi-training passes to ``open_dataset``, with the usual ``number:`` (1-based) or
``members:`` (0-based) keys::

    dataloader:
      training:
        datasets:
          members:
            dataset_config: {dataset: eda-n80-ml.zarr, number: [1, 2, 3, 4, 5]}            # fixed members
            # or: {dataset: eda-n80-ml.zarr, number: {random: 5, seed: 1}}                  # 5 of all N, per sample
            # or: {dataset: eda-n80-ml.zarr, number: {random: 5, from: 1/to/40, seed: 1}}   # 5 of members 1..40

Why not anemoi's own selection: in anemoi-datasets 0.5.47 ``number:``/``members:`` builds a ``Number`` view that
(1) crashes as soon as a date subset sits above it, which is always the case in anemoi-training
(``open_dataset(config, start=..., end=...)``): a sample of one time step fails with ``AttributeError: 'list'
object has no attribute 'indices'`` and a sample of several with ``IndexError: boolean index did not match``, and
(2) reads every member from zarr and masks afterwards, so a 5-of-50 sample costs the I/O of 50 members.
:class:`MemberSubset` maps the member axis correctly for any index and reads only the chosen members (the stores
are chunked one member per chunk), one zarr chunk per read and the reads of a sample in a thread pool (zarr's blosc
decompression releases the GIL). :func:`install_member_selection` makes ``number:``/``members:`` build a
:class:`MemberSubset` instead of anemoi's ``Number``; anemoi-training runs it through the Hydra callback
:class:`MemberSelectionCallback`. Nothing is patched at import.

Random subsets (``{random: M}``) give one subset per sample (all time steps of a read share it), a pure function
of ``(seed, date index, pass)``. In anemoi-training's data loaders the pass is the epoch as anemoi's own shuffle
sees it: the state of the shuffle generator (``MultiDataset.rng``) that every rank and worker of a run holds alike.
So the members of a sample do not depend on how the run is laid out: a 2-process DDP run with batch 1 trains on the
very samples, members included, of a 1-process run with batch 2; every rank of a reader group (which reads the same
samples, one grid shard each) picks the same members; and a date gets new members each epoch, with persistent
data-loader workers or not (a loader that does not shuffle keeps one subset per date while its workers persist).
Outside those loaders (direct reads, other loaders) the pass is the number of earlier reads of that date by the
same dataset object, so reads are still reproducible and a date read again gets new members. ``resample: false``
instead fixes one subset per date, a pure function of ``(seed, date index)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

import hybrid_eda.data.anemoi_compat  # noqa: F401  isort: skip  (stops unless anemoi-datasets is the pinned 0.5.47)
from anemoi.datasets.usage.debug import Node
from anemoi.datasets.usage.forwards import Forwards

from hybrid_eda.data.number_patch import NumberPatch, NumberPatchCallback

__all__ = [
    "MemberSelection",
    "MemberSelectionCallback",
    "MemberSubset",
    "check_store_pair",
    "install_member_selection",
    "member_selection_installed",
    "uninstall_member_selection",
]

LOGGER = logging.getLogger(__name__)

#: Offset of each selection key: ``number``/``numbers`` are 1-based (GRIB numbers), ``member``/``members`` 0-based.
OFFSETS = {"number": 1, "numbers": 1, "member": 0, "members": 0}
#: Most threads one read uses to fetch its members (default: one per member chunk read, at most the CPU count).
MAX_READ_THREADS = 8
_RANDOM_KEYS = {"random", "from", "seed", "resample"}


def _expand_numbers(value: Any) -> list[int]:
    """``[1, 3]``, ``3``, ``"1/to/5"`` or ``"1/to/9/by/2"`` -> list of ints."""
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) in (3, 5) and parts[1] == "to" and (len(parts) == 3 or parts[3] == "by"):
            step = int(parts[4]) if len(parts) == 5 else 1
            return list(range(int(parts[0]), int(parts[2]) + 1, step))
        return [int(p) for p in parts]
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    return [int(v) for v in value]


@dataclass(frozen=True)
class MemberSelection:
    """Which members a sample uses: fixed ones, or a seeded random subset of ``size`` drawn from ``pool``.

    Attributes
    ----------
    members : tuple of int or None
        Fixed 0-based positions on the store's ensemble axis (sorted, unique); ``None`` for random subsets.
    size : int or None
        M, the number of members drawn per sample (random subsets only).
    pool : tuple of int or None
        0-based positions to draw from (random subsets; ``None``: all members of the store).
    seed : int
        Seed of the random subsets.
    resample : bool
        Draw a new subset at every read (``True``), or keep one subset per date (``False``); see the module
        docstring.
    """

    members: tuple[int, ...] | None = None
    size: int | None = None
    pool: tuple[int, ...] | None = None
    seed: int = 0
    resample: bool = True

    def __post_init__(self) -> None:
        if (self.members is None) == (self.size is None):
            raise ValueError("MemberSelection needs either fixed members or a random subset size, not both/neither")
        if self.members is not None and not self.members:
            raise ValueError("member selection is empty; list at least one member")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"random member subsets need a positive integer size, got {self.size!r}")

    @property
    def is_random(self) -> bool:
        return self.size is not None

    @classmethod
    def from_config(cls, key: str, value: Any) -> MemberSelection:
        """Parse one ``number:``/``numbers:``/``member:``/``members:`` entry of an ``open_dataset`` config."""
        if key not in OFFSETS:
            raise ValueError(f"unknown member selection key {key!r}; use one of {sorted(OFFSETS)}")
        offset = OFFSETS[key]
        if isinstance(value, dict):
            unknown = sorted(set(value) - _RANDOM_KEYS)
            if unknown or "random" not in value:
                raise ValueError(
                    f"{key}: {value!r} is not a member subset; a random subset is "
                    f"{{random: M, seed: 0, from: <{key} list, optional>, resample: true}}"
                    + (f" (unknown keys {unknown})" if unknown else "")
                )
            pool = None
            if value.get("from") is not None:
                pool = tuple(sorted({n - offset for n in _expand_numbers(value["from"])}))
            return cls(
                size=int(value["random"]),
                pool=pool,
                seed=int(value.get("seed", 0)),
                resample=bool(value.get("resample", True)),
            )
        return cls(members=tuple(sorted({n - offset for n in _expand_numbers(value)})))

    def describe(self, offset: int = 1) -> str:
        """Human-readable selection, in GRIB numbers by default."""
        if self.members is not None:
            return f"numbers {[m + offset for m in self.members]}"
        pool = "all members" if self.pool is None else f"numbers {[m + offset for m in self.pool]}"
        return f"{self.size} random members of {pool} (seed {self.seed})"


class MemberSubset(Forwards):
    """A view of an ensemble dataset with M selected members: fixed, or seeded random subsets (per read or per date).

    Indexing follows anemoi-datasets (``[dates, variables, ensemble, grid]`` with ints, slices, lists or arrays on
    any axis); the ensemble axis counts the M selected members. Only the selected members are read from the
    forward dataset, one zarr chunk per read: one chunk of members and, for grid slices, one chunk of grid points
    (runs of consecutive members and the whole grid index where the store's chunking is unknown, e.g. stores joined
    with ``ensemble:``). A chunk-sized read lets zarr decode straight into the array it returns: at N80 x 137
    levels a member is two 49 MB grid chunks, read in 0.04 s this way and 0.11 s in one read across both. The reads
    of one sample run in a small thread pool that lives for one read only (safe in forked data-loader workers) and
    copies each piece into one output array; the result is the same as reading in turn.

    Parameters
    ----------
    forward : anemoi.datasets Dataset
        The ensemble dataset (shape ``[dates, variables, N, grid]``).
    selection : MemberSelection
        Which members to use.
    read_threads : int, optional
        Threads that read the members of one sample; default ``min(reads, CPU count, MAX_READ_THREADS)``, 1 reads
        them in turn.
    """

    def __init__(self, forward: Any, selection: MemberSelection, read_threads: int | None = None) -> None:
        super().__init__(forward)
        self.selection = selection
        if read_threads is not None and (not isinstance(read_threads, int) or read_threads < 1):
            raise ValueError(f"read_threads must be a positive integer (1: read members in turn), got {read_threads!r}")
        self.read_threads = read_threads
        self._reads: dict[int, int] = {}  # date index -> earlier reads (the pass outside anemoi's loaders)
        n_members = self.forward.shape[2]
        wanted = selection.members if selection.members is not None else selection.pool
        if n_members == 1 and (selection.is_random or len(selection.members or ()) > 1):
            raise ValueError(
                f"dataset {self._label()} has no ensemble dimension (1 member), so {selection.describe()} cannot be "
                "selected; build the store with all members (e.g. number: 1/to/50 in the recipe)"
            )
        if wanted is not None:
            outside = [m for m in wanted if not 0 <= m < n_members]
            if outside:
                raise ValueError(
                    f"dataset {self._label()} has {n_members} members (numbers 1..{n_members}), fewer than asked: "
                    f"{selection.describe()} includes {[m + 1 for m in outside]} (numbers are 1-based, members "
                    "0-based); select members that exist"
                )
        if selection.is_random:
            pool = np.arange(n_members) if selection.pool is None else np.asarray(selection.pool)
            if selection.size > pool.size:
                raise ValueError(
                    f"cannot draw {selection.size} members from {pool.size} in dataset {self._label()}; "
                    f"ask for at most {pool.size} (random: {pool.size}) or build a store with more members"
                )
            self._pool = pool  # [pool]
            self._m = selection.size
        else:
            self._fixed = np.asarray(selection.members)  # [M]
            self._m = len(selection.members)
        self._shape = (*self.forward.shape[:2], self._m, *self.forward.shape[3:])
        chunks = _store_chunks(self.forward)  # zarr chunks of the store below; None: unknown (e.g. joined stores)
        self._member_chunk, self._grid_chunk = (int(chunks[2]), int(chunks[3])) if chunks else (None, None)

    # -- members of a sample -----------------------------------------------------------------------------------
    def members_for(self, date_index: int) -> np.ndarray:
        """Fixed members, or the subset of ``resample: false`` for forward position ``date_index``. ``[M]``, sorted."""
        if not self.selection.is_random:
            return self._fixed
        if self.selection.resample:
            raise ValueError("random subsets with resample: true have no fixed members per date; use draw_members()")
        rng = np.random.default_rng(np.random.SeedSequence(entropy=self.selection.seed, spawn_key=(int(date_index),)))
        return np.sort(rng.choice(self._pool, size=self._m, replace=False))

    def draw_members(self, date_index: int) -> np.ndarray:
        """The members of one read starting at forward position ``date_index``. ``[M]``, sorted.

        Fixed members, the subset of ``resample: false``, or the random subset of ``(seed, date index, pass)``
        (the pass: see the module docstring).
        """
        if not (self.selection.is_random and self.selection.resample):
            return self.members_for(date_index)
        date_index = int(date_index)
        key = _loader_pass_key()
        if key is None:  # not in an anemoi-training loader: count this object's reads of the date
            key = (self._reads.get(date_index, 0),)
            self._reads[date_index] = key[0] + 1
        seq = np.random.SeedSequence(entropy=self.selection.seed, spawn_key=(date_index, *key))
        return np.sort(np.random.default_rng(seq).choice(self._pool, size=self._m, replace=False))

    # -- dataset interface ---------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def __getitem__(self, index: Any) -> np.ndarray:
        index = _as_full_tuple(index, len(self._shape))
        dates, squeeze_dates = _positions(index[0], self._shape[0])
        variables, squeeze_vars = _keep_dims(index[1])
        chosen_axis, squeeze_ens = _keep_dims(index[2])
        rest = [_keep_dims(i) for i in index[3:]]
        others = tuple(k for k, _ in rest)
        chosen = self.draw_members(dates[0] if dates else 0)[chosen_axis]  # [m]: one subset for the whole read
        parts = [self._read(run, variables, chosen, others) for run in _runs(dates)]
        data = np.concatenate(parts, axis=0) if parts else self._read(slice(0, 0), variables, chosen, others)
        squeeze = [squeeze_dates, squeeze_vars, squeeze_ens, *(s for _, s in rest)]
        axes = tuple(i for i, s in enumerate(squeeze) if s)
        return np.squeeze(data, axis=axes) if axes else data  # [dates, variables, ens, grid] minus int axes

    def _read(self, dates: slice, variables: Any, members: np.ndarray, others: tuple) -> np.ndarray:
        """Read ``members`` (forward positions, any order) one zarr chunk per read, the reads in a thread pool.

        Each read covers one chunk of members and, for slices of the grid, one chunk of grid points: zarr then
        decodes straight into the array it returns (a read spanning several grid chunks decodes each into a
        temporary and copies it, ~4x slower). The pieces are copied into one output array by the threads.
        """
        member_pieces = _split_at_chunks(_runs(np.atleast_1d(members).tolist()), self._member_chunk)
        grid = others[0] if others else slice(None)
        grid_pieces = _split_slice(grid, self._grid_chunk, self._shape[3]) if isinstance(grid, slice) else None
        tasks = [
            (m_piece, m_at, g_piece, g_at)
            for m_piece, m_at in _with_offsets(member_pieces)
            for g_piece, g_at in (_with_offsets(grid_pieces) if grid_pieces else [(grid, None)])
        ]
        if not tasks:  # no member selected
            return self.forward[(dates, variables, slice(0, 0), *others)]
        n_members = sum(piece.stop - piece.start for piece in member_pieces)
        n_grid = sum(piece.stop - piece.start for piece in grid_pieces) if grid_pieces else None
        out: list[np.ndarray] = []
        lock = threading.Lock()

        def read(task: tuple) -> None:
            m_piece, m_at, g_piece, g_at = task
            block = self.forward[(dates, variables, m_piece, g_piece, *others[1:])]  # [dates, variables, m, grid]
            with lock:
                if not out:
                    shape = (*block.shape[:2], n_members, block.shape[3] if n_grid is None else n_grid)
                    out.append(np.empty(shape + block.shape[4:], dtype=block.dtype))
            where = slice(None) if g_at is None else slice(g_at, g_at + block.shape[3])
            out[0][:, :, m_at : m_at + block.shape[2], where] = block

        threads = self.read_threads or min(len(tasks), os.cpu_count() or 1, MAX_READ_THREADS)
        if threads > 1 and len(tasks) > 1:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hybrid-eda-members") as pool:
                list(pool.map(read, tasks))
        else:
            for task in tasks:
                read(task)
        return out[0]  # [dates, variables, m, grid]

    def _label(self) -> str:
        name = getattr(self.forward, "dataset_name", None) or getattr(self.forward, "path", None)
        return repr(name) if name else type(self.forward).__name__

    def tree(self) -> Node:
        return Node(self, [self.forward.tree()], members=self.selection.describe())

    def forwards_subclass_metadata_specific(self) -> dict[str, Any]:
        sel = self.selection
        if sel.is_random:
            pool = None if sel.pool is None else [m + 1 for m in sel.pool]
            return {"random_members": {"size": sel.size, "from": pool, "seed": sel.seed, "resample": sel.resample}}
        return {"numbers": [m + 1 for m in sel.members]}

    def origin_transformation(self, variable: str, origins: Any) -> dict[str, Any]:
        return {"name": "number", "config": self.forwards_subclass_metadata_specific()}


class NumberSelection(MemberSubset):
    """Drop-in for anemoi's ``Number(forward, **kwargs)``: what ``number:``/``members:`` build once installed."""

    def __init__(self, forward: Any, **kwargs: Any) -> None:
        if len(kwargs) != 1:
            raise ValueError(
                f"give the members with exactly one of {sorted(OFFSETS)}, got {sorted(kwargs)}; "
                "e.g. number: [1, 2, 3] (1-based) or members: [0, 1, 2] (0-based)"
            )
        ((key, value),) = kwargs.items()
        super().__init__(forward, MemberSelection.from_config(key, value))


MEMBER_SELECTION = NumberPatch(
    NumberSelection, "hybrid-eda: number:/members: in dataset configs now select members with MemberSubset", LOGGER
)


def install_member_selection() -> bool:
    """Make ``number:``/``members:`` in ``open_dataset`` configs build a :class:`MemberSubset`.

    Replaces ``anemoi.datasets.usage.gridded.ensemble.Number`` (which anemoi looks up by name when it meets those
    keys). Idempotent; returns ``True`` if it changed anything. Undo with :func:`uninstall_member_selection`.
    """
    return MEMBER_SELECTION.install()


def uninstall_member_selection() -> None:
    """Restore anemoi's own ``Number`` (undoes :func:`install_member_selection`)."""
    MEMBER_SELECTION.uninstall()


def member_selection_installed() -> contextlib.AbstractContextManager[None]:
    """Context manager: :func:`install_member_selection` inside, the previous state after."""
    return MEMBER_SELECTION.installed()


class MemberSelectionCallback(NumberPatchCallback):
    """Hydra callback that installs :class:`MemberSubset` selection before anemoi-training opens its datasets.

    Add to a training config::

        hydra:
          callbacks:
            member_selection:
              _target_: hybrid_eda.data.members.MemberSelectionCallback
    """

    patch = MEMBER_SELECTION


def check_store_pair(inputs: Any, target: Any, members: int | None = None, atol_degrees: float = 1e-6) -> None:
    """Check that an input (members) dataset and a target (statistics) dataset can be trained together.

    Parameters
    ----------
    inputs, target : anemoi.datasets Dataset
        The member store (``[dates, variables, N, grid]``) and the statistics store (``[dates, variables, 1, grid]``).
    members : int, optional
        M, the number of members a sample needs from ``inputs``.
    atol_degrees : float
        Tolerance on grid coordinates.

    Raises
    ------
    ValueError
        Naming what differs: no ensemble dimension, fewer members than ``members``, a target with more than one
        member, different grids or different dates.
    """
    n_in, n_target = inputs.shape[2], target.shape[2]
    if n_in < 2:
        raise ValueError(
            f"the input store has no ensemble dimension ({n_in} member); build it with all members (number: 1/to/N)"
        )
    if members is not None and n_in < members:
        raise ValueError(f"the input store has {n_in} members, fewer than the {members} a sample needs")
    if n_target != 1:
        raise ValueError(
            f"the target store has {n_target} members; build it with the ensemble-statistics filter so that it "
            "holds one field per statistic"
        )
    lat_in, lon_in = np.asarray(inputs.latitudes), np.asarray(inputs.longitudes)
    lat_t, lon_t = np.asarray(target.latitudes), np.asarray(target.longitudes)
    if lat_in.shape != lat_t.shape:
        raise ValueError(
            f"input and target stores are on different grids: {lat_in.size} vs {lat_t.size} points "
            f"(resolution {getattr(inputs, 'resolution', '?')} vs {getattr(target, 'resolution', '?')}); build the "
            "member and std stores from the same GRIB files (same grid)"
        )
    dlon = np.abs((lon_in - lon_t + 180.0) % 360.0 - 180.0)
    if not (np.allclose(lat_in, lat_t, atol=atol_degrees) and np.all(dlon <= atol_degrees)):
        worst = int(np.argmax(np.abs(lat_in - lat_t) + dlon))
        raise ValueError(
            f"input and target stores have the same number of points but different coordinates (e.g. point {worst}: "
            f"{lat_in[worst]:.4f},{lon_in[worst]:.4f} vs {lat_t[worst]:.4f},{lon_t[worst]:.4f}); build both from the "
            "same grid"
        )
    if not np.array_equal(np.asarray(inputs.dates), np.asarray(target.dates)):
        raise ValueError(
            f"input and target stores cover different dates ({inputs.dates[0]}..{inputs.dates[-1]}, {len(inputs.dates)}"
            f" vs {target.dates[0]}..{target.dates[-1]}, {len(target.dates)}); build both with the same dates"
        )


def _loader_pass_key() -> tuple[int, ...] | None:
    """The pass over the data of a read in an anemoi-training data-loader worker, as 32-bit words, or None.

    anemoi-training's ``MultiDataset`` seeds its shuffle generator ``rng`` alike on every rank and worker (from the
    base seed and the epoch) and draws one permutation from it per epoch, so its state names the epoch the same way
    everywhere, with persistent workers too. None outside a torch worker or for datasets without such a generator.
    """
    torch = sys.modules.get("torch")
    info = torch.utils.data.get_worker_info() if torch is not None else None
    rng = getattr(getattr(info, "dataset", None), "rng", None)
    if not isinstance(rng, np.random.Generator):
        return None
    digest = hashlib.sha256(repr(rng.bit_generator.state).encode()).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


# -- index helpers ---------------------------------------------------------------------------------------------------
def _as_full_tuple(index: Any, ndim: int) -> tuple:
    if not isinstance(index, tuple):
        index = (index,)
    if any(i is Ellipsis for i in index):
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1 :]
    if len(index) > ndim:
        raise IndexError(f"too many indices: {len(index)} for a {ndim}-dimensional dataset")
    return index + (slice(None),) * (ndim - len(index))


def _positions(index: Any, length: int) -> tuple[list[int], bool]:
    """Positions selected by ``index`` on an axis of ``length``, and whether the axis is dropped (int index)."""
    if isinstance(index, (int, np.integer)):
        pos = int(index) + length if index < 0 else int(index)
        if not 0 <= pos < length:
            raise IndexError(f"index {index} is out of range for {length} dates")
        return [pos], True
    return np.arange(length)[index].tolist(), False


def _keep_dims(index: Any) -> tuple[Any, bool]:
    """An index that keeps its axis (ints become length-1 slices) and whether to squeeze the axis afterwards."""
    if isinstance(index, (int, np.integer)):
        i = int(index)
        return (slice(i, i + 1) if i != -1 else slice(-1, None)), True
    if isinstance(index, np.ndarray):
        return index.tolist(), False
    if isinstance(index, tuple):
        return list(index), False
    return index, False


def _store_chunks(dataset: Any) -> tuple[int, ...] | None:
    """Zarr chunks of the store below ``dataset``, through views that keep its member and grid axes, or None."""
    node, shape = dataset, tuple(dataset.shape[2:])
    while node is not None and tuple(node.shape[2:]) == shape:
        chunks = getattr(node, "chunks", None)
        if chunks is not None and len(chunks) == 4:
            return tuple(chunks)
        node = getattr(node, "forward", None)
    return None


def _split_slice(index: slice, chunk: int | None, length: int) -> list[slice] | None:
    """A step-1 slice of an axis of ``length`` split at multiples of ``chunk`` (None: other slices, unknown chunk)."""
    start, stop, step = index.indices(length)
    if chunk is None or step != 1 or stop <= start:
        return None
    return _split_at_chunks([slice(start, stop)], chunk)


def _with_offsets(pieces: list[slice]) -> list[tuple[slice, int]]:
    """Each slice with its position in the concatenation of all of them."""
    offsets = np.cumsum([0] + [piece.stop - piece.start for piece in pieces[:-1]])
    return [(piece, int(at)) for piece, at in zip(pieces, offsets, strict=True)]


def _split_at_chunks(runs: list[slice], chunk: int | None) -> list[slice]:
    """Split runs of members where they cross a chunk boundary, so that each read decodes one chunk of members."""
    if chunk is None:
        return runs
    pieces = []
    for run in runs:
        start = run.start
        while start < run.stop:
            stop = min(run.stop, (start // chunk + 1) * chunk)
            pieces.append(slice(start, stop))
            start = stop
    return pieces


def _runs(positions: Sequence[int]) -> list[slice]:
    """Split positions into maximal runs of consecutive ascending integers, as slices (order kept)."""
    runs: list[slice] = []
    start = prev = None
    for p in positions:
        if prev is not None and p == prev + 1:
            prev = p
            continue
        if start is not None:
            runs.append(slice(start, prev + 1))
        start = prev = p
    if start is not None:
        runs.append(slice(start, prev + 1))
    return runs
