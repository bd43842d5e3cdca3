"""What a layer's tar would say of each path of its diff dir, and how two such listings differ.

A diff dir is read in place, never following a symlink: whiteouts (0/0 char devices) read as
deletions, opaque dirs as such, hard links as links to the first name in tar order, exactly as
`export` writes them. Comparing listings is pure; only `scan_layer` and `with_contents` read.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from layerbuild.digest import Digest, digest_stream
from layerbuild.errors import FormatError
from layerbuild.image import rfc3339
from layerbuild.layer import tree, whiteout
from layerbuild.layer.export import Entry, read_xattrs, walk

_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
          stat.S_IFCHR: "char device", stat.S_IFBLK: "block device", stat.S_IFIFO: "fifo"}


@dataclass(frozen=True)
class PathInfo:
    """What a layer's tar entry says of one path: its type, metadata and content or target.

    Fields the tar entry of that type does not carry stay at their defaults, so comparing two
    values compares exactly what makes two layer tars differ.
    """

    kind: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    content: Digest | None = None
    link: str | None = None
    device: tuple[int, int] | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    opaque: bool = False


@dataclass(frozen=True)
class Listing:
    """A layer's paths (`/dir/name`) and where on disk each regular file's data is."""

    paths: Mapping[str, PathInfo]
    files: Mapping[str, bytes]
    """Each regular file's path below `root`."""
    root: bytes


def with_contents(left: Listing, right: Listing,
                  ) -> tuple[dict[str, PathInfo], dict[str, PathInfo]]:
    """Both listings' paths, with the sha256 of the data of each file both layers have."""
    # Only those need it: a path in one layer alone differs whatever its content.
    a, b = dict(left.paths), dict(right.paths)
    for name in left.files.keys() & right.files.keys():
        a[name] = replace(a[name], content=hash_file(left.root, left.files[name]))
        b[name] = replace(b[name], content=hash_file(right.root, right.files[name]))
    return a, b


def compare_paths(left: PathInfo | None, right: PathInfo | None) -> str | None:
    """What differs between two versions of one path (None: absent), or None if nothing."""
    if left == right:
        return None
    if left is None or right is None or left.kind != right.kind:
        prefix = "type " if left is not None and right is not None else ""
        return f"{prefix}{describe(left)} != {describe(right)}"
    fields: tuple[tuple[str, Callable[[Any], str], object, object], ...] = (
        ("content", _opt, left.content, right.content),
        ("size", str, left.size, right.size),
        ("mode", _mode, left.mode, right.mode),
        ("uid", str, left.uid, right.uid),
        ("gid", str, left.gid, right.gid),
        ("link target", _quoted, left.link, right.link),
        ("device", _device, left.device, right.device),
        ("opaque", _yes_no, left.opaque, right.opaque),
    )
    parts = [f"{label} {show(a)} != {show(b)}" for label, show, a, b in fields if a != b]
    parts.extend(_xattr_changes(dict(left.xattrs), dict(right.xattrs)))
    if left.mtime != right.mtime:
        parts.append(f"mtime {_time(left.mtime)} != {_time(right.mtime)}")
    return ", ".join(parts)


def compare_listings(left: Mapping[str, PathInfo], right: Mapping[str, PathInfo],
                     ) -> list[tuple[str, str]]:
    """(path, what differs) for each path that differs between two layers, in tree order."""
    out = []
    # Tree order: "/" as the lowest character compares names component by component
    # without splitting each one (a name may have thousands of components).
    for name in sorted(left.keys() | right.keys(), key=lambda n: n.replace("/", "\0")):
        text = compare_paths(left.get(name), right.get(name))
        if text:
            out.append((printable(name), text))
    return out


def describe(info: PathInfo | None) -> str:
    """A path's type in a few words, e.g. "symlink -> busybox" or "deletion"."""
    if info is None:
        return "(absent)"
    if info.link is not None:
        return f"{info.kind} -> {_quoted(info.link)}"
    if info.device is not None:
        return f"{info.kind} {_device(info.device)}"
    if info.kind == "file":
        return f"file ({info.size} bytes)"
    return "opaque directory" if info.opaque else info.kind


def printable(text: str) -> str:
    """A file name or link target as text that prints anywhere (bytes not UTF-8 as \\xNN)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _xattr_changes(left: dict[str, bytes], right: dict[str, bytes]) -> Iterator[str]:
    for name in sorted(left.keys() | right.keys()):
        a, b = left.get(name), right.get(name)
        if a != b:
            yield f"xattr {name} {_bytes(a)} != {_bytes(b)}"


def _bytes(value: bytes | None) -> str:
    if value is None:
        return "(absent)"
    text = value.decode("latin-1")  # any bytes decode; only printable ASCII is shown as text
    return json.dumps(text) if value.isascii() and text.isprintable() else f"0x{value.hex()}"


def _opt(value: object) -> str:
    return "(absent)" if value is None else str(value)


def _mode(mode: int) -> str:
    return f"{mode:04o}"


def _quoted(text: str | None) -> str:
    return "(absent)" if text is None else json.dumps(printable(text), ensure_ascii=False)


def _device(device: tuple[int, int] | None) -> str:
    return "(absent)" if device is None else f"{device[0]}:{device[1]}"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _time(seconds: int) -> str:
    try:
        return rfc3339(seconds)
    except (OverflowError, OSError, ValueError):  # outside what datetime can show
        return f"@{seconds}"


# --- reading a diff dir ---------------------------------------------------------------------


def scan_layer(root: Path) -> Listing:
    """Each path of a layer's diff dir as its tar entry would describe it, without contents."""
    top = os.fsencode(root)
    paths: dict[str, PathInfo] = {}
    files: dict[str, bytes] = {}
    root_st = os.lstat(top)
    if whiteout.is_opaque(read_xattrs(top)):  # the tar holds only its opaque marker
        paths["/"] = PathInfo("directory", stat.S_IMODE(root_st.st_mode) & 0o777,
                              root_st.st_uid, root_st.st_gid, opaque=True,
                              mtime=_seconds(root_st))
    links: dict[tuple[int, int], str] = {}
    cursor = tree.Cursor.open(top)
    try:
        for entry in walk(cursor):
            name = "/" + os.fsdecode(entry.rel)
            paths[name] = info = _path_info(entry, name, links, _seconds(entry.st), cursor.fd)
            if info.kind == "file":
                files[name] = entry.rel
    finally:
        cursor.close()
    return Listing(paths, files, top)


def _path_info(entry: Entry, name: str, links: dict[tuple[int, int], str], mtime: int,
               dir_fd: int) -> PathInfo:
    """The tar entry's view of one path, as export.py writes it."""
    st = entry.st
    if entry.is_whiteout:  # exported as an empty file with mode 0600 and the node's owner
        return PathInfo("deletion", 0o600, st.st_uid, st.st_gid, mtime=mtime)
    kind = _KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise FormatError(f"{printable(name)}: unsupported file type {st.st_mode:o}")
    xattrs = tuple(sorted((k, v) for k, v in entry.xattrs.items()
                          if not whiteout.is_overlay_xattr(k)))
    base = PathInfo(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime=mtime,
                    xattrs=xattrs)
    if kind == "directory":
        return replace(base, opaque=whiteout.is_opaque(entry.xattrs))
    if st.st_nlink > 1:  # the first name in tar order carries the data, later ones link to it
        first = links.setdefault((st.st_dev, st.st_ino), name)
        if first != name:
            return replace(base, kind="hardlink", link=first)
    if kind == "file":
        return replace(base, size=st.st_size)
    if kind == "symlink":
        return replace(base, link=os.fsdecode(os.readlink(entry.name, dir_fd=dir_fd)))
    if kind.endswith("device"):
        return replace(base, device=(os.major(st.st_rdev), os.minor(st.st_rdev)))
    return base


def _seconds(st: os.stat_result) -> int:
    # A tar header keeps whole seconds, so sub-second differences never change a diff_id.
    return st.st_mtime_ns // 1_000_000_000


def hash_file(root: bytes, rel: bytes) -> Digest:
    """sha256 of the data of the regular file `root/rel`, read in chunks, never through a
    symlink, at any depth."""
    fd = tree.open_below(root, rel, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return digest_stream(f)[0]
