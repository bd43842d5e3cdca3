"""Whether a file is a tar archive, plain or compressed: what ADD unpacks.

BuildKit's ADD decides by content, never by name: a local source is unpacked when it is a
regular file that decompresses (gzip, bzip2, xz or zstd, told by their magic bytes) to a stream
whose first tar header reads cleanly (moby/buildkit solver/llbsolver/file/unpack.go,
`isArchivePath`). Anything else is copied as it is: a text file, a gzipped text file, an empty
file, a tar of nothing but its end-of-archive blocks.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from layerbuild.errors import FormatError
from layerbuild.layer.compression import open_decompressed

PROBE_LIMIT = 4 << 20
"""Decompressed bytes read at most: the first header and the extended headers before it (Go's
tar reader, which BuildKit uses, refuses an extended header over 1 MiB)."""


class _Prefix(io.RawIOBase):
    """The first `limit` bytes of a stream, then an end (a decompression bomb stops here)."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buf).cast("B")[: self._left]
        data = self._stream.read(len(view)) if view else b""
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


def is_tar_stream(stream: BinaryIO) -> bool:
    """Whether `stream`, decompressed by its magic bytes, starts with a readable tar header.

    >>> import io
    >>> is_tar_stream(io.BytesIO(b"hello")), is_tar_stream(io.BytesIO(bytes(1024)))
    (False, False)
    """
    import tarfile  # loaded by an ADD's check only: COPY never asks

    try:
        head = io.BufferedReader(_Prefix(open_decompressed(stream), PROBE_LIMIT))
        with tarfile.open(fileobj=head, mode="r|") as tf:
            # Opening reads the first header; none (end blocks only) is no archive.
            return tf.next() is not None
    except (tarfile.TarError, EOFError, ValueError, FormatError):  # ValueError: odd PAX data
        return False


def is_tar_archive(path: Path) -> bool:
    """Whether the file at `path` is a tar archive, plain or compressed (what ADD unpacks)."""
    with open(path, "rb") as f:
        return is_tar_stream(f)
