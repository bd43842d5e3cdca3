"""Writing files so that a crash leaves the old content or the new, never a part of either;
removing trees of any depth.

Every writer of a file that others read (store metadata, cache entries, build records, archives)
goes through here: the bytes go to a temp file beside the target, are fsynced, and one rename
puts them in place; the directory is fsynced so the rename itself survives a power cut.

>>> write_atomic(Path("/tmp/x.json"), b"{}")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO


def temp_name(path: Path) -> Path:
    """A temp file beside `path`, unique to this process and thread: `.NAME.PID.TID.tmp`.

    Writers in several threads (stages built at once) may write the same target at once.
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (a rename into it, say) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, *, durable: bool = True, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` when the block ends without an error.

    On an error the temp file is removed and `path` is left as it was. With `durable`, the file
    and the rename are fsynced; without, only the rename is atomic (for throwaway outputs).
    `mode` (less the umask) is the file's from its creation on: a secret is never readable by
    others, not even for a moment.
    """
    tmp = temp_name(path)
    try:
        tmp.unlink(missing_ok=True)  # a dead writer's, of the same pid and thread id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with open(fd, "wb") as out:
            yield out
            out.flush()
            if durable:
                os.fsync(out.fileno())
        tmp.rename(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o666) -> None:
    """Replace `path` with `data` in one step (see `atomic_file`)."""
    with atomic_file(path, durable=durable, mode=mode) as out:
        out.write(data)


def write_json_lines(path: Path, head: Mapping[str, Any], pairs: Iterable[tuple[str, Any]] = (),
                     *, durable: bool = True) -> None:
    """Replace `path` with lines of compact JSON (see `atomic_file`): `head`, then `pairs`
    ((name, value), names unique) as objects of a few thousand, a line each, so that many of
    them (a build's files) are never one string in memory, and can be read back a line at a
    time."""
    import json  # only writers of JSON pay for it

    with atomic_file(path, durable=durable) as out:
        out.write(json.dumps(head, separators=(",", ":")).encode() + b"\n")
        rest = iter(pairs)
        while batch := dict(itertools.islice(rest, 4096)):
            out.write(json.dumps(batch, separators=(",", ":")).encode() + b"\n")


def temp_writer(name: str) -> int | None:
    """The process ID of the writer of a temp file name, or None for any other name.

    Knows `temp_name`'s `.NAME.PID.TID.tmp` and the forms older versions wrote:
    `.NAME.PID.TID` and `.NAME.PID`.

    >>> temp_writer(".k.json.41.7.tmp"), temp_writer(".k.json.41.7"), temp_writer(".k.41")
    (41, 41, 41)
    """
    if not name.startswith("."):
        return None
    parts = name[1:].removesuffix(".tmp").split(".")
    numbers = 0
    while numbers < min(2, len(parts) - 1) and parts[-1 - numbers].isdigit():
        numbers += 1
    if numbers == 0 or (numbers == 1 and name.endswith(".tmp")):
        return None
    return int(parts[-numbers])


def rmtree(path: Path) -> None:
    """Remove a tree or a file, even one that another process is removing too.

    Iterative and relative to dir fds, so no depth is too deep (no recursion, no path longer
    than one name); symlinks are removed, never followed; another filesystem mounted inside
    is refused, not emptied. Read-only dirs (layers hold them) are made writable first, which
    only a non-root owner needs.
    """
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.unlink(path.name, dir_fd=parent)
        except FileNotFoundError:
            return
        except (IsADirectoryError, PermissionError):
            # unlink(2) of a dir gives EISDIR on Linux, EPERM elsewhere.
            remove_tree(parent, path.name, str(path))
    finally:
        os.close(parent)


@dataclass
class _Level:
    """A dir being emptied: its name in its parent, its identity, the subdirs left to do."""

    name: str
    ident: tuple[int, int]
    subdirs: list[str] = field(default_factory=list)


def remove_tree(top_fd: int, name: str, shown: str | None = None) -> None:
    """Empty and remove dir `name` of `top_fd`, one open fd at a time (see `rmtree`)."""
    shown = shown or name
    fd = _open_dir(top_fd, name)
    if fd is None:
        return
    levels = [_Level(name, _ident(fd))]
    try:
        if levels[0].ident[0] != _ident(top_fd)[0]:
            raise OSError(errno.EBUSY, "a mount point, not removed", shown)
        levels[0].subdirs = _clear(fd)
        while levels:
            level = levels[-1]
            if level.subdirs:
                child = level.subdirs.pop()
                child_fd = _open_dir(fd, child)
                if child_fd is None:
                    continue
                os.close(fd)
                fd = child_fd
                levels.append(_Level(child, _ident(fd)))
                if levels[-1].ident[0] != level.ident[0]:
                    raise OSError(errno.EBUSY, "a mount point inside, not removed", shown)
                levels[-1].subdirs = _clear(fd)
                continue
            levels.pop()
            up = _open_parent(fd, levels[-1].ident, shown) if levels else top_fd
            os.close(fd)
            fd = up
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(level.name, dir_fd=fd)
    finally:
        if fd != top_fd:
            os.close(fd)


def _open_dir(dir_fd: int, name: str) -> int | None:
    """An fd of subdir `name` (not following a symlink), made readable if need be; None if
    it is gone."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except PermissionError:
            # Only a non-root owner gets here, in a tree of its own (the store's private dirs,
            # a layer it extracts), where no one else can swap the dir for a symlink meanwhile.
            os.chmod(name, 0o700, dir_fd=dir_fd)
            return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        os.unlink(name, dir_fd=dir_fd)  # a dir replaced by a file or symlink meanwhile
        return None


def _open_parent(fd: int, ident: tuple[int, int], shown: str) -> int:
    """The parent of dir `fd`, which must still be the dir with identity `ident`."""
    up = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    if _ident(up) != ident:
        os.close(up)
        raise OSError(errno.ESTALE, "moved while it was being removed", shown)
    return up


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _clear(fd: int) -> list[str]:
    """Unlink everything but subdirs in dir `fd` (made writable first if it is not, for a
    non-root owner); returns the subdirs."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & stat.S_IRWXU != stat.S_IRWXU:
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, mode | stat.S_IRWXU)
    with os.scandir(fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    subdirs = []
    for name, is_dir in entries:
        if is_dir:
            subdirs.append(name)
            continue
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            subdirs.append(name)  # replaced by a dir meanwhile
    return subdirs
