"""A store that is read-only, holds hostile debris or a damaged config still answers; a failed
build changes nothing in it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Run, run_cli
from treeutil import need_root


@pytest.fixture
def read_only(store_root: Path, tmp_path: Path) -> Iterator[Path]:
    """The store seen through a read-only bind mount (which even root cannot write)."""
    need_root()
    view = tmp_path / "ro-view"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(store_root), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_store_can_be_listed(lb: Run, base: str, read_only: Path,
                                         tmp_path: Path) -> None:
    lb("tag", "base", "other:1")
    for args in (["images"], ["inspect", "base"], ["history", "base"],
                 ["save", "base", "-o", str(tmp_path / "base.tar")]):
        proc = run_cli(read_only, *args)
        assert proc.stderr == "", (args, proc.stderr)
    assert "other" in run_cli(read_only, "images").stdout
    assert (tmp_path / "base.tar").stat().st_size > 0
    for args in (["tag", "base", "more:1"], ["rmi", "other:1"], ["prune"]):
        proc = run_cli(read_only, *args, check=False)
        assert proc.returncode == 1, args
        assert proc.stderr == f"layerbuild: error: store {read_only} is read-only\n", args
    assert "other" in lb("images").stdout


def _deep_tree(top: Path, depth: int) -> None:
    """A chain of `depth` dirs under `top`, made through dir fds (the path is too long for
    any one call), with a file at the bottom."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)


def test_a_dead_writers_deep_tree_is_removed_by_the_next_command(lb: Run, base: str,
                                                                 store_root: Path) -> None:
    _deep_tree(store_root / "tmp" / "4242-deadbeef0000", 10_000)
    proc = lb("images")
    assert "base" in proc.stdout and proc.stderr == ""
    assert os.listdir(store_root / "tmp") == []


def test_a_damaged_image_config_is_named_not_fatal(lb: Run, base: str, store_root: Path,
                                                   tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text("FROM base\nLABEL kind=other\n")
    lb("build", "-t", "other", str(ctx))
    imagedb = store_root / "image/overlay2/imagedb/content/sha256"
    damaged = next(p for p in imagedb.iterdir() if b"kind" in p.read_bytes())
    damaged.write_bytes(b"\x00garbage\xff")
    proc = lb("images")
    assert "base" in proc.stdout and "other" not in proc.stdout
    assert f"sha256:{damaged.name}" in proc.stderr and "damaged" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    inspected = lb("inspect", damaged.name, check=False)
    assert inspected.returncode == 1 and inspected.stdout == ""
    assert inspected.stderr.startswith(f"layerbuild: error: image sha256:{damaged.name} ")
    assert len(inspected.stderr.splitlines()) == 1
    damaged.unlink()  # so that the fixture's own checks of what was built pass


def test_a_refused_add_changes_nothing_in_the_store(lb: Run, base: str, store_root: Path,
                                                    tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text("FROM base\nADD missing.txt /x\n")
    before = sorted(p.relative_to(store_root) for p in store_root.rglob("*"))
    proc = lb("build", str(ctx), check=False)
    assert proc.returncode == 1 and "missing.txt" in proc.stderr
    assert sorted(p.relative_to(store_root) for p in store_root.rglob("*")) == before
