"""Hostile layer tars: nothing may be created or changed outside the destination."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from tartools import build, entry

from layerbuild.errors import FormatError, UnsafePath
from layerbuild.layer import ExtractInfo, extract_layer, open_decompressed

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)")


def state(top: Path, skip: Path) -> dict[str, tuple[object, ...]]:
    """Every path under `top` except `skip`, with what could betray a write."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            body: object = None
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            out[os.path.relpath(path, top)] = (st.st_mode, st.st_uid, st.st_nlink, st.st_size,
                                               st.st_mtime_ns, body)
    return out


@dataclass
class Arena:
    """A destination with a sentinel directory next to it."""

    top: Path
    dest: Path
    sentinel: Path
    before: dict[str, tuple[object, ...]]

    def untouched(self) -> bool:
        return state(self.top, self.dest) == self.before

    def extract(self, *entries: tuple[tarfile.TarInfo, bytes]) -> ExtractInfo:
        return extract_layer(io.BytesIO(build(*entries)), self.dest)


@pytest.fixture
def arena(tmp_path: Path) -> Arena:
    dest, sentinel = tmp_path / "dest", tmp_path / "sentinel"
    dest.mkdir()
    (sentinel / "etc").mkdir(parents=True)
    (sentinel / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    (sentinel / "secret").write_bytes(b"s3cret")
    return Arena(tmp_path, dest, sentinel, state(tmp_path, dest))


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.SYMTYPE, linkname=target)


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.LNKTYPE, linkname=target)


def test_absolute_names_are_rooted(arena: Arena) -> None:
    arena.extract(entry("/etc/x", data=b"in"), entry("//./etc//y", data=b"in2"))
    assert (arena.dest / "etc" / "x").read_bytes() == b"in"
    assert (arena.dest / "etc" / "y").read_bytes() == b"in2"
    assert arena.untouched()


@pytest.mark.parametrize("name", ["../x", "a/../../x", "./../sentinel/secret", "a/b/../../../x"])
def test_names_climbing_out_are_refused(arena: Arena, name: str) -> None:
    with pytest.raises(UnsafePath, match=r"\.\./"):
        arena.extract(entry("a/b", tarfile.DIRTYPE), entry(name, data=b"pwned"))
    assert arena.untouched()


def test_lexical_dotdot_inside_the_root_is_fine(arena: Arena) -> None:
    arena.extract(entry("a/x/../b", data=b"ok"))
    assert (arena.dest / "a" / "b").read_bytes() == b"ok"
    assert not (arena.dest / "a" / "x").exists()


def test_write_through_a_symlink_to_slash_is_refused(arena: Arena) -> None:
    through = os.path.relpath(arena.sentinel / "etc" / "passwd", "/")
    with pytest.raises(UnsafePath, match="symlink"):
        arena.extract(symlink("a", "/"), entry(f"a/{through}", data=b"pwned"))
    assert arena.untouched()


@pytest.mark.parametrize("target", ["../sentinel", "ABS"])
def test_write_through_a_symlink_to_outside_is_refused(arena: Arena, target: str) -> None:
    target = str(arena.sentinel) if target == "ABS" else target
    with pytest.raises(UnsafePath, match="symlink 'a'"):
        arena.extract(symlink("a", target), entry("a/secret", data=b"pwned"))
    assert arena.untouched()


def test_symlink_chain_bypass_is_refused(arena: Arena) -> None:
    # tarsafe follows each link separately and misses that esc = x/.. = ./.. = outside.
    with pytest.raises(UnsafePath, match="symlink 'esc'"):
        arena.extract(symlink("x", "."), symlink("esc", "x/.."), entry("esc/f", data=b"pwned"))
    assert not (arena.top / "f").exists()
    assert arena.untouched()


def test_symlink_made_earlier_in_the_archive_is_not_a_parent(arena: Arena) -> None:
    with pytest.raises(UnsafePath):
        arena.extract(entry("d", tarfile.DIRTYPE), symlink("d/link", "../../sentinel"),
                      entry("d/link/etc/passwd", data=b"pwned"))
    assert arena.untouched()


def test_hard_link_through_a_symlink_to_outside_is_refused(arena: Arena) -> None:
    with pytest.raises(UnsafePath, match="symlink 'out'"):
        arena.extract(symlink("out", "../sentinel"), hardlink("l", "out/secret"))
    with pytest.raises(UnsafePath, match="symlink 'out'"):
        arena.extract(entry("f", data=b"x"), hardlink("out/l", "f"))
    assert arena.untouched()


@pytest.mark.parametrize("target", ["../../etc/passwd", "../sentinel/secret", "a/../../x"])
def test_hard_link_climbing_out_is_refused(arena: Arena, target: str) -> None:
    with pytest.raises(UnsafePath):
        arena.extract(hardlink("l", target))
    assert arena.untouched()


def test_hard_link_to_an_absolute_name_stays_inside(arena: Arena) -> None:
    with pytest.raises(FormatError, match="does not exist"):
        arena.extract(hardlink("l", "/etc/passwd"))  # never the host's /etc/passwd
    arena.extract(entry("etc/passwd", data=b"mine"), hardlink("l", "/etc/passwd"))
    assert (arena.dest / "l").read_bytes() == b"mine"
    assert arena.untouched()


def test_hard_link_to_a_symlink_links_the_symlink_itself(arena: Arena) -> None:
    arena.extract(symlink("s", "../sentinel/secret"), hardlink("l", "s"))
    st_l, st_s = os.lstat(arena.dest / "l"), os.lstat(arena.dest / "s")
    assert stat.S_ISLNK(st_l.st_mode) and st_l.st_ino == st_s.st_ino
    assert os.readlink(arena.dest / "l") == "../sentinel/secret"
    assert arena.untouched()


def test_hard_link_to_a_directory_is_refused(arena: Arena) -> None:
    with pytest.raises(FormatError):
        arena.extract(entry("d", tarfile.DIRTYPE), hardlink("l", "d"))
    assert arena.untouched()


def test_a_file_replaces_a_symlink_instead_of_writing_through_it(arena: Arena) -> None:
    arena.extract(symlink("f", "../sentinel/secret"), entry("f", data=b"pwned", mode=0o600))
    assert not os.path.islink(arena.dest / "f")
    assert (arena.dest / "f").read_bytes() == b"pwned"
    assert arena.untouched()


def test_a_dir_replaces_a_symlink_instead_of_following_it(arena: Arena) -> None:
    arena.extract(symlink("d", "../sentinel"), entry("d", tarfile.DIRTYPE, mode=0o777),
                  entry("d/secret", data=b"pwned"))
    assert (arena.dest / "d").is_dir() and not (arena.dest / "d").is_symlink()
    assert arena.untouched()


def test_a_file_then_a_dir_of_the_same_name(arena: Arena) -> None:
    arena.extract(entry("x", data=b"file"), entry("x", tarfile.DIRTYPE), entry("x/y", data=b"y"))
    assert (arena.dest / "x" / "y").read_bytes() == b"y"


def test_a_dir_then_a_file_removes_the_tree_without_following_links(arena: Arena) -> None:
    arena.extract(entry("d", tarfile.DIRTYPE), entry("d/sub/f", data=b"1"),
                  symlink("d/out", "../../sentinel"), symlink("d/sub/abs", str(arena.sentinel)),
                  entry("d", data=b"now a file"))
    assert (arena.dest / "d").read_bytes() == b"now a file"
    assert arena.untouched()


def test_a_file_replacing_a_hard_link_does_not_change_the_other_name(arena: Arena) -> None:
    arena.extract(entry("a", data=b"orig"), hardlink("b", "a"), entry("b", data=b"new"))
    assert (arena.dest / "a").read_bytes() == b"orig"
    assert (arena.dest / "b").read_bytes() == b"new"


@needs_root
def test_setuid_bits_owners_and_devices_are_kept(arena: Arena) -> None:
    arena.extract(entry("su", data=b"elf", mode=0o4755, uid=0, gid=0),
                  entry("wall", data=b"elf", mode=0o2755, uid=0, gid=5),
                  entry("mem", tarfile.CHRTYPE, mode=0o640, devmajor=1, devminor=1),
                  entry("sda", tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0, gid=6))
    assert stat.S_IMODE((arena.dest / "su").stat().st_mode) == 0o4755
    wall = (arena.dest / "wall").stat()
    assert (stat.S_IMODE(wall.st_mode), wall.st_gid) == (0o2755, 5)
    mem, sda = os.lstat(arena.dest / "mem"), os.lstat(arena.dest / "sda")
    assert stat.S_ISCHR(mem.st_mode) and mem.st_rdev == os.makedev(1, 1)
    assert stat.S_ISBLK(sda.st_mode) and sda.st_rdev == os.makedev(8, 0) and sda.st_gid == 6
    assert arena.untouched()


@needs_root
def test_overlay_xattrs_from_the_archive_are_not_applied(arena: Arena) -> None:
    arena.extract(entry("d", tarfile.DIRTYPE, pax_headers={
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.user.overlay.opaque": "y",
        "SCHILY.xattr.user.ok": "fine",
    }))
    assert os.listxattr(arena.dest / "d") == ["user.ok"]


def test_names_with_nul_bytes_are_refused(arena: Arena) -> None:
    with pytest.raises(FormatError, match="NUL"):
        arena.extract(entry("x", data=b"1", pax_headers={"path": "a\x00b"}))
    assert arena.untouched()


def test_non_directory_naming_the_root_is_refused(arena: Arena) -> None:
    with pytest.raises(UnsafePath):
        arena.extract(entry("./", data=b"x"))
    with pytest.raises(UnsafePath):
        arena.extract(symlink("/", "/etc"))
    assert arena.untouched()


def layer() -> bytes:
    return build(entry("a", data=b"x" * 2000), entry("b", data=b"y" * 100), entry("c", data=b"z"))


@pytest.mark.parametrize("cut", [300, 700, 2560, 2900, 4608], ids=[
    "in-first-header", "in-data", "at-header-boundary", "in-second-header", "no-end-blocks"])
def test_truncated_tar_is_a_format_error(arena: Arena, cut: int) -> None:
    data = layer()
    assert data[3584:4096] != bytes(512)  # the third member's header: cut before it is short
    with pytest.raises(FormatError, match=r"truncated|end-of-archive|end of data"):
        extract_layer(io.BytesIO(data[:cut]), arena.dest)
    assert arena.untouched()


def test_corrupt_header_after_the_first_is_a_format_error(arena: Arena) -> None:
    data = bytearray(layer())
    data[2560 + 148 : 2560 + 156] = b"0000000\0"  # a wrong checksum on the second header
    with pytest.raises(FormatError, match="corrupt"):
        extract_layer(io.BytesIO(bytes(data)), arena.dest)


def test_negative_size_is_a_format_error(arena: Arena) -> None:
    data = bytearray(build(entry("a", data=b"x")))
    data[124:136] = b"\xff" * 12  # base-256 -1
    data[148:156] = b"        "
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(FormatError):
        extract_layer(io.BytesIO(bytes(data)), arena.dest)


@pytest.mark.parametrize("blob", [
    b"\x1f\x8b\x08\x00" + os.urandom(4000),
    gzip.compress(layer() + os.urandom(5000))[:3000],
    b"this is not a tar at all" * 100,
    b"",
], ids=["gzip-garbage", "gzip-truncated", "not-a-tar", "empty"])
def test_garbage_is_a_format_error(arena: Arena, blob: bytes) -> None:
    with pytest.raises(FormatError):
        extract_layer(open_decompressed(io.BytesIO(blob)), arena.dest)
    assert arena.untouched()


def test_errors_name_the_offending_member(arena: Arena) -> None:
    with pytest.raises(UnsafePath, match=re.escape("evil/../../x")):
        arena.extract(entry("fine", data=b"1"), entry("evil/../../x", data=b"2"))
