"""Digests of build context entries, re-read only when an entry's stat changes.

An entry's digest covers its type, mode, link target, xattrs and content, never its owner
(a copy's owner is root or --chown's) or its mtime. A stat cache per context directory maps an
entry's stat signature to its digest, so a rebuild reads only the files that changed; build
records compare the same signatures. The cache is an SQLite file (the standard library's
`sqlite3`, loaded on first use), read entry by entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild.reading import open_quietly

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


_SCHEMA = """CREATE TABLE IF NOT EXISTS files (
    dir BLOB NOT NULL, name BLOB NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
    ctime INTEGER NOT NULL, ino INTEGER NOT NULL, mode INTEGER NOT NULL, digest BLOB NOT NULL,
    PRIMARY KEY (dir, name)
) WITHOUT ROWID"""
_OLD_TABLES = ("entries",)
"""Tables of older versions (a row per path): dropped, their entries are hashed again once."""
_DIR_ROWS = 20_000
"""The most rows of one directory read at once; a bigger directory is read row by row."""
_DIRS_KEPT = 4
"""Directories whose rows are kept: the walk's current one and the parents it goes back to."""
_FLUSH_AT = 2048
"""Entries learnt before they are written (in one transaction): memory stays bounded."""
_BUSY_SECONDS = 30.0
"""How long a write waits for another build's write to the same cache to finish."""
_NOT_A_DATABASE = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_SEEN = struct.Struct("<QqqQQ")  # a signature: size, mtime, ctime, inode, mode


def _signed(value: int) -> int:
    """A 64-bit field as SQLite's signed INTEGER holds it (inode numbers may use all 64)."""
    return value - (1 << 64) if value >= 1 << 63 else value


class StatCache:
    """(path, size, mtime, ctime, inode, mode) -> entry digest: unchanged files are not re-read.

    The entries live in an SQLite file, a row per path keyed by its directory and name. The
    rows of the directory being walked are read with one query (a few directories' are kept;
    a directory of more than `_DIR_ROWS` entries is looked up row by row), so a build never
    holds the whole cache in memory. Two builds may use it at once: SQLite's WAL lets
    them read while one writes, and each write is one short transaction of learnt entries
    (every row stands on its own: a row whose signature matches vouches for its digest). The
    JSON file and the per-path table of older versions are not read (their entries are hashed
    again, once) and are removed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Any = None
        self._broken = False
        self._lock = threading.Lock()
        self._pending: dict[bytes, tuple[Any, ...]] = {}
        self._seen_paths = bytearray()
        """The absolute path of every entry digested in this build, each ended by a NUL."""
        self._seen_sigs = bytearray()
        """Their signatures, packed (`seen_signatures` gives both): no object per entry."""
        self.settled = True
        """Whether every entry was `settled` when it was read."""
        self._dirs: dict[bytes, dict[bytes, tuple[Any, ...]] | None] = {}
        """Rows of the directories looked in last, by name (None: too many to keep)."""

    def entry_digest(self, full: str, st: os.stat_result) -> str:
        """The digest of an entry's header and content, worked out only when its stat changed.

        ctime moves on every change of content, mode, owner or xattrs, so an entry whose
        (size, mtime, ctime, inode, mode) is unchanged is unchanged.
        """
        sig = signature(st)
        key = os.fsencode(full)
        with self._lock:
            self._seen_paths += key + b"\0"
            self._seen_sigs += _SEEN.pack(*sig)
        row = [_signed(v) for v in sig]
        known = self._lookup(key)
        if known is not None and list(known[:5]) == row:
            return bytes(known[5]).hex()
        value = header_digest(full, st)
        if settled(sig):  # else it might change again without its stat changing
            with self._lock:
                parent, _, name = key.rpartition(b"/")
                self._pending[key] = (parent, name, *row, bytes.fromhex(value))
                full_batch = len(self._pending) >= _FLUSH_AT
            if full_batch:
                self._flush()
        else:
            self.settled = False
        return value

    def seen_signatures(self) -> Iterator[tuple[str, list[int]]]:
        """(absolute path, `signature`) of every entry digested in this build, in the order
        they were (an entry digested twice comes twice)."""
        paths, sigs = self._seen_paths, self._seen_sigs
        start = 0
        for offset in range(0, len(sigs), _SEEN.size):
            end = paths.index(0, start)
            yield os.fsdecode(bytes(paths[start:end])), list(_SEEN.unpack_from(sigs, offset))
            start = end + 1

    def save(self) -> None:
        """Write what the cache learnt, and close it (it opens again when used)."""
        self._flush()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _lookup(self, key: bytes) -> tuple[Any, ...] | None:
        import sqlite3

        with self._lock:
            pending = self._pending.get(key)
            if pending is not None:
                return pending[2:]
            db = self._connect()
            if db is None:
                return None
            parent, _, name = key.rpartition(b"/")
            try:
                if parent not in self._dirs:
                    self._dirs[parent] = _rows_of(db, parent)
                    while len(self._dirs) > _DIRS_KEPT:
                        del self._dirs[next(iter(self._dirs))]
                rows = self._dirs[parent]
                if rows is not None:
                    return rows.get(name)
                found: tuple[Any, ...] | None = db.execute(
                    "SELECT size, mtime, ctime, ino, mode, digest FROM files "
                    "WHERE dir = ? AND name = ?", (parent, name)).fetchone()
            except sqlite3.Error:
                return None  # a miss: the entry is read again
            return found

    def _flush(self) -> None:
        import sqlite3

        with self._lock:
            rows, self._pending = list(self._pending.values()), {}
            db = self._connect() if rows else None
            if db is None:
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               rows)
                db.execute("COMMIT")
            except sqlite3.Error:  # busy past the timeout, or a full disk: the rows are lost,
                if db.in_transaction:  # which only means reading those entries again
                    db.execute("ROLLBACK")
            self._dirs.clear()  # they were read without the rows now written

    def _connect(self) -> Any:
        """The open database (made on first use), or None if it cannot be used (the build
        then goes without the cache). Called with the lock held."""
        if self._db is not None or self._broken:
            return self._db
        import sqlite3

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for attempt in (1, 2):
                db = sqlite3.connect(self.path, timeout=_BUSY_SECONDS, isolation_level=None,
                                     check_same_thread=False)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=NORMAL")  # a lost row is a miss, no more
                    db.execute(_SCHEMA)
                    for table in _OLD_TABLES:
                        db.execute(f"DROP TABLE IF EXISTS {table}")
                    break
                except sqlite3.DatabaseError as exc:
                    db.close()
                    if attempt == 2 or getattr(exc, "sqlite_errorcode", None) \
                            not in _NOT_A_DATABASE:
                        raise
                    self.path.unlink()  # not a database (a torn or foreign file): anew
            legacy = self.path.with_suffix(".json")
            if legacy != self.path:
                legacy.unlink(missing_ok=True)
        except (OSError, sqlite3.Error):
            self._broken = True
            return None
        self._db = db
        return db


def _rows_of(db: Any, parent: bytes) -> dict[bytes, tuple[Any, ...]] | None:
    """The rows of one directory's entries by name; None for more than `_DIR_ROWS`."""
    cursor = db.execute("SELECT name, size, mtime, ctime, ino, mode, digest FROM files "
                        "WHERE dir = ?", (parent,))
    found = cursor.fetchmany(_DIR_ROWS + 1)
    cursor.close()
    if len(found) > _DIR_ROWS:
        return None
    return {row[0]: row[1:] for row in found}


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


_READ_SIZE = 1 << 20


def _xattrs(where: str | int) -> list[list[str]]:
    """[name, hex value] of each xattr of a path (not following a symlink) or an fd, sorted by
    name; none where they cannot be read."""
    follow = isinstance(where, int)  # an fd is the file itself; a path is not followed
    try:
        names = sorted(os.listxattr(where, follow_symlinks=follow))
        return [[n, os.getxattr(where, n, follow_symlinks=follow).hex()] for n in names]
    except OSError:
        return []


def header_digest(full: str, st: os.stat_result) -> str:
    """The digest of an entry's normalised header (type, mode bits, xattrs) and its
    content (a file's sha256, a link's target); the owner and mtime are left out."""
    if stat.S_ISREG(st.st_mode):
        # Read and listed through one fd: no buffered file object, no second path lookup.
        fd = open_quietly(full)
        try:
            h = hashlib.sha256()
            while chunk := os.read(fd, _READ_SIZE):
                h.update(chunk)
            content = h.hexdigest()
            xattrs = _xattrs(fd)
        finally:
            os.close(fd)
    else:
        content = os.readlink(full) if stat.S_ISLNK(st.st_mode) else ""
        xattrs = _xattrs(full)
    # No owner: a copy is owned by root or by its --chown, never by the context file's owner,
    # which differs from one checkout (one machine, one CI runner) to the next.
    header = json.dumps([stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), content, xattrs])
    return hashlib.sha256(header.encode()).hexdigest()
