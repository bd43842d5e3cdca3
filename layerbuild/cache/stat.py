"""Digests of build context entries, re-read only when an entry's stat changes.

An entry's digest covers its type, mode, link target, xattrs and content, never its owner
(a copy's owner is root or --chown's) or its mtime. A stat cache per context directory maps an
entry's stat signature to its digest, so a rebuild reads only the files that changed; build
records compare the same signatures.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild.fsutil import write_atomic

if TYPE_CHECKING:  # types only: build records load this module for `signature` alone
    from layerbuild.buildfile import IgnoreRules
    from layerbuild.context import Context

SETTLED_NS = 100_000_000
"""How old a change must be before its stat can vouch for the content: file times move in clock
ticks (a few ms), so a file changed again within the tick it was read in keeps its stat."""


def signature(st: os.stat_result) -> list[int]:
    """What must stay the same for an entry to be unchanged (ctime moves on any change)."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode]


def settled(sig: list[int], read_ns: int | None = None) -> bool:
    """Whether an entry's last change was old enough, when it was read (default: now), for its
    signature to vouch for its content."""
    return (time.time_ns() if read_ns is None else read_ns) - sig[2] > SETTLED_NS


class StatCache:
    """(path, size, mtime, ctime, inode, mode) -> entry digest: unchanged files are not re-read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dirty = False
        try:
            self._entries: dict[str, list[Any]] = json.loads(path.read_bytes())
        except (OSError, ValueError):
            self._entries = {}
        self.seen: dict[str, list[int]] = {}
        """The signature of every entry digested in this build, by absolute path."""
        self.settled = True
        """Whether every entry was `settled` when it was read."""

    def entry_digest(self, full: str, st: os.stat_result) -> str:
        """The digest of an entry's header and content, worked out only when its stat changed.

        ctime moves on every change of content, mode, owner or xattrs, so an entry whose
        (size, mtime, ctime, inode, mode) is unchanged is unchanged.
        """
        sig = self.seen[full] = signature(st)
        known = self._entries.get(full)
        if known is not None and known[:5] == sig:
            return str(known[5])
        value = header_digest(full, st)
        if settled(sig):  # else it might change again without its stat changing
            self._entries[full] = [*sig, value]
            self._dirty = True
        else:
            self.settled = False
        return value

    def save(self) -> None:
        """Write the cache back if it learnt anything."""
        if self._dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(self._entries, separators=(",", ":")).encode())
            self._dirty = False


def source_digests(context: Context, rels: list[str], exclude: IgnoreRules | None,
                   stats: StatCache) -> dict[str, str]:
    """Per selected context entry, a digest of its type, mode, link target, xattrs and
    content (never its owner or mtime); the keys are the entries' context paths."""
    out: dict[str, str] = {}
    for rel in rels:
        for entry in context.walk(rel, exclude):
            full = os.path.join(context.root, entry.rel) if entry.rel else str(context.root)
            out[entry.rel or "."] = stats.entry_digest(full, entry.st)
    return out


def header_digest(full: str, st: os.stat_result) -> str:
    """The digest of an entry's normalised header (type, mode bits, xattrs) and its
    content (a file's sha256, a link's target); the owner and mtime are left out."""
    if stat.S_ISREG(st.st_mode):
        with open(full, "rb") as f:
            content = hashlib.file_digest(f, "sha256").hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(full)
    else:
        content = ""
    try:
        names = sorted(os.listxattr(full, follow_symlinks=False))
        xattrs = [[n, os.getxattr(full, n, follow_symlinks=False).hex()] for n in names]
    except OSError:
        xattrs = []
    # No owner: a copy is owned by root or by its --chown, never by the context file's owner,
    # which differs from one checkout (one machine, one CI runner) to the next.
    header = json.dumps([stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), content, xattrs])
    return hashlib.sha256(header.encode()).hexdigest()
