"""The entries of a copy item: the paths below a directory source, one string for them all."""

from __future__ import annotations

import io  # loaded by the interpreter's start anyway

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


def entry_string(paths: Iterable[str]) -> str:
    """Paths as one string, each ended by a NUL (what `entry_paths` reads), written as they
    come: no list of them is made.

    >>> entry_string(["a", "a/b"])
    'a\\x00a/b\\x00'
    """
    out = io.StringIO()
    for path in paths:
        out.write(path)
        out.write("\0")
    return out.getvalue()


def entry_paths(entries: str) -> Iterator[str]:
    """The paths of a copy item's `entries` (each ended by a NUL), one at a time: a tree of many
    entries is never a list of strings (the builder's `CopyItem.each` and the sandbox child's
    `each_item` both read them so).

    >>> list(entry_paths("a\\0a/b\\0"))
    ['a', 'a/b']
    """
    start = 0
    while start < len(entries):
        end = entries.index("\0", start)
        yield entries[start:end]
        start = end + 1
