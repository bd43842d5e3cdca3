"""Walking and removing directory trees one component at a time, at any depth.

A layer may nest paths deeper than Python's stack and longer than PATH_MAX, so nothing here
recurses or hands the kernel a full path: every call is relative to the fd of the directory
being visited. Only that one fd is held, whatever the depth; going back up opens `..` and
checks it is the directory we came from, so a tree changed under the walk is an error rather
than a walk somewhere else.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

from layerbuild.errors import FormatError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Node(Protocol):
    """What a walk needs of an entry: its name in its directory and its lstat."""

    @property
    def name(self) -> bytes: ...

    @property
    def st(self) -> os.stat_result: ...


N = TypeVar("N", bound=Node)


class Cursor:
    """An fd of one directory of a tree, moved down by name and back up through `..`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        st = os.fstat(fd)
        self._ids = [(st.st_dev, st.st_ino)]
        self._names: list[bytes] = []

    @classmethod
    def open(cls, path: bytes | str | os.PathLike[str]) -> Cursor:
        """A cursor at the directory `path`, a path the caller trusts."""
        return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))

    @property
    def depth(self) -> int:
        """How many levels below the starting directory the cursor is."""
        return len(self._names)

    def rel(self) -> bytes:
        """The current directory's path below the starting one (b"" at the start)."""
        return b"/".join(self._names)

    def down(self, name: bytes, st: os.stat_result | None = None) -> None:
        """Enter the subdirectory `name` (the one `st` describes, when given)."""
        child = os.open(name, _DIR, dir_fd=self.fd)
        got = os.fstat(child)
        if st is not None and (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino):
            os.close(child)
            raise FormatError(f"{os.fsdecode(self._child(name))}: replaced while being read")
        os.close(self.fd)
        self.fd = child
        self._ids.append((got.st_dev, got.st_ino))
        self._names.append(name)

    def up(self) -> bytes:
        """Go back to the parent directory; returns the name of the one left."""
        parent = os.open("..", _DIR, dir_fd=self.fd)
        got = os.fstat(parent)
        if (got.st_dev, got.st_ino) != self._ids[-2]:
            os.close(parent)
            raise FormatError(f"{os.fsdecode(self.rel())}: moved while being read")
        os.close(self.fd)
        self.fd = parent
        self._ids.pop()
        return self._names.pop()

    def close(self) -> None:
        """Close the fd held."""
        os.close(self.fd)

    def _child(self, name: bytes) -> bytes:
        return self.rel() + b"/" + name if self._names else name


def walk(cursor: Cursor, children: Callable[[Cursor], list[N]]) -> Iterator[N]:
    """Every entry below the cursor's directory, parents first, never following a symlink.

    `children` lists the directory the cursor is at, in the order wanted. While an entry is
    being handled, `cursor.fd` is the directory holding it. The cursor ends where it started.
    """
    stack = [iter(children(cursor))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            if stack:
                cursor.up()
            continue
        yield entry
        if stat.S_ISDIR(entry.st.st_mode):
            cursor.down(entry.name, entry.st)
            stack.append(iter(children(cursor)))


class Found:
    """A directory entry as `scan` lists it."""

    __slots__ = ("name", "st")

    def __init__(self, name: bytes, st: os.stat_result) -> None:
        self.name = name
        self.st = st


def scan(cursor: Cursor) -> list[Found]:
    """The entries of the cursor's directory, with their lstat, in directory order."""
    with os.scandir(cursor.fd) as it:
        return [Found(os.fsencode(de.name), de.stat(follow_symlinks=False)) for de in it]


def open_below(top: bytes, rel: bytes, flags: int) -> int:
    """Open `top/rel` one component at a time, never through a symlink, at any length."""
    *dirs, leaf = rel.split(b"/")
    fd = os.open(top, _PATH_DIR)
    try:
        for comp in dirs:
            child = os.open(comp, _PATH_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(leaf, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
