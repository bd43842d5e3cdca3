"""A tree sharing files with an earlier layer exports with their data copied from that layer's
tar (`layer.splice`), to the same bytes as an export that reads every file."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from layerbuild.layer import write_layer
from layerbuild.layer.splice import EarlierTar, tar_key

BIG = 300_000  # larger than the splice's read window and its small-file limit


def _times(root: Path, when: int = 1_600_000_000) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (when, when), follow_symlinks=False)


def _earlier(tmp_path: Path) -> tuple[Path, Path]:
    """An earlier layer dir and its tar."""
    before = tmp_path / "before"
    for i in range(40):
        d = before / f"app/d{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    (before / "app/big.bin").write_bytes(os.urandom(BIG))
    (before / "app/a.txt").write_text("a")  # sorts between app/a/... and app/b
    (before / "app/a").mkdir()
    (before / "app/a/inner").write_text("inner")
    long = before / ("app/" + "x" * 60 + "/" + "y" * 80)  # a PAX path
    long.parent.mkdir(parents=True)
    long.write_text("long")
    os.setxattr(before / "app/d1/f1.txt", "user.note", b"kept")
    (before / "app/link").symlink_to("a.txt")
    _times(before)
    tar = tmp_path / "before.tar"
    with open(tar, "wb") as out:
        write_layer(before, out)
    return before, tar


def _relinked(before: Path, into: Path, changes: bool) -> None:
    """`into`: `before` again, its files hard-linked, with some changes when asked."""
    for dirpath, _dirs, files in os.walk(before):
        rel = Path(dirpath).relative_to(before)
        (into / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            src = Path(dirpath) / name
            if src.is_symlink():
                (into / rel / name).symlink_to(os.readlink(src))
            else:
                os.link(src, into / rel / name)
    if changes:
        (into / "app/d2/f2.txt").unlink()
        (into / "app/d2/f2.txt").write_text("changed\n")  # a new inode, new content
        (into / "app/d3/f3.txt").unlink()  # gone
        (into / "app/new.txt").write_text("new\n")
        (into / "app/d0/extra").mkdir()
        (into / "app/d0/extra/g").write_text("g")
    _times(into, 1_600_000_500)


def _export(tree: Path, **kwargs: object) -> bytes:
    out = io.BytesIO()
    write_layer(tree, out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def _copy(tree: Path, to: Path) -> Path:
    shutil.copytree(tree, to, symlinks=True)
    return to


@pytest.mark.parametrize("changes", [False, True])
def test_spliced_export_is_the_export_of_copies(tmp_path: Path, changes: bool) -> None:
    before, tar = _earlier(tmp_path)
    linked = tmp_path / "linked"
    _relinked(before, linked, changes)
    # Times of shared inodes moved for both trees alike, so the earlier tar's headers of
    # them no longer match: take a fresh earlier tar of `before` as it is now.
    with open(tar, "wb") as out:
        write_layer(before, out)
    plain = _copy(linked, tmp_path / "plain")  # every file its own copy
    expected = _export(plain)
    assert _export(linked, linked_from=before, earlier_tar=tar) == expected
    assert _export(linked, linked_from=before) == expected


def test_the_shared_files_data_comes_from_the_earlier_tar(tmp_path: Path) -> None:
    before, tar = _earlier(tmp_path)
    linked = tmp_path / "linked"
    _relinked(before, linked, changes=False)
    with open(tar, "wb") as out:
        write_layer(before, out)
    data = tar.read_bytes()
    at = data.index(b"file 5\n" * 6)
    marked = data[:at] + b"FILE 5\n" + data[at + 7:]
    tar.write_bytes(marked)
    spliced = _export(linked, linked_from=before, earlier_tar=tar)
    assert b"FILE 5\n" in spliced  # read from the tar, not from the file
    assert len(spliced) == len(_export(linked, linked_from=before))


def test_a_tar_that_is_not_as_written_is_not_spliced_from(tmp_path: Path) -> None:
    before, tar = _earlier(tmp_path)
    linked = tmp_path / "linked"
    _relinked(before, linked, changes=True)
    expected = _export(linked, linked_from=before)
    for garbage in (b"", b"\xff" * 4096, os.urandom(10_000), tar.read_bytes()[:1500]):
        tar.write_bytes(garbage)
        assert _export(linked, linked_from=before, earlier_tar=tar) == expected


def test_tar_keys_follow_the_exports_order() -> None:
    names = [b"app/", b"app/.wh..wh..opq", b"app/.wh.gone", b"app/a/", b"app/a/inner",
             b"app/a.txt", b"app/b", b"b"]
    assert sorted(names, key=tar_key) == names


def test_find_passes_over_entries_and_stops_at_later_ones(tmp_path: Path) -> None:
    before, tar = _earlier(tmp_path)
    earlier = EarlierTar(tar)
    try:
        assert earlier.find(b"app/a.txt", b"not the header" * 40, 1) is None
        assert earlier.usable
        # Asked for a name the tar does not hold, it stops before the next one...
        assert earlier.find(b"app/b", bytes(512), 0) is None
        # ...which can still be found.
        data = tar.read_bytes()
        start = data.index(b"app/big.bin")
        header = data[start : start + 512]
        at = earlier.find(b"app/big.bin", header, BIG)
        assert at == start + 512
        assert os.pread(earlier.fd, 16, at) == (before / "app/big.bin").read_bytes()[:16]
    finally:
        earlier.close()
