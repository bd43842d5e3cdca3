"""Directory -> layer tar: order, normalised headers, links, devices, xattrs, whiteouts, digests."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from layerbuild.digest import EMPTY_LAYER_DIFF_ID, Digest
from layerbuild.errors import FormatError
from layerbuild.layer import Compression, LayerInfo, write_layer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.*)")
needs_gnu_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
T0 = 1_600_000_000
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service+ep


def export(root: Path, kind: Compression = Compression.NONE, epoch: int | None = None
           ) -> tuple[bytes, LayerInfo]:
    out = io.BytesIO()
    info = write_layer(root, out, kind, source_date_epoch=epoch)
    return out.getvalue(), info


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def by_name(data: bytes) -> dict[str, tarfile.TarInfo]:
    return {m.name: m for m in members(data)}


def gnu_list(data: bytes, *flags: str) -> list[str]:
    """The names GNU tar sees, exactly as stored (dirs keep their trailing slash)."""
    out = subprocess.run(["tar", "-t", "--quoting-style=literal", *flags, "-f", "-"],
                         input=data, capture_output=True, check=True)
    return out.stdout.decode("utf-8", "surrogateescape").splitlines()


def set_times(root: Path, mtime: int = T0) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)


def write(path: Path, data: bytes = b"", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


@needs_gnu_tar
def test_entries_sorted_bytewise_parents_first_relative_dirs_with_slash(tmp_path: Path) -> None:
    for name in ["b/", "a/z", "a/B", "a/y/q", "A", "a-b", "é", "Z"]:
        if name.endswith("/"):
            (tmp_path / name).mkdir(parents=True)
        else:
            write(tmp_path / name, b"x")
    data, _ = export(tmp_path)
    assert gnu_list(data) == ["A", "Z", "a/", "a/B", "a/y/", "a/y/q", "a/z", "a-b", "b/", "é"]


def test_headers_are_normalised(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"hello")
    os.utime(f, ns=(T0 * 10**9 + 999_999_999, T0 * 10**9 + 999_999_999))
    data, _ = export(tmp_path)
    (m,) = members(data)
    assert (m.uname, m.gname) == ("", "")
    assert m.mtime == T0 and isinstance(m.mtime, int)
    assert m.pax_headers == {}  # plain USTAR: no atime, ctime or fractional mtime records
    assert data[257:265] == b"ustar\x0000"
    assert data[156:157] == b"0"


@needs_root
def test_numeric_owner(tmp_path: Path) -> None:
    os.chown(write(tmp_path / "f"), 1234, 5678)
    big = write(tmp_path / "g")
    os.chown(big, 3_000_000, 4_000_000)  # beyond USTAR's 7 octal digits: a PAX record
    got = by_name(export(tmp_path)[0])
    assert (got["f"].uid, got["f"].gid, got["f"].uname, got["f"].gname) == (1234, 5678, "", "")
    assert (got["g"].uid, got["g"].gid) == (3_000_000, 4_000_000)


def test_hard_links_point_at_the_first_path(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "f", b"shared")
    os.link(first, tmp_path / "b")
    os.link(first, tmp_path / "a" / "g")
    got = members(export(tmp_path)[0])
    links = {m.name: (m.type, m.linkname, m.size) for m in got if not m.isdir()}
    assert links == {"a/f": (tarfile.REGTYPE, "", 6),
                     "a/g": (tarfile.LNKTYPE, "a/f", 0),
                     "b": (tarfile.LNKTYPE, "a/f", 0)}


def test_symlinks_keep_their_target_verbatim(tmp_path: Path) -> None:
    os.symlink("/etc/passwd", tmp_path / "abs")
    os.symlink("../../x/./y", tmp_path / "rel")
    os.symlink("t" * 300, tmp_path / "long")
    got = by_name(export(tmp_path)[0])
    assert {n: (m.type, m.linkname) for n, m in got.items()} == {
        "abs": (tarfile.SYMTYPE, "/etc/passwd"),
        "rel": (tarfile.SYMTYPE, "../../x/./y"),
        "long": (tarfile.SYMTYPE, "t" * 300),
    }


@needs_root
def test_devices_and_fifos_kept_sockets_skipped(tmp_path: Path) -> None:
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(tmp_path / "null", 0o666)  # past the umask
    os.mknod(tmp_path / "loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mkfifo(tmp_path / "fifo", 0o600)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        got = by_name(export(tmp_path)[0])
    assert sorted(got) == ["fifo", "loop0", "null"]
    assert (got["null"].type, got["null"].devmajor, got["null"].devminor) == (b"3", 1, 3)
    assert (got["loop0"].type, got["loop0"].devmajor, got["loop0"].devminor) == (b"4", 7, 0)
    assert (got["fifo"].type, got["fifo"].mode) == (tarfile.FIFOTYPE, 0o600)
    assert got["null"].mode == 0o666


def test_special_mode_bits_are_kept(tmp_path: Path) -> None:
    write(tmp_path / "suid", b"x", 0o4755)
    write(tmp_path / "sgid", b"x", 0o2711)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp").chmod(0o1777)
    got = by_name(export(tmp_path)[0])
    assert {n: m.mode for n, m in got.items()} == {"suid": 0o4755, "sgid": 0o2711, "tmp": 0o1777}


@needs_root
def test_xattrs_round_trip_byte_exact_and_overlay_ones_are_dropped(tmp_path: Path) -> None:
    f = write(tmp_path / "ping", b"elf")
    os.setxattr(f, "security.capability", CAPABILITY)
    os.setxattr(f, "user.blob", b"\x00\xff\xfe\x80 not utf-8")
    os.setxattr(f, "trusted.overlay.origin", b"\x00\xfb\x21")
    os.setxattr(f, "user.overlay.origin", b"x")
    os.setxattr(tmp_path, "trusted.overlay.impure", b"y")
    (m,) = members(export(tmp_path)[0])
    xattrs = {k.removeprefix("SCHILY.xattr."): v.encode("utf-8", "surrogateescape")
              for k, v in m.pax_headers.items()}
    assert xattrs == {"security.capability": CAPABILITY, "user.blob": b"\x00\xff\xfe\x80 not utf-8"}


@needs_root
def test_overlay_whiteouts_become_oci_whiteouts_before_their_siblings(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    write(d / "!first", b"x")  # '!' sorts before '.': still after the whiteouts
    os.mknod(d / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.chown(d / "gone", 7, 8, follow_symlinks=False)
    os.link(d / "gone", d / "also-gone")  # overlayfs shares one whiteout inode: not a hard link
    write(d / "xgone")  # the xattr form of a whiteout (newer kernels)
    os.setxattr(d / "xgone", "trusted.overlay.whiteout", b"")
    set_times(tmp_path)
    got = members(export(tmp_path)[0])
    assert [m.name for m in got] == ["d", "d/.wh.also-gone", "d/.wh.gone", "d/.wh.xgone",
                                     "d/!first"]
    wh = got[2]
    assert (wh.type, wh.size, wh.mode, wh.uid, wh.gid, wh.mtime) == (b"0", 0, 0o600, 7, 8, T0)
    assert all(m.pax_headers == {} for m in got[1:4])


@needs_root
def test_opaque_dir_gets_its_marker_first(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o750)
    os.chown(d, 5, 6)
    os.setxattr(d, "trusted.overlay.opaque", b"y")
    write(d / "!a", b"x")
    os.mknod(d / "w", stat.S_IFCHR, os.makedev(0, 0))
    e = tmp_path / "e"
    e.mkdir()
    os.setxattr(e, "trusted.overlay.opaque", b"x")  # "x": has xattr whiteouts, not opaque
    set_times(tmp_path)
    got = members(export(tmp_path)[0])
    assert [m.name for m in got] == ["d", "d/.wh..wh..opq", "d/.wh.w", "d/!a", "e"]
    marker = got[1]
    assert (marker.type, marker.mode, marker.uid, marker.gid, marker.size) == (b"0", 0o750, 5, 6, 0)
    assert got[0].pax_headers == {}  # the opaque xattr itself is not exported


def test_a_real_file_named_like_a_whiteout_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "d" / ".wh.oops")
    with pytest.raises(FormatError, match=r"d/\.wh\.oops"):
        export(tmp_path)


@needs_root
def test_an_upper_dir_with_redirects_is_refused(tmp_path: Path) -> None:
    (tmp_path / "moved").mkdir()
    os.setxattr(tmp_path / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(FormatError, match="redirect"):
        export(tmp_path)


def test_source_date_epoch_clamps_only_newer_mtimes(tmp_path: Path) -> None:
    old = write(tmp_path / "old")
    new = write(tmp_path / "d" / "new")
    os.symlink("old", tmp_path / "link")
    os.utime(old, (1000, 1000))
    os.utime(new, (2_000_000_000, 2_000_000_000))
    os.utime(tmp_path / "link", (2_000_000_000, 2_000_000_000), follow_symlinks=False)
    os.utime(tmp_path / "d", (T0 + 5, T0 + 5))
    got = by_name(export(tmp_path, epoch=T0)[0])
    assert {n: m.mtime for n, m in got.items()} == {"old": 1000, "d": T0, "d/new": T0, "link": T0}
    unclamped = by_name(export(tmp_path)[0])
    assert unclamped["d/new"].mtime == 2_000_000_000


@pytest.mark.parametrize("kind", list(Compression))
def test_empty_dir_is_docker_empty_layer(tmp_path: Path, kind: Compression) -> None:
    data, info = export(tmp_path, kind)
    assert info.diff_id == EMPTY_LAYER_DIFF_ID
    assert info.uncompressed_size == 1024
    if kind is Compression.NONE:
        assert data == bytes(1024)


def test_tar_ends_with_exactly_two_zero_blocks(tmp_path: Path) -> None:
    write(tmp_path / "f", b"y" * 512)
    write(tmp_path / "g", b"z" * 3)
    data, info = export(tmp_path)
    # two headers, one full data block, one padded one, the end: no 10240-byte record padding
    assert len(data) == info.uncompressed_size == 4 * 512 + 1024
    assert data.endswith(bytes(1024)) and data[-1536:-1024] != bytes(512)


def tree(root: Path) -> Path:
    write(root / "etc" / "conf", b"k=v\n" * 100)
    write(root / "bin" / "tool", os.urandom(200_000), 0o755)
    write(root / "big", os.urandom(1 << 20) + b"tail")  # crosses a read chunk boundary
    os.link(root / "etc" / "conf", root / "etc" / "conf.bak")
    os.symlink("../etc/conf", root / "bin" / "conf")
    write(root / ("long/" * 40 + "name"), b"deep")
    write(root / "ünïcödé", b"u")
    set_times(root)
    return root


@pytest.mark.parametrize("kind", list(Compression))
def test_output_is_byte_identical_run_to_run_and_copy_to_copy(tmp_path: Path,
                                                              kind: Compression) -> None:
    src = tree(tmp_path / "src")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(src), str(copy)], check=True)  # new inodes, same content
    first, info = export(src, kind)
    assert export(src, kind) == (first, info)
    assert export(copy, kind) == (first, info)


@pytest.mark.parametrize("kind", list(Compression))
def test_digests_and_sizes(tmp_path: Path, kind: Compression) -> None:
    data, info = export(tree(tmp_path), kind)
    raw = {Compression.NONE: lambda b: b, Compression.GZIP: gzip.decompress,
           Compression.ZSTD: lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
           }[kind](data)
    assert info.digest == Digest(hashlib.sha256(data).hexdigest())
    assert info.size == len(data)
    assert info.diff_id == Digest(hashlib.sha256(raw).hexdigest())
    assert info.uncompressed_size == len(raw)
    if kind is Compression.NONE:
        assert info.digest == info.diff_id
    else:
        assert len(data) < len(raw)


def test_long_and_non_ascii_names_survive(tmp_path: Path) -> None:
    name150 = "p" * 60 + "/" + "q" * 89  # fits USTAR's prefix + name: no PAX header needed
    write(tmp_path / name150, b"1")
    set_times(tmp_path)
    data, _ = export(tmp_path)
    assert data[156:157] == b"5" and data[512 + 156 : 512 + 157] == b"0"  # no 'x' blocks
    assert [m.name for m in members(data)] == ["p" * 60, name150]

    bad = os.fsencode(tmp_path) + b"/raw-\xff\xfe"
    with open(bad, "wb") as f:
        f.write(b"2")
    write(tmp_path / ("x" * 200) / ("y" * 200), b"3")
    names = [m.name for m in members(export(tmp_path)[0])]
    assert "raw-\udcff\udcfe" in names and f"{'x' * 200}/{'y' * 200}" in names


@needs_gnu_tar
@pytest.mark.parametrize("kind", [Compression.NONE, Compression.GZIP])
def test_gnu_tar_lists_and_extracts_the_output(tmp_path: Path, kind: Compression) -> None:
    src = tree(tmp_path / "src")
    data, _ = export(src, kind)
    z = ["-z"] if kind is Compression.GZIP else []
    listing = subprocess.run(["tar", *z, "-tvf", "-"], input=data, capture_output=True,
                             check=True)
    assert b"etc/conf.bak link to etc/conf" in listing.stdout
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", *z, "-xf", "-", "-C", str(out)], input=data, check=True)
    assert (out / "big").read_bytes() == (src / "big").read_bytes()
    assert os.readlink(out / "bin" / "conf") == "../etc/conf"
    assert (out / "etc" / "conf").stat().st_ino == (out / "etc" / "conf.bak").stat().st_ino


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FormatError):
        export(write(tmp_path / "f"))
