"""Encoding of normalised tar headers: USTAR where it fits, PAX records only where needed.

Headers are built here rather than by `tarfile` so that a layer's bytes (and so its diff_id)
depend on this file alone, not on the Python version that happens to run it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
"""Two zero blocks and no record padding, as Go's archive/tar (and so Docker) ends a tar."""

REGULAR = b"0"
HARDLINK = b"1"
SYMLINK = b"2"
CHARDEV = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
_PAX = b"x"

_PAX_NAME = b"././@PaxHeader"
_NAME_LEN, _PREFIX_LEN, _LINK_LEN = 100, 155, 100


@dataclass(frozen=True)
class Header:
    """One tar entry's metadata; names are raw bytes as found on disk."""

    name: bytes
    type: bytes
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[bytes, bytes], ...] = ()


def padding(size: int) -> bytes:
    """Zero bytes that round a member's data up to a whole block."""
    return bytes(-size % BLOCK)


_SHORT = 8 ** 7  # what an 8-byte octal field holds (uid, gid)
_LONG = 8 ** 11  # and a 12-byte one (size, mtime)


def encode(h: Header) -> bytes:
    """The header block(s) for one entry, preceded by a PAX header block when needed."""
    if not h.xattrs and len(h.name) <= _NAME_LEN and len(h.linkname) <= _LINK_LEN \
            and h.name.isascii() and h.linkname.isascii() and 0 <= h.uid < _SHORT \
            and 0 <= h.gid < _SHORT and 0 <= h.size < _LONG and 0 <= h.mtime < _LONG:
        # Most entries: one USTAR block, nothing for PAX (what the general path gives them).
        return _block(h.name, b"", h.type, h.mode, h.uid, h.gid, h.size, h.mtime, h.linkname,
                      h.devmajor, h.devminor)
    return encode_general(h)


def encode_general(h: Header) -> bytes:
    """`encode` for any header: USTAR fields where they fit, PAX records for the rest."""
    records: dict[bytes, bytes] = {}
    name, prefix = _split_name(h.name)
    if name is None:
        records[b"path"] = h.name
        name, prefix = b"", b""
    linkname = h.linkname
    if len(linkname) > _LINK_LEN or not linkname.isascii():
        records[b"linkpath"] = linkname
        linkname = b""
    fields = {}
    for key, value, width in ((b"uid", h.uid, 8), (b"gid", h.gid, 8),
                              (b"size", h.size, 12), (b"mtime", h.mtime, 12)):
        if 0 <= value < 8 ** (width - 1):
            fields[key] = value
        else:
            records[key] = str(value).encode()
            fields[key] = 0
    for xattr, data in h.xattrs:
        records[b"SCHILY.xattr." + xattr] = data
    if not _utf8(records.get(b"path", b"")) or not _utf8(records.get(b"linkpath", b"")):
        records[b"hdrcharset"] = b"BINARY"
    ustar = _ustar(name, prefix, h.type, h.mode, fields, linkname, h.devmajor, h.devminor)
    if not records:
        return ustar
    body = b"".join(_record(k, records[k]) for k in sorted(records))
    pax = _ustar(_PAX_NAME, b"", _PAX, 0o644, {b"size": len(body)}, b"", 0, 0)
    return pax + body + padding(len(body)) + ustar


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _split_name(name: bytes) -> tuple[bytes | None, bytes]:
    """USTAR (name, prefix) for a path, or (None, b"") when only a PAX record can hold it."""
    if not name.isascii():
        return None, b""
    if len(name) <= _NAME_LEN:
        return name, b""
    # The prefix takes everything before the last slash that leaves it short enough; a dir's
    # trailing slash stays in the name field.
    cut = name.rfind(b"/", 0, min(len(name) - 1, _PREFIX_LEN + 1))
    prefix, rest = name[:cut], name[cut + 1 :]
    if cut <= 0 or not rest or len(rest) > _NAME_LEN:
        return None, b""
    return rest, prefix


def _record(key: bytes, value: bytes) -> bytes:
    """One PAX record, `<len> <key>=<value>\\n`, whose length counts its own digits."""
    body = b" " + key + b"=" + value + b"\n"
    size = len(body) + len(str(len(body)))
    size = len(body) + len(str(size))
    return str(size).encode() + body


_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_MAGIC = b"ustar\x0000"


def _ustar(name: bytes, prefix: bytes, typeflag: bytes, mode: int, fields: dict[bytes, int],
           linkname: bytes, devmajor: int, devminor: int) -> bytes:
    return _block(name, prefix, typeflag, mode, fields.get(b"uid", 0), fields.get(b"gid", 0),
                  fields.get(b"size", 0), fields.get(b"mtime", 0), linkname, devmajor, devminor)


def _block(name: bytes, prefix: bytes, typeflag: bytes, mode: int, uid: int, gid: int,
           size: int, mtime: int, linkname: bytes, devmajor: int, devminor: int) -> bytes:
    """One USTAR header block."""
    block = _USTAR.pack(
        name, b"%07o\0" % (mode & 0o7777), b"%07o\0" % uid, b"%07o\0" % gid,
        b"%011o\0" % size, b"%011o\0" % mtime,
        b" " * 8,  # checksum, computed over the block with these spaces in place
        typeflag, linkname, _MAGIC,
        b"", b"",  # uname, gname: numeric ids only
        b"%07o\0" % devmajor, b"%07o\0" % devminor, prefix,
    )
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]
