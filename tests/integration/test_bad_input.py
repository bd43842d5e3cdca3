"""Bad archives, hostile tars and bad names get one clear line and leave the store as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import run_cli
from tartools import build, entry, unpack_plain
from treeutil import need_root


def _store_state(root: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if rel != "lock":
                out.append(rel)
    return sorted(out)


def _fails(root: Path, *args: str, expect: str) -> str:
    before = _store_state(root)
    proc = run_cli(root, *args, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert _store_state(root) == before
    return lines[0]


@pytest.fixture
def layout(lb, busybox_tar: Path, tmp_path: Path, store_root: Path) -> Path:
    """An archive of a two-layer image, unpacked into a directory to be damaged."""
    need_root()
    lb("import", str(busybox_tar), "bb:1")
    archive = tmp_path / "bb.tar"
    lb("save", "bb:1", "-o", str(archive))
    out = tmp_path / "layout"
    unpack_plain(archive, out)
    return out


def _manifest(layout: Path) -> dict:
    return json.loads((layout / "manifest.json").read_text())[0]


def test_truncated_archive(layout: Path, tmp_path: Path) -> None:
    target = tmp_path / "t"
    run_cli(target, "images")
    archive = tmp_path / "bb.tar"
    data = archive.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, 700):
        bad = tmp_path / f"cut{cut}.tar"
        bad.write_bytes(data[:cut])
        _fails(target, "load", "-i", str(bad), expect="")


def test_blob_not_matching_its_digest(layout: Path, tmp_path: Path) -> None:
    target = tmp_path / "t"
    run_cli(target, "images")
    layer = layout / _manifest(layout)["Layers"][0]
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    _fails(target, "load", "-i", str(layout), expect="expected sha256:")


def test_manifest_naming_a_missing_blob(layout: Path, tmp_path: Path) -> None:
    target = tmp_path / "t"
    run_cli(target, "images")
    (layout / _manifest(layout)["Layers"][0]).unlink()
    _fails(target, "load", "-i", str(layout), expect="missing")
    (layout / "manifest.json").unlink()
    _fails(target, "load", "-i", str(layout), expect="missing")


def test_diff_ids_not_matching_the_layers(layout: Path, tmp_path: Path) -> None:
    target = tmp_path / "t"
    run_cli(target, "images")
    listed = _manifest(layout)
    config = json.loads((layout / listed["Config"]).read_text())
    config["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    data = json.dumps(config).encode()
    name = f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"
    (layout / name).write_bytes(data)
    listed["Config"] = name
    (layout / "manifest.json").write_text(json.dumps([listed]))
    _fails(target, "load", "-i", str(layout), expect="diff_id")
    config["rootfs"]["diff_ids"].append("sha256:" + "1" * 64)
    data = json.dumps(config).encode()
    name = f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"
    (layout / name).write_bytes(data)
    listed["Config"] = name
    (layout / "manifest.json").write_text(json.dumps([listed]))
    _fails(target, "load", "-i", str(layout), expect="diff_ids")


# (name, type, link target, content); {outside} and {outside_rel} are filled in per test.
HOSTILE = {
    "dotdot": [("../escaped", tarfile.REGTYPE, "", b"x")],
    "deep-dotdot": [("a/../../escaped", tarfile.REGTYPE, "", b"x")],
    "symlink-then-write": [("link", tarfile.SYMTYPE, "{outside}", b""),
                           ("link/escaped", tarfile.REGTYPE, "", b"x")],
    "symlink-chain": [("x", tarfile.SYMTYPE, ".", b""),
                      ("esc", tarfile.SYMTYPE, "x/..", b""),
                      ("esc/escaped", tarfile.REGTYPE, "", b"x")],
    "hardlink-out": [("l", tarfile.LNKTYPE, "../../../{outside_rel}/victim", b"")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_rootfs_tar_is_refused(case: str, tmp_path: Path) -> None:
    need_root()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    target = tmp_path / "t"
    run_cli(target, "images")
    bad = tmp_path / f"{case}.tar"
    bad.write_bytes(build(*(entry(name, kind, data, linkname=link.format(
        outside=outside, outside_rel=str(outside).lstrip("/")))
        for name, kind, link, data in HOSTILE[case])))
    _fails(target, "import", str(bad), "hostile:1", expect="")
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "untouched"
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "t" / "escaped").exists()


def test_unknown_image(tmp_path: Path) -> None:
    target = tmp_path / "t"
    run_cli(target, "images")
    for args in (("inspect", "nope:1"), ("save", "nope", "-o", str(tmp_path / "x.tar")),
                 ("rmi", "nope"), ("history", "nope"), ("tag", "nope", "other:1")):
        _fails(target, *args, expect="no such image")
    assert not (tmp_path / "x.tar").exists()


def test_store_that_is_not_writable(tmp_path: Path) -> None:
    need_root()
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_cli(blocker / "store", "images", check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "not usable" in proc.stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        proc = run_cli(ro / "store", "images", check=False)
        assert proc.returncode == 1 and "Read-only file system" in proc.stderr, proc.stderr
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    shutil.rmtree(ro)
