"""The store lock, the private staging dirs writers work in, their leases, and debris.

A writer stages everything under tmp/ in a dir it holds locked; when it dies, the lock goes
with it, which is how a later cleaner tells a dead writer's dir (debris) from a live one.
A staging dir may hold a `leases` file: chain IDs its writer relies on, so that garbage
collection leaves them alone while the writer lives.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from layerbuild.digest import Digest


class StagingArea:
    """The store-wide lock and the staging dirs under tmp/."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.lock_file = root / "lock"
        self.tmp = tmp
        self._local = threading.local()

    def create_lock_file(self) -> None:
        """Make sure the lock file exists (which also proves the store writable)."""
        os.close(os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store-wide lock (re-entrant within a thread)."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private dir under tmp/, removed on exit; locked while in use."""
        path = self.tmp / f"{os.getpid()}-{secrets.token_hex(6)}"
        with self.lock():  # so that a cleaner never sees it before it is locked
            path.mkdir()
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
                    text = (entry / "leases").read_text()
                    out.update(Digest.parse(line) for line in text.split())
            except (FileNotFoundError, NotADirectoryError):
                continue
        return out

    def remove_dead(self) -> None:
        """Remove what is under tmp/ and not a live writer's staging dir (hold the lock)."""
        for entry in self.tmp.iterdir():
            if not entry.is_dir() or not is_locked(entry / ".lock"):
                rmtree(entry)


def half_written(directory: Path, prefix: str) -> list[Path]:
    """Temp files that a writer killed mid-write left in `directory`.

    Writers name them `.NAME.PID.TID.tmp` (`fsutil.temp_name`); older versions wrote
    `.NAME.PID`. Both start with `prefix` (e.g. ".repositories.json."), and since every such
    write happens under the store lock, one found while holding it is debris.
    """
    return [p for p in directory.glob(f"{prefix}*") if not p.is_dir()]


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
    """Remove a tree or a file, even one that another process is removing too."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return

    def retry(_func: object, failed: str, exc_info: tuple[type, BaseException, object]) -> None:
        if isinstance(exc_info[1], FileNotFoundError):
            return
        # Layers may hold read-only dirs; a non-root owner must make them writable first.
        os.chmod(os.path.dirname(failed), 0o700)
        if os.path.isdir(failed) and not os.path.islink(failed):
            shutil.rmtree(failed, onerror=retry)
        else:
            os.unlink(failed)

    shutil.rmtree(path, onerror=retry)
