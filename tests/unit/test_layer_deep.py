"""Layers deeper than Python's stack and with paths longer than PATH_MAX: export, extract,
listing and removal all work one component at a time."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild import fsutil
from layerbuild.errors import FormatError
from layerbuild.image import MAX_JSON_DEPTH, load_json, parse_json_object
from layerbuild.layer import extract_layer, tree, write_layer
from layerbuild.layer.contents import compare_listings, scan_layer, with_contents

DEPTH = 10_000
LONG = "L" * 250  # 20 of these make a path of over 5,000 characters


def _mkdirs(top: Path, names: list[str]) -> int:
    """Make the chain of dirs fd-relative (no full path ever reaches the kernel); an fd of
    the last one."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        os.mkdir(name, 0o755, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def _write(dir_fd: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    os.write(fd, data)
    os.close(fd)


def _deep_tree(top: Path) -> Path:
    top.mkdir()
    fd = _mkdirs(top, ["d"] * DEPTH)
    _write(fd, "bottom", b"ten thousand down\n")
    os.symlink("bottom", "link", dir_fd=fd)
    os.close(fd)
    fd = _mkdirs(top, [LONG] * 20)
    _write(fd, "far", b"past PATH_MAX\n")
    os.close(fd)
    return top


def _listing(top: Path) -> list[tuple[bytes, int, int, int, bytes]]:
    """Every path below `top` with its mode, size, mtime and content or link target."""
    out = []
    cursor = tree.Cursor.open(top)
    try:
        for e in tree.walk(cursor, tree.scan):
            rel = cursor.rel() + b"/" + e.name if cursor.depth else e.name
            if stat.S_ISREG(e.st.st_mode):
                fd = os.open(e.name, os.O_RDONLY, dir_fd=cursor.fd)
                data = os.read(fd, 1 << 16)
                os.close(fd)
            elif stat.S_ISLNK(e.st.st_mode):
                data = os.readlink(e.name, dir_fd=cursor.fd)
            else:
                data = b""
            out.append((rel, e.st.st_mode, e.st.st_size if data else 0,
                        e.st.st_mtime_ns // 10**9, data))
    finally:
        cursor.close()
    return out


def _remove_below(place: Path) -> None:
    """Remove what a test made (pytest's own cleanup recurses, and fails at this depth)."""
    fd = os.open(place, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(fd):
            if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                fsutil.remove_tree(fd, name)
            else:
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def _cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    _remove_below(tmp_path)


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    place = tmp_path_factory.mktemp("deep")
    yield _deep_tree(place / "layer")
    _remove_below(place)


def test_deep_layer_exports_and_extracts_back_identically(deep: Path, tmp_path: Path) -> None:
    tar = tmp_path / "layer.tar"
    with open(tar, "wb") as out:
        info = write_layer(deep, out)
    dest = tmp_path / "back"
    with open(tar, "rb") as src:
        got = extract_layer(src, dest)
    assert got.entries == DEPTH + 2 + 20 + 1
    assert _listing(dest) == _listing(deep)
    with open(tmp_path / "again.tar", "wb") as out:
        assert write_layer(dest, out).diff_id == info.diff_id
    fd = tree.open_below(os.fsencode(dest), b"/".join([os.fsencode(LONG)] * 20 + [b"far"]),
                         os.O_RDONLY)
    assert os.read(fd, 100) == b"past PATH_MAX\n"
    os.close(fd)


def test_deep_layers_list_and_compare(deep: Path, tmp_path: Path) -> None:
    other = _deep_tree(tmp_path / "other")
    fd = tree.open_below(os.fsencode(other), b"/".join([b"d"] * DEPTH + [b"bottom"]),
                         os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"changed\n")
    os.close(fd)
    a, b = scan_layer(deep), scan_layer(other)
    assert len(a.paths) == DEPTH + 2 + 20 + 1
    left, right = with_contents(a, b)
    changed = dict(compare_listings(left, right))  # mtimes differ: made at other times
    assert "content" in changed["/" + "/".join(["d"] * DEPTH + ["bottom"])]
    assert "content" not in changed["/" + "/".join([LONG] * 20 + ["far"])]


def _tar(*members: tuple[str, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mtime = os.getuid(), os.getgid(), 1_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_one_deep_file_extracts_fast_with_its_parents_made(tmp_path: Path) -> None:
    name = "/".join(["d"] * DEPTH) + "/f"
    started = time.monotonic()
    extract_layer(_tar((name, b"x")), tmp_path / "x", implicit_mtime=12345)
    assert time.monotonic() - started < 30
    cursor = tree.Cursor.open(tmp_path / "x")
    try:
        dirs = [e.st.st_mtime_ns for e in tree.walk(cursor, tree.scan)
                if stat.S_ISDIR(e.st.st_mode)]
    finally:
        cursor.close()
    assert dirs == [12345 * 10**9] * DEPTH


def test_a_later_entry_replaces_a_deep_tree(tmp_path: Path) -> None:
    deep_dir = "/".join(["top"] + ["d"] * DEPTH)
    extract_layer(_tar((deep_dir + "/f", b"x"), ("top", b"now a file")), tmp_path / "x")
    assert (tmp_path / "x" / "top").read_bytes() == b"now a file"
    assert os.listdir(tmp_path / "x") == ["top"]


def test_remove_tree_removes_any_depth(deep: Path, tmp_path: Path) -> None:
    victim = _deep_tree(tmp_path / "victim")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsutil.remove_tree(fd, victim.name)
    finally:
        os.close(fd)
    assert not victim.exists()


def test_json_nested_deeper_than_the_limit_is_a_format_error_naming_the_file() -> None:
    with pytest.raises(FormatError, match=r"manifest\.json: JSON nested more than"):
        load_json(b"[" * 200_000 + b"]" * 200_000, "manifest.json")
    with pytest.raises(FormatError, match=r"index\.json"):
        parse_json_object(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "index.json")


def test_json_depth_counts_only_brackets_outside_strings() -> None:
    text = b'{"s": "' + b"[{" * 5000 + b'\\"]"}'
    assert load_json(text, "config") == {"s": "[{" * 5000 + '"]'}
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert load_json(nested, "config") is not None
    with pytest.raises(FormatError):
        load_json(b"[" + nested + b"]", "config")
