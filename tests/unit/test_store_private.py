"""The store's dirs are private, its one tree removal goes to any depth, and debris cleaning
never fails a command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from layerbuild.cache.index import CachedStep, CacheIndex
from layerbuild.errors import StoreError
from layerbuild.fsutil import rmtree, temp_name, temp_writer
from layerbuild.image import History
from layerbuild.store import Store, private, staging


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mode", "loose", "tight"), [
    (0o700, False, 0o700), (0o755, True, 0o700), (0o710, True, 0o700), (0o701, True, 0o700),
    (0o500, False, 0o500), (0o2775, True, 0o2700), (stat.S_IFDIR | 0o777, True, 0o700)])
def test_modes_lose_every_bit_for_others(mode: int, loose: bool, tight: int) -> None:
    assert private.is_loose(mode) == loose
    assert private.tightened(mode) == tight


def test_a_new_store_and_the_parents_it_makes_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "a/b/store")
        assert not (store.root / "lock").exists()  # made by the first change, not at open
        with store.staging() as stage:
            assert _mode(stage) == 0o700
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a/b", store.root, store.root / "image",
              store.overlay, store.tmp, store.blobs.parent, store.buildcache):
        assert _mode(d) == 0o700, d


def test_a_loose_store_is_tightened_once_with_one_notice(tmp_path: Path) -> None:
    Store(tmp_path / "store")
    for d in ("", "overlay2", "tmp", "buildcache"):
        os.chmod(tmp_path / "store" / d, 0o755)
    notices: list[str] = []
    store = Store(tmp_path / "store", notice=notices.append)
    assert len(notices) == 1
    assert "its root" in notices[0] and "overlay2" in notices[0] and "tmp" in notices[0]
    assert "blobs" not in notices[0]
    assert all(_mode(d) == 0o700 for d in (store.root, store.overlay, store.tmp))
    Store(tmp_path / "store", notice=notices.append)
    assert len(notices) == 1


def _deep(top: Path, depth: int) -> None:
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(depth):
        os.mkdir("d" * 200, dir_fd=fd)  # long names: the path passes PATH_MAX early
        os.close(os.open(f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        child = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_rmtree_goes_deeper_than_recursion_and_path_max(tmp_path: Path) -> None:
    _deep(tmp_path / "tree", 1500)
    assert sys.getrecursionlimit() < 1500 and os.pathconf(tmp_path, "PC_PATH_MAX") < 1500 * 201
    rmtree(tmp_path / "tree")
    assert os.listdir(tmp_path) == []


def test_rmtree_removes_symlinks_without_following_them(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "link").symlink_to(outside)
    (tree / "dirlink").symlink_to(outside)
    rmtree(tree)
    rmtree(tree)  # gone already: nothing to do
    assert not tree.exists() and (outside / "keep").read_text() == "x"
    (tmp_path / "file").write_text("x")
    rmtree(tmp_path / "file")
    assert sorted(os.listdir(tmp_path)) == ["outside"]


def test_rmtree_removes_read_only_dirs(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "ro" / "inner").mkdir(parents=True)
    (tree / "ro" / "inner" / "file").write_text("x")
    os.chmod(tree / "ro" / "inner", 0o555)
    os.chmod(tree / "ro", 0o000)
    rmtree(tree)
    assert not tree.exists()


def test_debris_cleaning_reports_and_goes_on(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    notices: list[str] = []
    store = Store(tmp_path / "store", notice=notices.append)
    (store.tmp / "1-first").mkdir()
    (store.tmp / "2-second").mkdir()
    real = rmtree

    def failing(path: Path) -> None:
        if path.name == "1-first":
            raise RecursionError("maximum recursion depth exceeded")
        real(path)

    monkeypatch.setattr("layerbuild.store.rmtree", failing)
    (store.overlay / ("f" * 64)).mkdir()
    store.clean_debris()
    assert [p.name for p in store.tmp.iterdir()] == ["1-first"]
    assert list(store.overlay.iterdir()) == []  # the steps after the failure ran
    assert notices == [f"could not clean debris in {store.root} ({store.tmp / '1-first'}): "
                       "maximum recursion depth exceeded"]


def test_a_dead_writers_cache_temp_files_are_debris(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    dead = subprocess.Popen(["true"])
    dead.wait()
    records = store.buildcache / "records"
    records.mkdir()
    ours = [temp_name(store.buildcache / "k.json"), temp_name(records / "r.json")]
    theirs = [store.buildcache / f".k.json.{dead.pid}.1.tmp",
              store.buildcache / f".{'a' * 64}.json.{dead.pid}.140",
              store.buildcache / f".{'b' * 64}.{dead.pid}",
              records / f".r.json.{dead.pid}.7.tmp"]
    for path in [*ours, *theirs]:
        path.write_bytes(b"{")
    (store.buildcache / "k.json").write_text('{"layers": []}')
    store.clean_debris()
    assert [p for p in theirs if p.exists()] == []
    assert all(p.exists() for p in ours)  # a live writer's may be in use
    assert (store.buildcache / "k.json").exists()
    assert temp_writer(f".k.json.{dead.pid}.1.tmp") == dead.pid
    assert temp_writer("k.json") is None and temp_writer(".stat") is None


def test_a_read_only_store_is_not_cleaned_and_refuses_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "store")
    (store.tmp / "1-dead").mkdir()
    monkeypatch.setattr(Store, "writable", lambda self: False)
    store.clean_debris()
    assert (store.tmp / "1-dead").exists()
    real_open = os.open

    def read_only_open(path: object, flags: int, *args: int, **kwargs: object) -> int:
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(staging.os, "open", read_only_open)
    with pytest.raises(StoreError, match=f"^store {store.root} is read-only$"), store.lock():
        pass


def test_the_cache_index_makes_no_dir_until_it_writes(tmp_path: Path) -> None:
    index = CacheIndex(tmp_path / "cache")
    assert index.get("k") is None and index.last_inputs("slot") is None
    assert not (tmp_path / "cache").exists()
    index.put("k", CachedStep(History(created_by="RUN x")))
    assert index.get("k") == CachedStep(History(created_by="RUN x"))
