"""The store's dirs are its owner's alone: no other host user can reach a file inside.

Layers hold whatever a RUN or an image made: setuid-root programs, device nodes. Docker keeps
/var/lib/docker and overlay2/ at 0710 root:root, the group bit only so that a remapped root
(userns-remap) can pass through. layerbuild has no remapped user: every process that touches
the store runs as its owner, and overlayfs looks up lower and upper dirs with the mounter's
credentials, so every store dir (root, image/, overlay2/, blobs/, buildcache/, tmp/ and each
staging dir) is 0700. Dirs are made so by the mkdir itself, never chmod'ed after, so there is
no moment at which another user could get a handle on one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE = 0o700
"""The mode of every dir the store makes. A umask can only take bits away, never add any."""

_OTHERS = 0o077


def is_loose(mode: int) -> bool:
    """Whether a dir with this mode lets users other than its owner in (or read it)."""
    return bool(mode & _OTHERS)


def tightened(mode: int) -> int:
    """The permission bits of `mode` without any for group and others."""
    return stat.S_IMODE(mode) & ~_OTHERS


def make_dirs(path: Path) -> None:
    """`mkdir -p path`, every dir it makes (parents included) private from its first moment."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE)
        except FileExistsError:
            continue  # made meanwhile by another opener: the same mode, by the same code


def make_dir(path: Path) -> None:
    """Make one private dir (its parent must exist)."""
    os.mkdir(path, PRIVATE)


def tighten(dirs: Iterable[Path]) -> list[Path]:
    """Take group and other permissions off every dir of `dirs` that has any; returns those
    changed. A dir that is gone meanwhile (a staging dir being removed) is skipped."""
    changed = []
    for directory in dirs:
        try:
            mode = os.lstat(directory).st_mode
            if stat.S_ISDIR(mode) and is_loose(mode):
                os.chmod(directory, tightened(mode))
                changed.append(directory)
        except FileNotFoundError:
            continue
    return changed
