"""The store lock, the private staging dirs writers work in, their leases, and debris.

A writer stages everything under tmp/ in a dir it holds locked; when it dies, the lock goes
with it, which is how a later cleaner tells a dead writer's dir (debris) from a live one.
A staging dir may hold a `leases` file: chain IDs its writer relies on, so that garbage
collection leaves them alone while the writer lives.

The lock file's one byte says whether the last change made under the lock was finished: a
holder marks it `1` as it takes the lock and `0` as it lets go after the change went through.
A `1` seen on taking the lock (or no byte: a new store, or one an older layerbuild kept) means
its holder died or failed part-way, which, with a dead staging dir, is what tells a store
that may hold debris (`StagingArea.unfinished`, `dead`) from one that cannot.

`fsutil.rmtree` is the one tree removal of the store: staging dirs, debris and layers all go
through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from layerbuild.digest import Digest
from layerbuild.errors import FormatError, StoreError
from layerbuild.fsutil import rmtree
from layerbuild.store.private import make_dir

_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_FINISHED, _CHANGING = b"0", b"1"
"""The lock file's byte: the last change under the lock went through, or one is under way."""


class StagingArea:
    """The store-wide lock and the staging dirs under tmp/."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.lock_file = root / "lock"
        self.tmp = tmp
        self._local = threading.local()
        self.unfinished = False
        """Whether, on some taking of the lock by this process, the change of the holder
        before was not marked finished (it died or failed part-way): there may be debris.
        Cleared by a clean that removed all it found; until then the mark stays."""

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
            if os.pread(fd, 1, 0) != _FINISHED:
                self.unfinished = True
            os.pwrite(fd, _CHANGING, 0)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
            # Not reached on an error: the change may be half made, so the mark stays; nor
            # while debris seen before is not cleaned.
            if not self.unfinished:
                os.pwrite(fd, _FINISHED, 0)
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
        path = self.tmp / f"{os.getpid()}-{os.urandom(6).hex()}"  # as secrets.token_hex(6)
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

    def pend(self, lease: Path, image_id: Digest) -> None:
        """Record in a staging dir that its writer is storing image `image_id` (its config
        may be written before the tags that name it: if the writer dies between, the config
        is debris)."""
        with open(lease / "images", "a") as f:
            f.write(f"{image_id}\n")
            f.flush()
            os.fsync(f.fileno())

    def leased(self, live: bool) -> set[Digest]:
        """Chains named by the leases of live (or of dead) staging dirs."""
        return self._named(live, "leases")

    def pending(self, live: bool) -> set[Digest]:
        """Images that live (or dead) writers were storing."""
        return self._named(live, "images")

    def _named(self, live: bool, name: str) -> set[Digest]:
        out: set[Digest] = set()
        for entry in self.tmp.iterdir():
            try:
                if is_locked(entry / ".lock") == live:
                    out.update(_leases(entry / name))
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
    """The digests a leases (or images) file names; a line a killed writer left half-written
    is skipped."""
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


