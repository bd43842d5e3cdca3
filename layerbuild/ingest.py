"""Turning blobs and directories into stored layers (`layerblob` turns them back into blobs).

Every path streams: a blob is hashed, kept (compressed), decompressed, hashed again and
extracted in one pass; nothing holds a layer in memory.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from layerbuild.digest import Digest, HashingReader, chain_id, verify
from layerbuild.epoch import clamped_ns
from layerbuild.errors import FormatError, LayerbuildError
from layerbuild.image import Descriptor, layer_media_type
from layerbuild.layer import Compression, open_decompressed, sniff, tree
from layerbuild.layer import write_layer as _write_layer
from layerbuild.store import Layer, Store

if TYPE_CHECKING:  # types only: unpacking (and tarfile with it) loads when a blob is unpacked
    from layerbuild.layer import ExtractInfo


class TeeReader:
    """A reader that copies every byte read through it into a sink."""

    def __init__(self, raw: BinaryIO, sink: BinaryIO) -> None:
        self._raw = raw
        self._sink = sink

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._sink.write(data)
        return data


_SNIFF = 6
"""Bytes that tell every compression `sniff` knows (xz's magic is the longest)."""


class _Peek:
    """A reader that can look at its first bytes without losing them (for pipes)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.head = b""
        while len(self.head) < _SNIFF and (data := raw.read(_SNIFF - len(self.head))):
            self.head += data  # a pipe may give less than asked

    def read(self, n: int = -1) -> bytes:
        head, self.head = self.head, b""
        if n < 0:
            return head + self._raw.read()
        return head + self._raw.read(n - len(head)) if n > len(head) else head


@dataclass(frozen=True)
class Ingested:
    """A layer now in the store, and whether it was there already."""

    record: Layer
    existed: bool
    newest: int = 0
    """The newest mtime in the layer (seconds), when it was made from a directory."""


def content_size(root: Path) -> int:
    """Bytes of regular-file content under a directory (Docker's layer `size`)."""
    cursor = tree.Cursor.open(root)
    try:
        return sum(e.st.st_size for e in tree.walk(cursor, tree.scan)
                   if stat.S_ISREG(e.st.st_mode))
    finally:
        cursor.close()


def clamp_mtimes(root: Path, epoch: int) -> None:
    """Set every mtime under `root` newer than `epoch` to it, as the layer's tar has them, so
    the stored files are what the tar says (and what later steps see)."""
    cursor = tree.Cursor.open(root)
    try:
        for e in tree.walk(cursor, tree.scan):
            if (mtime := clamped_ns(e.st.st_mtime_ns, epoch)) != e.st.st_mtime_ns:
                os.utime(e.name, ns=(e.st.st_atime_ns, mtime), dir_fd=cursor.fd,
                         follow_symlinks=False)
    finally:
        cursor.close()


def ingest_blob(store: Store, parent: Digest | None, diff_id: Digest, blob: BinaryIO,
                media_type: str, expected: Digest | None = None,
                expected_size: int | None = None, lease: Path | None = None,
                what: str = "layer") -> Ingested:
    """Store a layer blob (any compression) on `parent`, verifying its digests.

    A layer whose chain is stored already is not read at all ("Already exists").
    """
    existing = store.layer(chain_id(parent, diff_id))
    if existing is not None:
        if lease is not None:
            store.hold(lease, existing.chain_id)
        return Ingested(existing, True)
    with store.staging() as stage:
        staged = stage_blob(stage, blob, diff_id, expected, expected_size, what)
        return commit_staged(store, parent, staged, lease)


@dataclass(frozen=True)
class Staged:
    """A layer blob unpacked into a staging dir and verified, not yet in the store."""

    diff_id: Digest
    diff: Path
    blob_file: Path
    stored: Descriptor
    tar_size: int
    content_size: int | None = None
    """Regular-file bytes in `diff`, when the unpacking could tell (else walk it)."""


def stage_blob(stage: Path, blob: BinaryIO, diff_id: Digest, expected: Digest | None = None,
               expected_size: int | None = None, what: str = "layer") -> Staged:
    """Unpack a layer blob into `stage` (one pass: kept, decompressed, hashed, extracted),
    checking its digest, its size and that it decompresses to `diff_id`. Needs no parent:
    layers of one image can be staged side by side and committed in order."""
    raw = HashingReader(blob)
    peek = _Peek(raw)  # type: ignore[arg-type]
    kind = sniff(peek.head)
    try:
        tar, stored, info = _unpack(stage, peek, raw, kind, what)
    except FormatError:
        if expected is not None:  # bytes that are not the blob's explain a broken tar best
            _verify_rest(raw, expected, what)
        raise
    if expected is not None:
        verify(expected, raw.digest, f"{what} blob")
    if expected_size is not None and expected_size != raw.size:
        raise FormatError(f"{what} blob: {raw.size} bytes, expected {expected_size}")
    verify(diff_id, tar.digest, f"{what} (uncompressed, against the config's diff_id)")
    return Staged(diff_id, stage / "diff", stage / "blob", stored, tar.size, info.content_bytes)


def _unpack(stage: Path, peek: _Peek, raw: HashingReader, kind: str | None,
            what: str) -> tuple[HashingReader, Descriptor, ExtractInfo]:
    """Keep the blob (gzip, zstd or a plain tar as it came; xz or bzip2 as the tar inside)
    and extract its tar into `stage`/diff. Nothing is compressed here: a layer is compressed
    when it first leaves in a compressed form (`layer_blob`)."""
    with open(stage / "blob", "wb") as blob_file:
        if kind in ("gzip", "zstd", None):
            source: BinaryIO = TeeReader(peek, blob_file)  # type: ignore[arg-type, assignment]
            tar = HashingReader(open_decompressed(source))
            info = _extract(tar, stage / "diff", what)
            _drain(raw)
            stored = Descriptor(layer_media_type(kind or "none"), raw.digest, raw.size)
        else:  # kept as the tar inside, which every client reads
            tar = HashingReader(TeeReader(open_decompressed(peek),  # type: ignore[arg-type]
                                          blob_file))
            info = _extract(tar, stage / "diff", what)
            _drain(raw)
            stored = Descriptor(layer_media_type("none"), tar.digest, tar.size)
    # Not fsynced here: committing the layer syncs the whole filesystem once before anything
    # becomes visible, which covers the blob (an fsync of its own would wait for the disk
    # while the other layers of a pull could still be unpacking).
    return tar, stored, info


def _verify_rest(raw: HashingReader, expected: Digest, what: str) -> None:
    """Read what is left of a blob whose tar broke, and raise DigestMismatch if its bytes are
    not the expected ones (a corrupted download, rather than a malformed layer)."""
    try:
        raw.drain()
    except (EOFError, ValueError, OSError, LayerbuildError):
        return
    verify(expected, raw.digest, f"{what} blob")


def commit_staged(store: Store, parent: Digest | None, staged: Staged,
                  lease: Path | None = None) -> Ingested:
    """Make a staged layer visible on `parent` (which must be stored by now)."""
    existed = store.layer(chain_id(parent, staged.diff_id)) is not None
    size = staged.content_size
    record = store.commit_layer(parent, staged.diff_id, staged.diff,
                                content_size(staged.diff) if size is None else size,
                                staged.tar_size, staged.stored, staged.blob_file, lease=lease)
    return Ingested(record, existed)


def _extract(tar: HashingReader, dest: Path, what: str) -> ExtractInfo:
    from layerbuild.layer import extract_layer

    try:
        info = extract_layer(tar, dest)  # type: ignore[arg-type]
        _drain(tar)
        return info
    except (EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the system's, not the data's
            exc.add_note(f"loading {what}")
            raise
        raise FormatError(f"{what}: truncated or corrupt data ({exc})") from None
    except FormatError as exc:  # say which layer: a pull stages several at once
        raise type(exc)(f"{what}: {exc}") from None


def _drain(reader: HashingReader) -> None:
    try:
        reader.drain()
    except (EOFError, ValueError) as exc:
        raise FormatError(f"truncated or corrupt data ({exc})") from None


def ingest_dir(store: Store, parent: Digest | None, diff: Path, stage: Path,
               source_date_epoch: int | None = None, lease: Path | None = None,
               linked_from: Layer | None = None) -> Ingested:
    """Store a staged directory (inside `stage`) as a layer on `parent`; the dir is moved.

    The layer's blob is its plain tar, written and hashed in the one walk that also counts
    its size; it is compressed only when it first leaves compressed (`layer_blob`), as
    Docker's store compresses at push. `linked_from` is the layer a COPY hard-linked files of
    `diff` from (see `write_layer`); when its blob is the plain tar this store wrote, their
    data is copied from there.
    """
    if source_date_epoch is not None:
        clamp_mtimes(diff, source_date_epoch)
    blob_path = stage / f"blob-{os.getpid()}"
    earlier = linked_from.blob_path if linked_from is not None \
        and linked_from.media_type == layer_media_type("none") else None
    try:
        with open(blob_path, "wb") as out:
            info = _write_layer(diff, out, Compression.NONE, source_date_epoch,
                                linked_from=linked_from.diff_dir if linked_from else None,
                                earlier_tar=earlier)
            # Not fsynced: the commit syncs the filesystem once, the blob with the layer dir.
    except OSError as exc:
        _name(exc, "storing a layer", blob_path)
        raise
    existed = store.layer(chain_id(parent, info.diff_id)) is not None
    stored = Descriptor(layer_media_type("none"), info.digest, info.size)
    record = store.commit_layer(parent, info.diff_id, diff, info.content_size,
                                info.uncompressed_size, stored, blob_path, lease=lease)
    return Ingested(record, existed, info.newest)


def _name(exc: OSError, operation: str, path: Path) -> None:
    """Say what was being done, and where, on an error that may name no path (a write)."""
    if exc.filename is None:
        exc.filename = str(path)
    exc.add_note(operation)
