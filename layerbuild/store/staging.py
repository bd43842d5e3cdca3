"""The store lock, the private staging dirs writers work in, their leases, and debris.

A writer stages everything under tmp/ in a dir it holds locked; when it dies, the lock goes
with it, which is how a later cleaner tells a dead writer's dir (debris) from a live one.
A staging dir may hold a `leases` file: chain IDs its writer relies on, so that garbage
collection leaves them alone while the writer lives.

`rmtree` is the one tree removal of the store: staging dirs, debris and layers all go
through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.digest import Digest
from layerbuild.errors import FormatError, StoreError
from layerbuild.store.private import make_dir

_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class StagingArea:
    """The store-wide lock and the staging dirs under tmp/."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.lock_file = root / "lock"
        self.tmp = tmp
        self._local = threading.local()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store-wide lock (re-entrant within a thread); every change to the store
        takes it, so on a store this user cannot write it raises one clear StoreError."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        fd = self._open_lock_file()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
        finally:
            os.close(fd)

    def _open_lock_file(self) -> int:
        # Made on the first change, not at open: opening and reading a store write nothing.
        try:
            return os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise StoreError(f"store {self.root} is read-only") from None
            if exc.errno in _READ_ONLY:
                raise StoreError(f"store {self.root} is not writable by this user: "
                                 f"{exc.strerror}") from None
            raise

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private dir under tmp/, removed on exit; locked while in use."""
        path = self.tmp / f"{os.getpid()}-{secrets.token_hex(6)}"
        with self.lock():  # so that a cleaner never sees it before it is locked
            make_dir(path)
            fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            rmtree(path)
            os.close(fd)

    def hold(self, lease: Path, chain: Digest) -> None:
        """Record in a staging dir that its writer relies on layer `chain`."""
        with open(lease / "leases", "a") as f:
            f.write(f"{chain}\n")
            f.flush()
            os.fsync(f.fileno())

    def leased(self, live: bool) -> set[Digest]:
        """Chains named by the leases of live (or of dead) staging dirs."""
        out: set[Digest] = set()
        for entry in self.tmp.iterdir():
            try:
                if is_locked(entry / ".lock") == live:
                    out.update(_leases(entry / "leases"))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return out

    def dead(self) -> list[Path]:
        """What is under tmp/ and not a live writer's staging dir (debris; hold the lock)."""
        return [entry for entry in self.tmp.iterdir()
                if not entry.is_dir() or not is_locked(entry / ".lock")]

    def remove_dead(self) -> None:
        """Remove what is under tmp/ and not a live writer's staging dir (hold the lock)."""
        for entry in self.dead():
            rmtree(entry)


def _leases(path: Path) -> list[Digest]:
    """The chains a leases file names; a line a killed writer left half-written is skipped."""
    out = []
    for line in path.read_text(errors="replace").split():
        with contextlib.suppress(FormatError):
            out.append(Digest.parse(line))
    return out


def half_written(directory: Path, prefix: str) -> list[Path]:
    """Temp files that a writer killed mid-write left in `directory`.

    Writers name them `.NAME.PID.TID.tmp` (`fsutil.temp_name`); older versions wrote
    `.NAME.PID`. Both start with `prefix` (e.g. ".repositories.json."), and since every such
    write happens under the store lock, one found while holding it is debris.
    """
    return [p for p in directory.glob(f"{prefix}*") if not p.is_dir()]


def is_alive(pid: int) -> bool:
    """Whether a process with this ID runs (a recycled ID counts: it is only ever kept)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_locked(lock_file: Path) -> bool:
    """Whether a live process holds this lock file."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


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
            _remove_dir(parent, path.name, str(path))
    finally:
        os.close(parent)


@dataclass
class _Level:
    """A dir being emptied: its name in its parent, its identity, the subdirs left to do."""

    name: str
    ident: tuple[int, int]
    subdirs: list[str] = field(default_factory=list)


def _remove_dir(top_fd: int, name: str, shown: str) -> None:
    """Empty and remove dir `name` of `top_fd`, one open fd at a time."""
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
            # Only a non-root owner gets here; the store's dirs are private, so nobody else
            # could have swapped this dir for a symlink since it was listed.
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
