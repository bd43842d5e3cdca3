"""Layer tar -> directory usable as an overlay lower dir, treating the archive as hostile.

Every name is resolved as if chrooted at the destination: lexically normalised, `..` may not
climb above the root, parents are opened one component at a time with O_NOFOLLOW (a symlink
parent is refused), and the leaf is unlinked before it is created, so nothing is ever written
through a symlink. tarread only parses; every filesystem write is made here. (tarsafe and
tarfile's extraction filters are not used: they refuse ordinary root filesystems and have been
bypassed, see DESIGN.md.)
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerbuild.digest import CHUNK
from layerbuild.errors import FormatError, UnsafePath
from layerbuild.fsutil import remove_tree
from layerbuild.layer import tree, whiteout
from layerbuild.layer.paths import Resolver, clean
from layerbuild.layer.tarread import REGULAR, Entry, TarReader
from layerbuild.userns import in_user_namespace, unmapped

_SUPPORTED = (*REGULAR, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
              tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE)
_XATTR_PREFIX = "SCHILY.xattr."
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_CHUNK = 64 << 10
"""Bytes of a member's data read at a time, into one reused buffer (at 1 MiB reads were
fresh memory from the system each time: page faults were ~10% of the CPU time)."""


@dataclass(frozen=True)
class ExtractInfo:
    """What extracting a layer did."""

    entries: int
    """Archive members read, whiteouts included."""
    whiteouts: int
    """Whiteout and opaque markers turned into their overlay form."""
    bytes_written: int
    """Regular-file content bytes written."""
    xattrs_skipped: int
    """xattrs the destination filesystem refused (ENOTSUP/EPERM), as Docker skips them."""
    content_bytes: int | None = None
    """Regular-file bytes in the tree, for a destination that started empty (so a caller need
    not walk it again): `bytes_written`, unless an entry replaced another or was a hard link
    (then None)."""


def extract_layer(stream: BinaryIO, dest: Path, *, whiteouts: bool = True,
                  implicit_mtime: int | None = None) -> ExtractInfo:
    """Extract an uncompressed layer tar from `stream` (may be a pipe) into `dest`.

    OCI whiteouts become overlay ones (0/0 char devices, `trusted.overlay.opaque=y`, in a
    rootless store `user.overlay.opaque=y`); with
    `whiteouts=False` (a plain rootfs) any `.wh.*` name is an error. Owners, modes (setuid
    included), devices, xattrs, hard links and mtimes are kept, so this needs root for most
    real layers. The stream is read to its end, past the end-of-archive blocks. Directories
    the archive has no entry for are made 0755; with `implicit_mtime` they take that time.
    """
    os.makedirs(dest, exist_ok=True)
    writer = _Writer(os.open(dest, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), whiteouts)
    try:
        name = ""
        try:
            reader = TarReader(stream)
            for member in reader:
                name = member.name
                writer.member(reader, member)
        except OSError as e:
            e.add_note(f"extracting {name!r}")
            raise
        writer.finish(dest, implicit_mtime)
        while stream.read(CHUNK):  # past the end blocks: let a hashing reader see every byte
            pass
    finally:
        writer.close()
    return writer.info()


class _Writer:
    """Applies archive members to the destination tree."""

    def __init__(self, root_fd: int, whiteouts: bool) -> None:
        self._root = Resolver(root_fd, self._made)
        self._whiteouts = whiteouts
        self._dir_mtimes: dict[tuple[int, int], int | None] = {}
        """Each directory's mtime (ns) by (device, inode); None for one no entry named."""
        self._buf = bytearray(_FILE_CHUNK)
        self._entries = self._wh = self._bytes = self._skipped = 0
        self._counted = True
        """Whether `_bytes` is still the tree's content: nothing replaced, no hard links."""

    def info(self) -> ExtractInfo:
        return ExtractInfo(self._entries, self._wh, self._bytes, self._skipped,
                           self._bytes if self._counted else None)

    def close(self) -> None:
        self._root.close()

    def _made(self, st: os.stat_result) -> None:
        # Keyed by inode, not path: a path may be longer than any key should be, and a dir
        # made where a removed one was may reuse its inode, so every new dir overwrites.
        self._dir_mtimes[(st.st_dev, st.st_ino)] = None

    def member(self, tf: TarReader, m: Entry) -> None:
        self._entries += 1
        parts = clean(m.name)
        if m.type not in _SUPPORTED:
            raise FormatError(f"{m.name!r}: unsupported tar entry type {m.type!r}")
        if whiteout.PREFIX in m.name and any(p.startswith(whiteout.PREFIX) for p in parts):
            if not self._whiteouts:
                raise FormatError(f"{m.name!r}: whiteout in an archive that may not have any")
            if any(p.startswith(whiteout.META_PREFIX) for p in parts[:-1]):
                return  # inside aufs metadata (.wh..wh.plnk/...): nothing of the image
            if any(p.startswith(whiteout.PREFIX) for p in parts[:-1]):
                raise FormatError(f"{m.name!r}: entry below a whiteout")
            self._whiteout(m, parts)
        elif not parts:
            if not m.isdir():
                raise UnsafePath(f"{m.name!r}: names the root but is not a directory")
            self._metadata(self._root.fd, ".", m)
        elif m.islnk():
            self._hardlink(m, parts)
        else:
            with self._root.parent(parts, m.name, create=True) as pfd:
                self._create(tf, m, pfd, parts[-1])
                self._metadata(pfd, parts[-1], m)

    def _create(self, tf: TarReader, m: Entry, pfd: int, leaf: str) -> None:
        """Create the leaf, replacing whatever was there without ever following it."""
        if m.isreg():  # the usual entry: only when its create fails is there anything to see
            self._file(tf, m, pfd, leaf)
            return
        old = _lstat(pfd, leaf)
        if m.isdir():
            if old is not None and stat.S_ISDIR(old.st_mode):
                return  # keep the dir and what this archive already put in it
            self._remove(pfd, leaf, old)
            os.mkdir(leaf, 0o700, dir_fd=pfd)
            if old is not None and self._whiteouts and whiteout.is_whiteout(
                    old, lambda: whiteout.read_xattrs(f"/proc/self/fd/{pfd}/{leaf}")):
                # A dir replacing a whiteout hides what the lower layers had there, as
                # overlayfs itself marks a dir recreated over a deleted one.
                _set_opaque(pfd, leaf)
            return
        self._remove(pfd, leaf, old)
        if m.issym():
            if not m.linkname or "\0" in m.linkname:
                raise FormatError(f"{m.name!r}: invalid symlink target {m.linkname!r}")
            os.symlink(m.linkname, leaf, dir_fd=pfd)  # only data: never followed here
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(leaf, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
        else:
            os.mkfifo(leaf, 0o600, dir_fd=pfd)

    def _file(self, tf: TarReader, m: Entry, pfd: int, leaf: str) -> None:
        try:
            fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=pfd)
        except FileExistsError:  # O_EXCL | O_NOFOLLOW: whatever is there, it was not followed
            self._remove(pfd, leaf, _lstat(pfd, leaf))
            fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            view = memoryview(self._buf)
            while n := tf.readinto(view):
                done = 0
                while done < n:
                    done += os.write(fd, view[done:n])
                self._bytes += n
        finally:
            os.close(fd)

    def _hardlink(self, m: Entry, parts: tuple[str, ...]) -> None:
        target = clean(m.linkname)
        if not target:
            raise UnsafePath(f"{m.name!r}: hard link to the root")
        if target == parts:
            raise FormatError(f"{m.name!r}: hard link to itself")
        self._counted = False
        with self._root.parent(target, m.name, create=False) as tfd:
            if _lstat(tfd, target[-1]) is None:
                raise FormatError(f"{m.name!r}: hard link target {m.linkname!r} does not exist")
            with self._root.parent(parts, m.name, create=True) as pfd:
                self._remove(pfd, parts[-1], _lstat(pfd, parts[-1]))
                try:
                    os.link(target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd,
                            follow_symlinks=False)
                except PermissionError as e:
                    raise FormatError(f"{m.name!r}: cannot hard link to {m.linkname!r}") from e

    def _whiteout(self, m: Entry, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        if base == whiteout.OPAQUE:
            with self._root.directory(parts[:-1], m.name) as dfd:
                _set_opaque(dfd, ".")
            self._wh += 1
            return
        name = whiteout.whited_out(base)
        if base.startswith(whiteout.META_PREFIX):
            return  # aufs metadata such as .wh..wh.plnk: nothing to create
        if name in ("", ".", ".."):
            raise UnsafePath(f"{m.name!r}: invalid whiteout name")
        with self._root.parent(parts, m.name, create=True) as pfd:
            old = _lstat(pfd, name)
            if old is None:
                os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
                os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            elif stat.S_ISDIR(old.st_mode):
                _set_opaque(pfd, name)  # this layer's own dir replaces the one below
            # any other entry of this layer already hides the lower one: leave it
        self._wh += 1

    def _remove(self, pfd: int, leaf: str, old: os.stat_result | None) -> None:
        if old is None:
            return
        self._counted = False
        self._root.forget()  # the kept directory may be the one removed, or below it
        if stat.S_ISDIR(old.st_mode):
            remove_tree(pfd, leaf)  # fd-relative and iterative: any depth
        else:
            os.unlink(leaf, dir_fd=pfd)

    def _metadata(self, pfd: int, leaf: str, m: Entry) -> None:
        """Owner, then mode (chown clears setuid), then xattrs (chown clears capabilities)."""
        try:
            os.chown(leaf, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.EINVAL and in_user_namespace():  # an id it does not map
                raise unmapped(repr(m.name), m.uid, m.gid) from None
            raise
        if not m.issym():
            os.chmod(leaf, m.mode & 0o7777, dir_fd=pfd)  # the leaf was made here: not a link
        for key, value in sorted(m.pax_headers.items()):
            name = key[len(_XATTR_PREFIX) :]
            if not key.startswith(_XATTR_PREFIX) or whiteout.is_overlay_xattr(name):
                continue
            try:
                os.setxattr(f"/proc/self/fd/{pfd}/{leaf}", name,
                            value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
                self._skipped += 1
        mtime = _ns(m.mtime)
        if m.isdir():  # set at the end: children created later would change it
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
            self._dir_mtimes[(st.st_dev, st.st_ino)] = mtime
        else:
            os.utime(leaf, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)

    def finish(self, dest: Path, implicit_mtime: int | None = None) -> None:
        """Set directory mtimes now that nothing will be created inside them."""
        implicit = None if implicit_mtime is None else _ns(implicit_mtime)
        if implicit is None and not any(v is not None for v in self._dir_mtimes.values()):
            return
        cursor = tree.Cursor.open(dest)
        try:
            self._set_mtime(cursor.fd, ".", os.fstat(cursor.fd), implicit)
            for found in tree.walk(cursor, _subdirs):
                self._set_mtime(cursor.fd, found.name, found.st, implicit)
        finally:
            cursor.close()

    def _set_mtime(self, dfd: int, name: str | bytes, st: os.stat_result,
                   implicit: int | None) -> None:
        key = (st.st_dev, st.st_ino)
        if key not in self._dir_mtimes:
            return  # there before: not this archive's
        mtime = self._dir_mtimes[key]
        if mtime is None:
            mtime = implicit
        if mtime is not None:
            os.utime(name, ns=(mtime, mtime), dir_fd=dfd, follow_symlinks=False)


def _subdirs(cursor: tree.Cursor) -> list[tree.Found]:
    with os.scandir(cursor.fd) as it:  # only directories are stat'ed
        return [tree.Found(os.fsencode(de.name), de.stat(follow_symlinks=False))
                for de in it if de.is_dir(follow_symlinks=False)]


def _ns(mtime: float) -> int:
    return mtime * 1_000_000_000 if isinstance(mtime, int) else round(mtime * 1e9)


def _lstat(dfd: int, leaf: str) -> os.stat_result | None:
    try:
        return os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _set_opaque(dfd: int, leaf: str) -> None:
    os.setxattr(f"/proc/self/fd/{dfd}/{leaf}", whiteout.opaque_xattr(), b"y",
                follow_symlinks=False)
