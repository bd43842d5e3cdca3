"""The stat cache's SQLite file: what it keeps, the JSON file of older versions, two builds at
once, and a file that cannot be used."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import layerbuild.cache.stat as stat_module
from layerbuild.cache.index import CacheIndex
from layerbuild.cache.stat import StatCache, header_digest


@pytest.fixture(autouse=True)
def _settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry old enough to be kept (files made by a test are just made)."""
    monkeypatch.setattr(stat_module, "settled", lambda sig, read_ns=None: True)


def _files(directory: Path, count: int, prefix: str = "f") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{prefix}{i}" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_text(f"{prefix} {i}\n")
    return paths


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = stat_module.header_digest

    def counting(full: str, st: os.stat_result) -> str:
        reads.append(full)
        return real(full, st)

    monkeypatch.setattr(stat_module, "header_digest", counting)
    return reads


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count: int = conn.execute("SELECT count(*) FROM files").fetchone()[0]
    return count


def test_saved_entries_answer_the_next_build(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(tmp_path / "ctx", 5)
    first = StatCache(tmp_path / "stat.db")
    digests = [first.entry_digest(str(f), os.stat(f)) for f in files]
    assert digests == [header_digest(str(f), os.stat(f)) for f in files]
    first.save()
    assert _rows(tmp_path / "stat.db") == 5
    reads = _counting(monkeypatch)
    again = StatCache(tmp_path / "stat.db")
    assert [again.entry_digest(str(f), os.stat(f)) for f in files] == digests
    assert reads == []
    assert dict(again.seen_signatures()) == {str(f): stat_module.signature(os.stat(f))
                                             for f in files}
    files[0].write_text("changed")
    assert again.entry_digest(str(files[0]), os.stat(files[0])) != digests[0]
    assert reads == [str(files[0])]


def test_entries_are_written_in_batches_and_answer_before_they_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stat_module, "_FLUSH_AT", 3)
    files = _files(tmp_path / "ctx", 7)
    cache = StatCache(tmp_path / "stat.db")
    for f in files:
        cache.entry_digest(str(f), os.stat(f))
    assert _rows(tmp_path / "stat.db") == 6  # two batches of three; the seventh waits
    assert len(cache._pending) == 1
    reads = _counting(monkeypatch)
    cache.entry_digest(str(files[6]), os.stat(files[6]))  # known, though not written yet
    assert reads == []
    cache.save()
    assert _rows(tmp_path / "stat.db") == 7


def test_an_unsettled_entry_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stat_module, "settled", lambda sig, read_ns=None: False)
    (f,) = _files(tmp_path / "ctx", 1)
    cache = StatCache(tmp_path / "stat.db")
    cache.entry_digest(str(f), os.stat(f))
    cache.save()
    assert not cache.settled
    assert _rows(tmp_path / "stat.db") == 0


def test_inode_numbers_of_all_64_bits_are_kept(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (f,) = _files(tmp_path / "ctx", 1)
    real = os.stat(f)
    st = SimpleNamespace(st_size=real.st_size, st_mtime_ns=real.st_mtime_ns,
                         st_ctime_ns=real.st_ctime_ns, st_ino=(1 << 64) - 5,
                         st_mode=real.st_mode)
    cache = StatCache(tmp_path / "stat.db")
    value = cache.entry_digest(str(f), st)  # type: ignore[arg-type]
    cache.save()
    reads = _counting(monkeypatch)
    assert StatCache(tmp_path / "stat.db").entry_digest(str(f), st) == value  # type: ignore[arg-type]
    assert reads == []


def test_the_json_file_of_older_versions_is_not_believed(tmp_path: Path) -> None:
    """An older layerbuild kept the cache as JSON beside; its entries are read again (once),
    never taken, and the file goes."""
    index = CacheIndex(tmp_path / "buildcache")
    ctx = tmp_path / "ctx"
    (f,) = _files(ctx, 1)
    cache = index.stat_cache(ctx)
    legacy = cache.path.with_suffix(".json")
    legacy.parent.mkdir(parents=True)
    sig = stat_module.signature(os.stat(f))
    legacy.write_text(json.dumps({str(f): [*sig, "0" * 64]}))  # the right stat, a wrong digest
    assert cache.path.suffix == ".db"
    assert cache.entry_digest(str(f), os.stat(f)) == header_digest(str(f), os.stat(f))
    cache.save()
    assert not legacy.exists()
    assert _rows(cache.path) == 1


def test_a_file_that_is_not_a_database_is_made_anew(tmp_path: Path) -> None:
    (f,) = _files(tmp_path / "ctx", 1)
    db = tmp_path / "stat.db"
    db.write_text('{"/some/path": [1, 2, 3, 4, 5, "ab"]}')  # say, an old JSON cache
    cache = StatCache(db)
    assert cache.entry_digest(str(f), os.stat(f)) == header_digest(str(f), os.stat(f))
    cache.save()
    assert _rows(db) == 1


def test_a_cache_that_cannot_be_made_only_costs_reads(tmp_path: Path) -> None:
    (f,) = _files(tmp_path / "ctx", 1)
    (tmp_path / "file").write_text("")
    cache = StatCache(tmp_path / "file" / "stat.db")  # its directory is a file
    assert cache.entry_digest(str(f), os.stat(f)) == header_digest(str(f), os.stat(f))
    assert cache.entry_digest(str(f), os.stat(f)) == header_digest(str(f), os.stat(f))
    cache.save()


def test_two_builds_at_once_share_the_cache(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two caches on one file (two builds of one context), each from threads of its own and
    writing in batches, while a third connection holds a write for a moment: every entry of
    both is kept, right, and the file is whole."""
    monkeypatch.setattr(stat_module, "_FLUSH_AT", 50)
    shared = _files(tmp_path / "ctx", 300, "s")
    own = [_files(tmp_path / "ctx", 300, p) for p in ("a", "b")]
    db = tmp_path / "stat.db"
    caches = [StatCache(db), StatCache(db)]
    caches[0].entry_digest(str(shared[0]), os.stat(shared[0]))
    caches[0].save()  # the file exists: the blocker below can hold it
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    failures: list[BaseException] = []

    def build(cache: StatCache, files: list[Path]) -> None:
        try:
            for f in files:
                assert cache.entry_digest(str(f), os.stat(f)) == header_digest(str(f),
                                                                               os.stat(f))
            cache.save()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=build, args=(cache, files))
               for cache, mine in zip(caches, own, strict=True)
               for files in (shared + mine, list(reversed(mine)))]
    for t in threads:
        t.start()
    threading.Event().wait(0.3)
    blocker.execute("COMMIT")
    blocker.close()
    for t in threads:
        t.join()
    assert failures == []
    assert _rows(db) == 900
    reads = _counting(monkeypatch)
    later = StatCache(db)
    for f in shared + own[0] + own[1]:
        assert later.entry_digest(str(f), os.stat(f)) == header_digest(str(f), os.stat(f))
    assert reads == []  # every answer came from the file


def test_a_directory_is_read_in_one_query_and_a_big_one_row_by_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = _files(tmp_path / "ctx/small", 5)
    big = _files(tmp_path / "ctx/big", 7)
    first = StatCache(tmp_path / "stat.db")
    digests = {f: first.entry_digest(str(f), os.stat(f)) for f in small + big}
    first.save()
    monkeypatch.setattr(stat_module, "_DIR_ROWS", 6)
    queries: list[str] = []
    again = StatCache(tmp_path / "stat.db")
    reads = _counting(monkeypatch)
    again._connect().set_trace_callback(queries.append)
    assert {f: again.entry_digest(str(f), os.stat(f)) for f in small + big} == digests
    assert reads == []
    by_name = [q for q in queries if "AND name" in q]
    by_dir = [q for q in queries if "WHERE dir" in q and q not in by_name]
    assert len(by_dir) == 2  # one for each directory
    assert len(by_name) == len(big)  # and big's (over the limit) entry by entry


def test_the_table_of_older_versions_is_dropped(tmp_path: Path) -> None:
    db = tmp_path / "stat.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE entries (path BLOB PRIMARY KEY, digest BLOB)")
    files = _files(tmp_path / "ctx", 2)
    cache = StatCache(db)
    cache.entry_digest(str(files[0]), os.stat(files[0]))
    cache.save()
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "entries" not in tables and "files" in tables


def test_entry_digests_are_pinned(tmp_path: Path) -> None:
    """The digest of an entry is part of every cache key: these values never change unless
    the key version does."""
    (tmp_path / "f").write_text("content\n" * 1000)
    os.chmod(tmp_path / "f", 0o640)
    os.setxattr(tmp_path / "f", "user.b", b"\x00\xff")
    os.setxattr(tmp_path / "f", "user.a", b"1")
    os.symlink("f", tmp_path / "l")
    (tmp_path / "dd").mkdir()
    os.chmod(tmp_path / "dd", 0o755)
    digests = {n: header_digest(str(tmp_path / n), os.lstat(tmp_path / n))
               for n in ("f", "l", "dd")}
    assert digests == {
        "f": "124e5a091f727f2e08fd72b46b94ac2b17227c9b0e8330869be5a809a7e10d4a",
        "l": "ebbefd00e3eb2e83353cceaf4673c9f293ce92d04d77b79f2b54f84f9ecb7c8f",
        "dd": "2ed4bce09ac8afe70dafd734922ed51e588422749e1dd2342562a5337c2a936d",
    }
