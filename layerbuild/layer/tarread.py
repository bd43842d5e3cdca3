"""Tar headers read from a stream of 512-byte blocks, strictly: the archive is hostile.

Reads what `tarfile` reads (USTAR with its prefix, GNU long names and links, PAX extended and
global headers, base-256 numbers, signed or unsigned checksums) and yields the same fields, but
a truncated or corrupt archive is an error, never a silent end, and an extended header may not
be larger than `MAX_EXTENDED` bytes. Member data is read in chunks, never held whole.

>>> import io, tarfile
>>> buf = io.BytesIO()
>>> with tarfile.open(fileobj=buf, mode="w") as tf:
...     tf.addfile(tarfile.TarInfo("empty"))
>>> [e.name for e in TarReader(io.BytesIO(buf.getvalue()))]
['empty']
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from layerbuild.errors import FormatError

BLOCK = 512
MAX_EXTENDED = 1 << 20
"""Largest PAX or GNU long-name record accepted (Go's tar reader sets the same limit)."""
_READ = 64 << 10
"""Bytes asked of the stream at a time: headers of small files are served from one read."""

REGULAR = (b"0", b"\0", b"7")
_HARDLINK, _SYMLINK, _CHR, _BLK, _DIR, _FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
_BUILTIN = (*REGULAR, _HARDLINK, _SYMLINK, _CHR, _BLK, _DIR, _FIFO)
_LONGNAME, _LONGLINK, _SPARSE = b"L", b"K", b"S"
_PAX, _PAX_SOLARIS, _PAX_GLOBAL = b"x", b"X", b"g"
_NUMBERS = {"uid": int, "gid": int, "size": int, "mtime": float}
_UNSIGNED = struct.Struct("148B8x356B")
_SIGNED = struct.Struct("148b8x356b")
_ZERO = bytes(BLOCK)


@dataclass(slots=True)
class Entry:
    """One archive member, its extended headers applied (the names tarfile's TarInfo uses)."""

    name: str
    linkname: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int | float
    uname: str
    gname: str
    devmajor: int
    devminor: int
    pax_headers: dict[str, str] = field(default_factory=dict)

    def isreg(self) -> bool:
        return self.type in REGULAR

    def isdir(self) -> bool:
        return self.type == _DIR

    def issym(self) -> bool:
        return self.type == _SYMLINK

    def islnk(self) -> bool:
        return self.type == _HARDLINK

    def ischr(self) -> bool:
        return self.type == _CHR

    def isblk(self) -> bool:
        return self.type == _BLK

    def isfifo(self) -> bool:
        return self.type == _FIFO


class TarReader:
    """The members of the tar on `stream`, one at a time; `readinto` reads the current one's data.

    Iterating past a member skips what of its data was not read.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self._left = 0
        """Data bytes of the current member not yet read."""
        self._pad = 0
        self._globals: dict[str, str] = {}
        self._last = ""

    def __iter__(self) -> Iterator[Entry]:
        while (entry := self._next()) is not None:
            self._last = entry.name
            yield entry
            self._skip()

    def readinto(self, view: memoryview) -> int:
        """Read the current member's data into `view`; 0 at its end."""
        want = min(len(view), self._left)
        if not want:
            return 0
        have = len(self._buf) - self._pos
        if have:
            n = min(want, have)
            view[:n] = self._buf[self._pos : self._pos + n]
            self._pos += n
        else:
            data = self._stream.read(want)  # a hashing reader may have no readinto
            n = len(data)
            view[:n] = data
            if not n:
                raise FormatError(f"corrupt layer tar at {self._last!r}: unexpected end of data")
        self._left -= n
        return n

    def _skip(self) -> None:
        count = self._left + self._pad
        self._left = self._pad = 0
        while count:
            have = len(self._buf) - self._pos
            if not have:
                self._fill()
                if self._pos == len(self._buf):
                    raise FormatError(
                        f"corrupt layer tar at {self._last!r}: unexpected end of data")
                continue
            n = min(have, count)
            self._pos += n
            count -= n

    def _fill(self) -> None:
        self._buf = self._buf[self._pos :] + self._stream.read(_READ)
        self._pos = 0

    def _take(self, n: int) -> bytes:
        if len(self._buf) - self._pos < n:
            self._fill()
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def _where(self) -> str:
        return f" after {self._last!r}" if self._last else ""

    def _header(self) -> bytes | None:
        """The next header block; None for a zero block (the end of the archive)."""
        buf = self._take(BLOCK)
        if not buf:
            raise FormatError(f"layer tar ends without its end-of-archive blocks{self._where()}")
        if len(buf) != BLOCK:
            raise FormatError(f"layer tar is truncated in a header{self._where()}")
        if buf == _ZERO:
            return None
        if _number(buf[148:156], self) not in (256 + sum(_UNSIGNED.unpack(buf)),
                                               256 + sum(_SIGNED.unpack(buf))):
            raise FormatError(f"layer tar has a corrupt header{self._where()}: bad checksum")
        return buf

    def _next(self) -> Entry | None:
        if (buf := self._header()) is None:
            return None  # a zero block ends the archive, even one with no members
        pax: dict[str, str] | None = None
        longname = longlink = None
        while True:
            entry = self._parse(buf)
            if entry.type not in (_LONGNAME, _LONGLINK, _PAX, _PAX_SOLARIS, _PAX_GLOBAL):
                break
            record = self._record(entry)
            if entry.type == _LONGNAME:
                longname = _text(record.split(b"\0", 1)[0])
            elif entry.type == _LONGLINK:
                longlink = _text(record.split(b"\0", 1)[0])
            elif entry.type == _PAX_GLOBAL:
                self._globals.update(_pax_records(record, self._last))
            else:
                pax = {**self._globals, **(pax or {}), **_pax_records(record, self._last)}
            next_buf = self._header()
            if next_buf is None:
                raise FormatError(f"corrupt layer tar{self._where()}: end of file header")
            buf = next_buf
        if entry.type == _SPARSE:
            raise FormatError(f"{entry.name!r}: GNU sparse files are not supported")
        if longname is not None:
            entry.name = longname
        if longlink is not None:
            entry.linkname = longlink
        _apply(entry, pax if pax is not None else self._globals)
        if any(k.startswith("GNU.sparse.") for k in entry.pax_headers):
            raise FormatError(f"{entry.name!r}: GNU sparse files are not supported")
        if entry.size < 0:
            raise FormatError(f"{entry.name!r}: negative size in tar header")
        if entry.isdir():
            entry.name = entry.name.rstrip("/")
        # As tarfile: only regular files and unknown types carry data; a link's size is not.
        data = entry.size if entry.isreg() or entry.type not in _BUILTIN else 0
        self._left, self._pad = data, -data % BLOCK
        return entry

    def _record(self, entry: Entry) -> bytes:
        """The data of an extended header, bounded: a hostile size must not be allocated."""
        if not 0 <= entry.size <= MAX_EXTENDED:
            raise FormatError(f"layer tar has an extended header of {entry.size} bytes"
                              f"{self._where()} (at most {MAX_EXTENDED})")
        size = entry.size + (-entry.size % BLOCK)
        data = self._take(size)
        if len(data) != size:
            raise FormatError(f"corrupt layer tar{self._where()}: unexpected end of data")
        return data[: entry.size]

    def _parse(self, buf: bytes) -> Entry:
        n = _number
        entry = Entry(_text(_cut(buf[0:100])), _text(_cut(buf[157:257])), buf[156:157],
                      n(buf[100:108], self), n(buf[108:116], self), n(buf[116:124], self),
                      n(buf[124:136], self), n(buf[136:148], self),
                      _text(_cut(buf[265:297])), _text(_cut(buf[297:329])),
                      n(buf[329:337], self), n(buf[337:345], self))
        if entry.type == b"\0" and entry.name.endswith("/"):
            entry.type = _DIR  # old V7 tars mark a directory by its slash
        if entry.isdir():
            entry.name = entry.name.rstrip("/")
        if entry.type not in (_LONGNAME, _LONGLINK, _SPARSE) and (prefix := _cut(buf[345:500])):
            entry.name = _text(prefix) + "/" + entry.name
        return entry


def _apply(entry: Entry, pax: dict[str, str]) -> None:
    """Let PAX records replace header fields, as tarfile does (a bad number reads as 0)."""
    for key, value in pax.items():
        if key in _NUMBERS:
            try:
                setattr(entry, key, _NUMBERS[key](value))
            except ValueError:
                setattr(entry, key, 0)
        elif key == "path":
            entry.name = value.rstrip("/")
        elif key == "linkpath":
            entry.linkname = value
        elif key in ("uname", "gname"):
            setattr(entry, key, value)
    entry.pax_headers = dict(pax)


def _pax_records(data: bytes, last: str) -> dict[str, str]:
    """`LEN KEY=VALUE\\n` records; parsing stops at a NUL, as tarfile's does."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        length = data[pos:space]
        end = pos + int(length) if space > pos and length.isdigit() else 0
        equals = data.find(b"=", space, end)
        if end <= space or end > len(data) or equals < 0 or data[end - 1] != 0x0A:
            raise FormatError(f"corrupt layer tar{' after ' + repr(last) if last else ''}: "
                              "invalid PAX record")
        out[_text(data[space + 1 : equals])] = _text(data[equals + 1 : end - 1])
        pos = end
    return out


def _cut(field_: bytes) -> bytes:
    end = field_.find(b"\0")
    return field_ if end < 0 else field_[:end]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _number(field_: bytes, reader: TarReader) -> int:
    """An octal field (spaces and NULs around it allowed) or a base-256 one."""
    if field_[0] in (0o200, 0o377):
        n = int.from_bytes(field_[1:], "big")
        return n - 256 ** (len(field_) - 1) if field_[0] == 0o377 else n
    try:
        return int(_cut(field_).decode("ascii").strip() or "0", 8)
    except ValueError:
        raise FormatError(f"layer tar has a corrupt header{reader._where()}: "
                          "invalid header") from None
