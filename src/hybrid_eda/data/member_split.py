"""Members in a seeded random order per sample: the guide/target split of the member generator's training.

The member generator is trained on EDA stores holding the backgrounds and analyses of all N members. Each sample
(one date) is split into N_s *guides* (analysis and background are inputs) and the other *targets* (only their
backgrounds are inputs; their analyses are what the generated members are scored against). The split is made here,
in the loader: ``number: {random: M, seed: s, shuffle: true}`` reads M of the N members **in a random order** (the
same draw as :class:`~hybrid_eda.data.members.MemberSubset`'s ``{random: M}`` without its final sort), and the
model (:class:`hybrid_eda.models.MemberGenerator`) takes the first N_s members of that order as guides and the rest
as targets. So which members are guides is a pure function of ``(seed, date index, pass)`` exactly like the
subsets of :mod:`hybrid_eda.data.members` (the pass is the epoch in anemoi-training's loaders; ``resample: false``
fixes one order per date, for validation): reproducible, independent of the run's layout, new every epoch.

``M = N`` (``random: 20`` of a 20-member store) uses every member, only the order is drawn. Without ``shuffle``
the keys mean what they mean in :mod:`hybrid_eda.data.members` (sorted members).

Installed by the Hydra callback :class:`MemberSplitCallback` (it also does what
:class:`~hybrid_eda.data.members.MemberSelectionCallback` does; list only one of the two)::

    hydra:
      callbacks:
        member_split:
          _target_: hybrid_eda.data.member_split.MemberSplitCallback
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np

from hybrid_eda.data.members import OFFSETS, MemberSelection, MemberSubset, _loader_pass_key
from hybrid_eda.data.number_patch import NumberPatch, NumberPatchCallback

__all__ = [
    "ShuffledMemberSubset",
    "MemberSplitCallback",
    "install_member_split",
    "member_split_installed",
    "uninstall_member_split",
]

LOGGER = logging.getLogger(__name__)


class ShuffledMemberSubset(MemberSubset):
    """:class:`~hybrid_eda.data.members.MemberSubset` whose random subsets keep the order they were drawn in.

    ``[dates, variables, M, grid]``: position ``i`` of the ensemble axis is the ``i``-th member drawn, so the first
    N_s positions are a uniformly random N_s-subset of the M (and of the N) members.
    """

    def __init__(self, forward: Any, selection: MemberSelection, shuffle: bool = True, **kwargs: Any) -> None:
        super().__init__(forward, selection, **kwargs)
        if shuffle and not selection.is_random:
            msg = (
                f"shuffle: true needs a random subset ({{random: M, seed: s, shuffle: true}}), got "
                f"{selection.describe()}; give random: M (M = N draws only the order)"
            )
            raise ValueError(msg)
        self.shuffle = bool(shuffle)

    def _draw(self, date_index: int, key: tuple[int, ...]) -> np.ndarray:
        seq = np.random.SeedSequence(entropy=self.selection.seed, spawn_key=(int(date_index), *key))
        order = np.random.default_rng(seq).choice(self._pool, size=self._m, replace=False)
        return order if self.shuffle else np.sort(order)

    def members_for(self, date_index: int) -> np.ndarray:
        """The order of ``resample: false`` for forward position ``date_index`` ``[M]`` (fixed members: sorted)."""
        if not self.selection.is_random or not self.shuffle:
            return super().members_for(date_index)
        if self.selection.resample:
            raise ValueError("random subsets with resample: true have no fixed members per date; use draw_members()")
        return self._draw(date_index, ())

    def draw_members(self, date_index: int) -> np.ndarray:
        """The members of one read at forward position ``date_index``, in drawn order ``[M]``."""
        if not (self.selection.is_random and self.selection.resample):
            return self.members_for(date_index)
        if not self.shuffle:
            return super().draw_members(date_index)
        date_index = int(date_index)
        key = _loader_pass_key()
        if key is None:  # not in an anemoi-training loader: count this object's reads of the date
            key = (self._reads.get(date_index, 0),)
            self._reads[date_index] = key[0] + 1
        return self._draw(date_index, key)

    def forwards_subclass_metadata_specific(self) -> dict[str, Any]:
        out = super().forwards_subclass_metadata_specific()
        if "random_members" in out:
            out["random_members"]["shuffle"] = self.shuffle
        return out


class SplitNumberSelection(ShuffledMemberSubset):
    """Drop-in for anemoi's ``Number(forward, **kwargs)`` accepting ``shuffle`` in a random subset."""

    def __init__(self, forward: Any, **kwargs: Any) -> None:
        if len(kwargs) != 1:
            raise ValueError(
                f"give the members with exactly one of {sorted(OFFSETS)}, got {sorted(kwargs)}; "
                "e.g. number: {random: 20, seed: 1, shuffle: true}"
            )
        ((key, value),) = kwargs.items()
        shuffle = False
        if isinstance(value, dict) and "shuffle" in value:
            value = dict(value)
            shuffle = bool(value.pop("shuffle"))
        super().__init__(forward, MemberSelection.from_config(key, value), shuffle=shuffle)


MEMBER_SPLIT = NumberPatch(
    SplitNumberSelection,
    "hybrid-eda: number:/members: now select members with ShuffledMemberSubset (shuffle: true allowed)",
    LOGGER,
)


def install_member_split() -> bool:
    """Make ``number:``/``members:`` build a :class:`ShuffledMemberSubset` (idempotent; True if it changed)."""
    return MEMBER_SPLIT.install()


def uninstall_member_split() -> None:
    """Restore what ``number:`` built before :func:`install_member_split`."""
    MEMBER_SPLIT.uninstall()


def member_split_installed() -> contextlib.AbstractContextManager[None]:
    """Context manager: :func:`install_member_split` inside, the previous state after."""
    return MEMBER_SPLIT.installed()


class MemberSplitCallback(NumberPatchCallback):
    """Hydra callback installing :class:`ShuffledMemberSubset` selection before anemoi-training opens its data."""

    patch = MEMBER_SPLIT
