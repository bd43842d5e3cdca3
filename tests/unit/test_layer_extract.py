"""Layer tar -> directory: faithful round trips, OCI -> overlay whiteouts, a real overlay mount."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tartools import T0, build, entry

from layerbuild.digest import HashingReader
from layerbuild.errors import FormatError
from layerbuild.layer import (
    Compression,
    ExtractInfo,
    extract_layer,
    open_decompressed,
    write_layer,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.*)")
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a layer must preserve about a tree, per relative path."""
    out: dict[str, tuple[object, ...]] = {}
    first_path: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            body: object = None
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                body = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs = sorted((n, os.getxattr(path, n, follow_symlinks=False))
                            for n in os.listxattr(path, follow_symlinks=False))
            link = None
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                link = first_path.setdefault((st.st_dev, st.st_ino), rel)
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_mtime_ns // 10**9, body, xattrs, link)
    return out


def write(path: Path, data: bytes = b"", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def rich_tree(root: Path) -> Path:
    """A tree with every kind of entry and metadata a layer carries."""
    write(root / "etc" / "passwd", b"root:x:0:0::/root:/bin/sh\n")
    write(root / "bin" / "su", os.urandom(70_000), 0o4755)
    write(root / "bin" / "wall", b"w", 0o2755)
    os.chown(root / "bin" / "wall", 0, 5)
    os.chmod(root / "bin" / "wall", 0o2755)
    write(root / "bin" / "ping", b"ping")
    os.setxattr(root / "bin" / "ping", "security.capability", CAPABILITY)
    os.setxattr(root / "bin" / "ping", "user.note", b"\xff\x00binary")
    os.setxattr(root / "bin" / "ping", "trusted.custom", b"kept")
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "home" / "u").mkdir(parents=True)
    os.chown(root / "home" / "u", 1000, 1000)
    (root / "home" / "u").chmod(0o700)
    write(root / "home" / "u" / "big", os.urandom((1 << 20) + 123))
    os.chown(root / "home" / "u" / "big", 1000, 1000)
    os.link(root / "etc" / "passwd", root / "etc" / "passwd-")
    os.link(root / "etc" / "passwd", root / "home" / "passwd.hard")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("../etc/passwd", root / "bin" / "rel-link")
    os.symlink("/nonexistent/dangling", root / "dangling")
    os.lchown(root / "dangling", 3, 4)
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(root / "dev" / "null", 0o666)
    os.mknod(root / "dev" / "sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mkfifo(root / "dev" / "pipe", 0o620)
    (root / "empty").mkdir()
    for i, (dirpath, dirnames, filenames) in enumerate(os.walk(root, topdown=False)):
        for name in dirnames + filenames:
            t = T0 + 1000 * i + len(name)
            os.utime(os.path.join(dirpath, name), (t, t), follow_symlinks=False)
    return root


def tar_of(root: Path, kind: Compression = Compression.NONE) -> bytes:
    out = io.BytesIO()
    write_layer(root, out, kind)
    return out.getvalue()


def extract(data: bytes, dest: Path, **kw: bool) -> ExtractInfo:
    return extract_layer(io.BytesIO(data), dest, **kw)


@needs_root
def test_round_trip_keeps_every_detail(tmp_path: Path) -> None:
    src = rich_tree(tmp_path / "src")
    info = extract(tar_of(src), tmp_path / "dst")
    assert snapshot(tmp_path / "dst") == snapshot(src)
    assert (tmp_path / "dst" / "etc" / "passwd").stat().st_nlink == 3
    assert info.bytes_written == sum(p.stat().st_size for p in src.rglob("*")
                                     if p.is_file() and not p.is_symlink()
                                     and p.name not in ("passwd-", "passwd.hard"))
    assert info.xattrs_skipped == 0


@needs_root
@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD])
def test_round_trip_through_compression_and_a_pipe(tmp_path: Path, kind: Compression) -> None:
    src = rich_tree(tmp_path / "src")
    blob = tar_of(src, kind)
    rfd, wfd = os.pipe()

    def feed() -> None:
        with os.fdopen(wfd, "wb") as w:
            w.write(blob)

    t = threading.Thread(target=feed)
    t.start()
    with os.fdopen(rfd, "rb", buffering=0) as r:
        extract_layer(open_decompressed(r), tmp_path / "dst")  # type: ignore[arg-type]
    t.join()
    assert snapshot(tmp_path / "dst") == snapshot(src)


@needs_root
def test_reexport_of_an_extracted_layer_is_byte_identical(tmp_path: Path) -> None:
    data = tar_of(rich_tree(tmp_path / "src"))
    extract(data, tmp_path / "dst")
    assert tar_of(tmp_path / "dst") == data


def test_the_whole_stream_is_consumed(tmp_path: Path) -> None:
    data = build(entry("f", data=b"x"))  # tarfile pads to a 10 KiB record
    assert len(data) == 10240
    reader = HashingReader(io.BytesIO(data))
    extract_layer(reader, tmp_path / "dst")  # type: ignore[arg-type]
    assert reader.size == len(data)


def test_content_bytes_is_what_a_walk_would_count_or_none(tmp_path: Path) -> None:
    plain = extract(build(entry("d", tarfile.DIRTYPE), entry("d/f", data=b"abc"),
                          entry("g", data=b"12345"), entry("s", tarfile.SYMTYPE, linkname="g")),
                    tmp_path / "plain")
    assert plain.content_bytes == 8 == plain.bytes_written
    replaced = extract(build(entry("f", data=b"abc"), entry("f", data=b"12345")),
                       tmp_path / "replaced")
    linked = extract(build(entry("f", data=b"abc"), entry("h", tarfile.LNKTYPE, linkname="f")),
                     tmp_path / "linked")
    assert replaced.content_bytes is None and linked.content_bytes is None


def test_dir_mtimes_are_set_after_their_children(tmp_path: Path) -> None:
    data = build(entry("d", tarfile.DIRTYPE, mtime=T0), entry("d/e", tarfile.DIRTYPE, mtime=T0 + 1),
                 entry("d/e/f", data=b"x", mtime=T0 + 2), entry("d/g", data=b"y", mtime=T0 + 3))
    extract(data, tmp_path)
    assert [int((tmp_path / p).stat().st_mtime) for p in ("d", "d/e", "d/e/f", "d/g")] == [
        T0, T0 + 1, T0 + 2, T0 + 3]


def test_root_entry_sets_the_destination_metadata(tmp_path: Path) -> None:
    dest = tmp_path / "dst"
    extract(build(entry("./", tarfile.DIRTYPE, mode=0o750, mtime=T0), entry("./f", data=b"1")),
            dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750 and int(dest.stat().st_mtime) == T0
    assert (dest / "f").read_bytes() == b"1"


def test_missing_parents_are_created(tmp_path: Path) -> None:
    extract(build(entry("a/b/c", data=b"z")), tmp_path)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o755
    assert (tmp_path / "a" / "b" / "c").read_bytes() == b"z"


def test_a_repeated_dir_keeps_its_contents_and_takes_new_metadata(tmp_path: Path) -> None:
    extract(build(entry("d", tarfile.DIRTYPE), entry("d/f", data=b"1"),
                  entry("d", tarfile.DIRTYPE, mode=0o700)), tmp_path)
    assert (tmp_path / "d" / "f").read_bytes() == b"1"
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700


@needs_root
def test_oci_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    data = build(
        entry("d", tarfile.DIRTYPE),
        entry("d/.wh.gone", uid=5, gid=6),
        entry("d/kept", data=b"k"),
        entry("o/.wh..wh..opq"),  # before (and without) its dir entry: the dir is made
        entry("o/new", data=b"n"),
        entry(".wh..wh.plnk", tarfile.DIRTYPE),  # aufs metadata: ignored
        entry(".wh..wh.plnk/123.45", data=b"aufs"),
    )
    info = extract(data, tmp_path)
    gone = os.lstat(tmp_path / "d" / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0 and (gone.st_uid, gone.st_gid) == (5, 6)
    assert not (tmp_path / "d" / ".wh.gone").exists()
    assert os.getxattr(tmp_path / "o", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(tmp_path)) == ["d", "o"]
    assert sorted(os.listdir(tmp_path / "o")) == ["new"]
    assert (info.entries, info.whiteouts) == (7, 2)


@needs_root
def test_whiteout_and_entry_of_the_same_name_in_one_layer(tmp_path: Path) -> None:
    data = build(
        entry(".wh.redone"), entry("redone", tarfile.DIRTYPE), entry("redone/f", data=b"1"),
        entry("file", data=b"2"), entry(".wh.file"),  # this layer's file stays
        entry("dir", tarfile.DIRTYPE), entry(".wh.dir"),  # this layer's dir hides the lower one
    )
    extract(data, tmp_path)
    assert os.getxattr(tmp_path / "redone", "trusted.overlay.opaque") == b"y"
    assert (tmp_path / "file").read_bytes() == b"2"
    assert os.getxattr(tmp_path / "dir", "trusted.overlay.opaque") == b"y"


@pytest.mark.parametrize("name", [".wh.x", "d/.wh..wh..opq", ".wh.d/f", "a/.wh..wh.plnk"])
def test_whiteouts_are_errors_in_a_plain_rootfs(tmp_path: Path, name: str) -> None:
    with pytest.raises(FormatError, match=r"\.wh\."):
        extract(build(entry(name)), tmp_path / "dst", whiteouts=False)


@pytest.mark.parametrize("name", [".wh..", "d/.wh...", ".wh.d/f"])
def test_invalid_whiteout_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(FormatError):
        extract(build(entry(name)), tmp_path / "dst")


def test_unsupported_entry_types_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="weird"):
        extract(build(entry("weird", b"V")), tmp_path / "dst")


def mount_overlay(options: str, target: Path) -> None:
    done = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {done.stderr.strip()}")


@contextmanager
def overlay(options: str, target: Path) -> Iterator[Path]:
    target.mkdir()
    mount_overlay(options, target)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@needs_root
@pytest.mark.skipif(shutil.which("mount") is None, reason="needs mount(8)")
def test_real_overlay_upper_to_layer_to_lower(tmp_path: Path) -> None:
    base = tmp_path / "base"
    for name in ["a", "b", "d/x", "d/y", "k/z", "keep/deep/f", "keep/deep/g"]:
        write(base / name, name.encode())
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    opts = f"lowerdir={base},upperdir={upper},workdir={work},redirect_dir=off,index=off"
    with overlay(opts, tmp_path / "merged") as merged:
        (merged / "a").unlink()
        shutil.rmtree(merged / "d")
        write(merged / "d" / "new", b"new")
        write(merged / "c", b"c")
        (merged / "keep" / "deep" / "f").unlink()

    blob = io.BytesIO()
    write_layer(upper, blob, Compression.GZIP)
    with tarfile.open(fileobj=io.BytesIO(blob.getvalue())) as tf:
        names = tf.getnames()
    assert {".wh.a", "d/.wh..wh..opq", "keep/deep/.wh.f"} <= set(names)

    lower = tmp_path / "layer"
    blob.seek(0)
    extract_layer(open_decompressed(blob), lower)
    with overlay(f"lowerdir={lower}:{base}", tmp_path / "view") as view:
        seen = sorted(str(p.relative_to(view)) for p in view.rglob("*"))
        assert seen == ["b", "c", "d", "d/new", "k", "k/z", "keep", "keep/deep", "keep/deep/g"]
        assert (view / "d" / "new").read_bytes() == b"new"
