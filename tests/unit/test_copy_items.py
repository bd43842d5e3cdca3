"""A copy item's entries: one string of paths, made an item each on both sides alike."""

from __future__ import annotations

import pytest

from layerbuild.errors import StepFailed
from layerbuild.sandbox.child import each_item
from layerbuild.sandbox.spec import CopyItem, encode_items


@pytest.mark.parametrize("source", [".", "src", "a/b"])
def test_entries_are_the_items_a_walk_would_give(source: str) -> None:
    inner = ["d", "d/f\u00e9\udcff", "d/g h", "e\nf", "z"]
    item = CopyItem(source, "/app", 1, 2, 0o755, recursive=False, entries="".join(
        f"{p}\0" for p in inner), entry_mode=0o640)
    base = "" if source == "." else source + "/"
    one_each = [CopyItem(source, "/app", 1, 2, 0o755, recursive=False)] + [
        CopyItem(base + p, f"/app/{p}", 1, 2, 0o640, recursive=False) for p in inner]
    assert list(item.each()) == one_each
    assert list(each_item(encode_items([item, CopyItem("x", "/y")]))) == \
        encode_items([*one_each, CopyItem("x", "/y")])


@pytest.mark.parametrize("entries", ["a", "a\0\0", "/etc\0", "a\0/b\0"])
def test_entries_that_are_not_paths_below_are_refused(entries: str) -> None:
    with pytest.raises(StepFailed):
        encode_items([CopyItem("d", "/app", recursive=False, entries=entries)])
    with pytest.raises(StepFailed):
        encode_items([CopyItem("d", "/app", entries="a\0")])  # a recursive copy has none
