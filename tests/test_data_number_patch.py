"""``data.number_patch``: the member selection and the member split replace anemoi's ``Number`` and undo it, stacked."""

from __future__ import annotations

from anemoi.datasets.usage.gridded import ensemble

from hybrid_eda.data.member_split import MemberSplitCallback, SplitNumberSelection, member_split_installed
from hybrid_eda.data.members import MemberSelectionCallback, NumberSelection, member_selection_installed


def test_patches_stack_and_are_undone_last_first():
    original = ensemble.Number
    assert original.__module__.startswith("anemoi.datasets")
    with member_selection_installed():
        assert ensemble.Number is NumberSelection
        with member_split_installed():
            assert ensemble.Number is SplitNumberSelection
            with member_split_installed():  # idempotent: the inner one changes and undoes nothing
                assert ensemble.Number is SplitNumberSelection
            assert ensemble.Number is SplitNumberSelection
        assert ensemble.Number is NumberSelection  # the split restores the selection it replaced
    assert ensemble.Number is original


def test_callbacks_install_their_own_patch():
    original = ensemble.Number
    try:
        MemberSplitCallback().on_run_start(config=None)  # what Hydra calls before anemoi-training's main
        assert ensemble.Number is SplitNumberSelection
        MemberSelectionCallback().on_multirun_start(config=None)
        assert ensemble.Number is NumberSelection
    finally:
        MemberSelectionCallback.patch.uninstall()
        MemberSplitCallback.patch.uninstall()
    assert ensemble.Number is original
