"""Directory -> layer tar: streamed, normalised, overlay whiteouts turned into OCI ones.

The tree is walked without following symlinks, entries sorted bytewise within each directory
(whiteouts first), parents before children. diff_id and blob digest come from the same pass.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from layerbuild.digest import Digest, HashingWriter
from layerbuild.epoch import clamped_ns
from layerbuild.errors import FormatError
from layerbuild.layer import tarheader as th
from layerbuild.layer import tree, whiteout
from layerbuild.layer.compression import FEED_SIZE, Compression, compress_writer
from layerbuild.layer.splice import EarlierTar
from layerbuild.layer.whiteout import read_xattrs
from layerbuild.reading import open_quietly

_WH = whiteout.PREFIX.encode()
_OPAQUE = whiteout.OPAQUE.encode()


@dataclass(frozen=True)
class LayerInfo:
    """What writing a layer produced: its two digests and two sizes."""

    diff_id: Digest
    """sha256 of the uncompressed tar."""
    digest: Digest
    """sha256 of the bytes written to the sink (compressed)."""
    size: int
    """Bytes written to the sink."""
    uncompressed_size: int
    """Bytes of the uncompressed tar."""
    newest: int = 0
    """The newest mtime written (seconds; after clamping), 0 for an empty layer."""
    content_size: int = 0
    """Bytes of regular-file content, each name of a hard-linked file counted (Docker's layer
    `size`)."""


@dataclass(frozen=True)
class Entry:
    """One path of a layer dir as `walk` finds it, whiteouts recognised."""

    rel: bytes
    name: bytes
    """The last component of `rel`: the name in the directory the walk's cursor is at."""
    st: os.stat_result
    xattrs: dict[str, bytes]
    is_whiteout: bool

    @property
    def tar_name(self) -> bytes:
        """The entry's name in a layer tar (`dir/.wh.NAME` for a whiteout)."""
        if not self.is_whiteout:
            return self.rel
        head, _, base = self.rel.rpartition(b"/")
        return (head + b"/" if head else b"") + _WH + base


def write_layer(root: Path, sink: BinaryIO, compression: Compression = Compression.NONE,
                source_date_epoch: int | None = None, linked_from: Path | None = None,
                earlier_tar: Path | None = None) -> LayerInfo:
    """Write the tree under `root` (not `root` itself) to `sink` as a layer tar.

    With `source_date_epoch`, every mtime newer than it is clamped to it. Nothing is held in
    memory beyond one read buffer and the first name of each inode the tree holds twice; both
    digests come from this single pass. `linked_from` is a layer dir that files of the tree
    were hard-linked from (a COPY's reuse of its last layer): a file that is the same inode at
    the same path there is not looked for again in this tree, as the copy linked each of
    that layer's inodes once, and only for files it would have copied as one name.
    `earlier_tar` is that layer's plain tar, as this store wrote it: the data of such files
    is copied from there (`splice`), not read from each file again.
    """
    top = os.fsencode(root)
    shared = os.fsencode(linked_from) if linked_from is not None else None
    earlier = EarlierTar(earlier_tar) if shared is not None and earlier_tar is not None \
        else None
    try:
        if Compression(compression) is Compression.NONE:
            tar = blob = HashingWriter(sink)  # the blob is the tar: hash it once
            exporter = _export(top, tar, source_date_epoch, shared, earlier)
            blob.flush()
        else:
            blob = HashingWriter(sink)
            with compress_writer(compression, cast(BinaryIO, blob)) as packed:
                tar = HashingWriter(cast(BinaryIO, packed))
                exporter = _export(top, tar, source_date_epoch, shared, earlier)
    finally:
        if earlier is not None:
            earlier.close()
    return LayerInfo(diff_id=tar.digest, digest=blob.digest, size=blob.size,
                     uncompressed_size=tar.size, newest=exporter.newest,
                     content_size=exporter.content_size)


def _export(top: bytes, tar: HashingWriter, source_date_epoch: int | None,
            shared: bytes | None, earlier: EarlierTar | None = None) -> _Exporter:
    """Write the tree's tar; returns the exporter, which counted what it wrote."""
    blocks = _Blocks(tar)
    exporter = _Exporter(blocks, source_date_epoch, shared, earlier)
    exporter.run(top)
    blocks.write(th.END_OF_ARCHIVE)
    blocks.flush()
    return exporter


class _Blocks:
    """The tar stream gathered into FEED_SIZE blocks, file data read straight into them.

    Whole blocks go to the hasher and compressor in one call each and without another copy;
    the compressor needs whole blocks anyway (see compression.FEED_SIZE). Ranges of another
    file to be copied as they are (`copy_range`) are read in when the next other bytes come,
    so that neighbouring ranges are read as one.
    """

    def __init__(self, out: HashingWriter) -> None:
        self._out = out
        self._view = memoryview(bytearray(FEED_SIZE))
        self._pos = 0
        self._range: tuple[int, int, int] | None = None
        """A range still to be copied: the fd, its start and its end."""

    def write(self, data: bytes) -> None:
        if self._range is not None:
            self._copy_range()
        view = memoryview(data)
        while view:
            n = min(len(view), FEED_SIZE - self._pos)
            self._view[self._pos : self._pos + n] = view[:n]
            self._pos += n
            view = view[n:]
            if self._pos == FEED_SIZE:
                self._pass()

    def read_from(self, fd: int, limit: int) -> int:
        """Append up to `limit` bytes read from `fd`; 0 means end of file."""
        if self._range is not None:
            self._copy_range()
        end = self._pos + min(limit, FEED_SIZE - self._pos)
        n = os.readv(fd, [self._view[self._pos : end]])
        self._pos += n
        if self._pos == FEED_SIZE:
            self._pass()
        return n

    def copy_range(self, fd: int, start: int, end: int) -> None:
        """Append the bytes of `fd` from `start` to `end`, which it holds."""
        if self._range is not None and self._range[0] == fd and self._range[2] == start:
            self._range = (fd, self._range[1], end)
            return
        if self._range is not None:
            self._copy_range()
        self._range = (fd, start, end)

    def _copy_range(self) -> None:
        assert self._range is not None
        fd, start, end = self._range
        self._range = None
        while start < end:
            stop = self._pos + min(end - start, FEED_SIZE - self._pos)
            n = os.preadv(fd, [self._view[self._pos : stop]], start)
            if n == 0:
                raise FormatError("the earlier layer's tar ended in an entry it was to give")
            self._pos += n
            start += n
            if self._pos == FEED_SIZE:
                self._pass()

    def flush(self) -> None:
        """Pass on what is gathered (a whole block, or the tail at the end)."""
        if self._range is not None:
            self._copy_range()
        self._pass()

    def _pass(self) -> None:
        if self._pos:
            self._out.write(self._view[: self._pos])  # type: ignore[arg-type]
            self._pos = 0


def _children(cursor: tree.Cursor) -> list[Entry]:
    """The entries of one directory in tar order: whiteouts first, then bytewise by name."""
    entries = []
    rel = cursor.rel()
    for found in tree.scan(cursor):
        st, name = found.st, found.name
        if stat.S_ISSOCK(st.st_mode):
            continue  # a socket has no meaning in an image
        child = rel + b"/" + name if rel else name
        if name.startswith(_WH):
            raise FormatError(f"{os.fsdecode(child)}: no real file may be named .wh.*")
        xattrs = read_xattrs(_proc_path(cursor.fd, name))
        if feature := whiteout.not_a_diff(xattrs):
            raise FormatError(f"{os.fsdecode(child)}: overlay {feature} xattr: not a faithful "
                              "diff (mount with redirect_dir=off and no metacopy)")
        entries.append(Entry(child, name, st, xattrs, whiteout.is_whiteout(st, xattrs.copy)))
    entries.sort(key=lambda e: (not e.is_whiteout, e.tar_name))
    return entries


def _proc_path(dir_fd: int, name: bytes) -> bytes:
    # A short path to an entry at any depth, for calls that take no dir_fd (xattrs).
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def walk(cursor: tree.Cursor) -> Iterator[Entry]:
    """The entries below the cursor in tar order, parents first, never following a symlink.

    While an entry is handled, `cursor.fd` is the directory that holds it.
    """
    # fd-relative and iterative: an image may nest paths deeper than Python's stack and
    # longer than PATH_MAX.
    return tree.walk(cursor, _children)


class _Exporter:
    """Writes one tree's entries to an uncompressed tar stream."""

    def __init__(self, out: _Blocks, source_date_epoch: int | None,
                 shared: bytes | None = None, earlier: EarlierTar | None = None) -> None:
        self._out = out
        self._epoch = source_date_epoch
        self._links: dict[tuple[int, int], bytes] = {}
        self.newest = 0
        self.content_size = 0
        self._shared = shared
        self._earlier = earlier
        self._shared_dir: tuple[bytes | None, int] = (None, -1)
        """The `shared` layer's directory looked in last, and its fd (-1: not there)."""

    def run(self, top: bytes) -> None:
        root_st = os.stat(top)
        if not stat.S_ISDIR(root_st.st_mode):
            raise FormatError(f"{os.fsdecode(top)}: not a directory")
        if whiteout.is_opaque(read_xattrs(top)):
            self._out.write(th.encode(self._opaque_marker(b"", root_st)))
        self._cursor = cursor = tree.Cursor.open(top)
        try:
            for entry in walk(cursor):
                self._entry(entry)
        finally:
            cursor.close()
            if self._shared_dir[1] != -1:
                os.close(self._shared_dir[1])

    def _linked_from_shared(self, e: Entry) -> bool:
        """Whether the entry is the same inode as the `shared` layer's file at its path."""
        if self._shared is None:
            return False
        where = self._cursor.rel()
        if self._shared_dir[0] != where:
            if self._shared_dir[1] != -1:
                os.close(self._shared_dir[1])
            try:
                fd = tree.open_below(self._shared, where, os.O_PATH | os.O_DIRECTORY) \
                    if where else os.open(self._shared, os.O_PATH | os.O_DIRECTORY
                                          | os.O_CLOEXEC)
            except OSError:
                fd = -1
            self._shared_dir = (where, fd)
        fd = self._shared_dir[1]
        if fd == -1:
            return False
        try:
            st = os.stat(e.name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (e.st.st_dev, e.st.st_ino)

    def _mtime(self, st: os.stat_result) -> int:
        mtime = clamped_ns(st.st_mtime_ns, self._epoch) // 1_000_000_000
        self.newest = max(self.newest, mtime)
        return mtime

    def _opaque_marker(self, rel: bytes, st: os.stat_result) -> th.Header:
        # Like Docker: an empty regular file with the dir's owner and permission bits.
        name = rel + b"/" + _OPAQUE if rel else _OPAQUE
        return th.Header(name, th.REGULAR, stat.S_IMODE(st.st_mode) & 0o777, st.st_uid,
                         st.st_gid, mtime=self._mtime(st))

    def _header(self, e: Entry, kind: bytes, name: bytes = b"", size: int = 0,
                linkname: bytes = b"", rdev: int = 0) -> bytes:
        st = e.st
        xattrs = tuple(sorted((os.fsencode(k), v) for k, v in e.xattrs.items()
                              if not whiteout.is_overlay_xattr(k))) if e.xattrs else ()
        return th.encode(th.Header(name or e.rel, kind, stat.S_IMODE(st.st_mode), st.st_uid,
                                   st.st_gid, size, self._mtime(st), linkname, os.major(rdev),
                                   os.minor(rdev), xattrs))

    def _entry(self, e: Entry) -> None:
        st, mode = e.st, e.st.st_mode
        if e.is_whiteout:  # Docker's form: mode 0600, the device node's owner and time
            self._out.write(th.encode(th.Header(e.tar_name, th.REGULAR, 0o600, st.st_uid,
                                                st.st_gid, mtime=self._mtime(st))))
            return
        if stat.S_ISDIR(mode):
            self._out.write(self._header(e, th.DIRECTORY, name=e.rel + b"/"))
            if whiteout.is_opaque(e.xattrs):
                self._out.write(th.encode(self._opaque_marker(e.rel, st)))
            return
        if stat.S_ISREG(mode):
            self.content_size += st.st_size
        shared = st.st_nlink > 1 and stat.S_ISREG(mode) and self._linked_from_shared(e)
        if st.st_nlink > 1 and not shared:
            key = (st.st_dev, st.st_ino)
            if key in self._links:
                self._out.write(self._header(e, th.HARDLINK, linkname=self._links[key]))
                return
            self._links[key] = e.rel
        if stat.S_ISREG(mode):
            if not (shared and self._spliced(e)):
                self._file(e)
        elif stat.S_ISLNK(mode):
            target = os.readlink(e.name, dir_fd=self._cursor.fd)
            self._out.write(self._header(e, th.SYMLINK, linkname=target))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = th.CHARDEV if stat.S_ISCHR(mode) else th.BLOCKDEV
            self._out.write(self._header(e, kind, rdev=st.st_rdev))
        elif stat.S_ISFIFO(mode):
            self._out.write(self._header(e, th.FIFO))
        else:
            raise FormatError(f"{os.fsdecode(e.rel)}: unsupported file type {mode:o}")

    def _spliced(self, e: Entry) -> bool:
        """Write a file shared with the `earlier` layer from that layer's tar, where its entry
        has the very header this one gets; False (nothing written) where it has not."""
        earlier = self._earlier
        if earlier is None or not earlier.usable:
            return False
        size = e.st.st_size
        header = self._header(e, th.REGULAR, size=size)
        at = earlier.find(e.rel, header, size)
        if at is None:
            return False
        self._out.copy_range(earlier.fd, at - len(header), at + size + (-size % th.BLOCK))
        return True

    def _file(self, e: Entry) -> None:
        """Header, then the content read in blocks straight into the tar stream."""
        fd = open_quietly(e.name, self._cursor.fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_ino != e.st.st_ino:
                raise FormatError(f"{os.fsdecode(e.rel)}: replaced while being exported")
            self._out.write(self._header(e, th.REGULAR, size=st.st_size))
            left = st.st_size
            while left:
                n = self._out.read_from(fd, left)
                if n == 0:
                    raise FormatError(f"{os.fsdecode(e.rel)}: shrank while being exported")
                left -= n
            self._out.write(th.padding(st.st_size))
        finally:
            os.close(fd)
