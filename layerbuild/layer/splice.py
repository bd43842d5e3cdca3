"""A layer's earlier tar, read alongside the export of a tree that shares files with it.

When a COPY is built again from its last layer (its unchanged files hard-linked from that
layer's dir), the data of each shared file is already in that layer's tar, right after a
header the export would write again byte for byte: same path, same inode. `EarlierTar` finds
it there, walking the earlier tar forward in the export's own order, so the export copies it
from one sequential file instead of opening each file again.

Only header bytes equal to those the export has just encoded count as a match, and only the
tar this store wrote for a layer it built (plain, in the export's order, no name twice) is
read so; anything unexpected in it ends the splicing, and the export reads the files, as it
would without it. The result is the same bytes either way.
"""

from __future__ import annotations

import os
from pathlib import Path

from layerbuild.layer import tarheader as th

_WINDOW = 256 << 10
"""Bytes read from the earlier tar at a time: the headers and data of many small files."""
_OPAQUE = b".wh..wh..opq"
_WH = b".wh."

TarKey = tuple[tuple[int, bytes], ...]


def tar_key(name: bytes) -> TarKey:
    """Where a tar name falls in the export's order: depth first, a directory before what it
    holds; within a directory its opaque marker, then whiteouts, then the rest, bytewise."""
    parts = name.rstrip(b"/").split(b"/")
    return tuple((0 if p == _OPAQUE else 1 if p.startswith(_WH) else 2, p) for p in parts)


class EarlierTar:
    """A forward-only reader of an earlier layer tar (see the module's text)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size
        self._pos = 0
        self._buf = b""
        self._buf_at = 0
        self.usable = True
        """False once something in the earlier tar was not as this store writes it."""

    def close(self) -> None:
        if self._fd != -1:
            os.close(self._fd)
            self._fd = -1

    def find(self, name: bytes, header: bytes, size: int) -> int | None:
        """The offset of the data of the entry `name` in the earlier tar, if it has exactly
        these header bytes (so `size` data bytes); None if it is not there so. Entries before
        it are passed over, and so is it: ask in the export's order."""
        if not self.usable or len(header) < th.BLOCK:
            return None
        if self._read(self._pos, len(header)) == header:  # most often: the very next one
            at = self._pos + len(header)
            self._pos = at + size + (-size % th.BLOCK)
            return at
        key = tar_key(name)
        while self.usable:
            found = self._entry()
            if found is None:
                return None
            name, header_len, data_size = found
            here = tar_key(name)
            if here > key:
                return None
            start = self._pos
            self._pos += header_len + data_size + (-data_size % th.BLOCK)
            if here < key:
                continue
            if data_size == size and header_len == len(header) \
                    and self._read(start, header_len) == header:
                return start + header_len
            return None
        return None

    @property
    def fd(self) -> int:
        return self._fd

    def _read(self, offset: int, size: int) -> bytes:
        end = offset + size
        if not (self._buf_at <= offset and end <= self._buf_at + len(self._buf)):
            if size > _WINDOW:
                return os.pread(self._fd, size, offset)
            self._buf = os.pread(self._fd, _WINDOW, offset)
            self._buf_at = offset
        return self._buf[offset - self._buf_at : end - self._buf_at]

    def _entry(self) -> tuple[bytes, int, int] | None:
        """The name, header length and data size of the entry at the cursor; None at the end
        (or, with `usable` cleared, where the tar is not as this store writes it)."""
        block = self._read(self._pos, th.BLOCK)
        if len(block) < th.BLOCK or block == bytes(th.BLOCK):
            return None
        records: dict[bytes, bytes] = {}
        header_len = th.BLOCK
        if block[156:157] == b"x":  # a PAX header, then the entry's own block
            pax_size = self._number(block[124:136])
            if pax_size is None or pax_size > 1 << 20:
                self.usable = False
                return None
            body_len = pax_size + (-pax_size % th.BLOCK)
            records = self._records(self._read(self._pos + th.BLOCK, pax_size))
            header_len += body_len + th.BLOCK
            block = self._read(self._pos + header_len - th.BLOCK, th.BLOCK)
            if len(block) < th.BLOCK or block[156:157] == b"x":
                self.usable = False
                return None
        size = self._number(block[124:136])
        if b"size" in records:
            size = int(records[b"size"]) if records[b"size"].isdigit() else None
        if size is None:
            self.usable = False
            return None
        name = records.get(b"path")
        if name is None:
            name = block[0:100].split(b"\0", 1)[0]
            prefix = block[345:500].split(b"\0", 1)[0]
            name = prefix + b"/" + name if prefix else name
        if self._pos + header_len + size > self._size:
            self.usable = False
            return None
        return name, header_len, size

    @staticmethod
    def _number(field: bytes) -> int | None:
        text = field.split(b"\0", 1)[0].strip()
        try:
            return int(text, 8) if text else 0
        except ValueError:
            return None

    def _records(self, data: bytes) -> dict[bytes, bytes]:
        records: dict[bytes, bytes] = {}
        while data:
            length_text, _, _ = data.partition(b" ")
            if not length_text.isdigit() or int(length_text) > len(data) or int(length_text) < 1:
                self.usable = False
                return {}
            record, data = data[: int(length_text)], data[int(length_text):]
            key, _, value = record[len(length_text) + 1 : -1].partition(b"=")
            records[key] = value
        return records
