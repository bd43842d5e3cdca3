"""A COPY whose last build differs in a few context files only is offered that build's layer
(the real copy links the unchanged files from it); anything else is copied afresh."""

from __future__ import annotations

from pathlib import Path

import pytest
from enginetools import Bench, new_bench

from layerbuild.digest import chain_ids
from layerbuild.image import Image
from layerbuild.sandbox.entries import entry_paths
from layerbuild.sandbox.spec import PreviousLayer

COPY_DIR = "FROM base\nCOPY src /app/\n"


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    bench = new_bench(tmp_path)
    for i in range(6):
        bench.write(f"src/f{i}.txt", f"file {i}")
    return bench


def top_dir(bench: Bench, image: Image | None) -> Path:
    assert image is not None
    layer = bench.store.layer(chain_ids(image.config.diff_ids)[-1])
    assert layer is not None
    return layer.diff_dir


def offered(bench: Bench) -> list[PreviousLayer]:
    return [p for p in bench.sandbox.previous if p is not None]


def test_a_changed_and_a_new_file_are_named_and_the_last_layer_is_offered(bench: Bench) -> None:
    first = bench.build(COPY_DIR)
    assert offered(bench) == []  # not built before
    bench.write("src/f2.txt", "changed")
    bench.write("src/new.txt", "new")
    second = bench.build(COPY_DIR)
    [previous] = offered(bench)
    assert previous.layer == top_dir(bench, first)
    assert list(entry_paths(previous.changed)) == ["src/f2.txt", "src/new.txt"]
    assert previous.epoch is None
    assert bench.read(second, "/app/f2.txt") == "changed"  # type: ignore[arg-type]


def test_the_offer_carries_the_builds_source_date_epoch(bench: Bench) -> None:
    bench.build(COPY_DIR, source_date_epoch=1234)
    bench.write("src/f0.txt", "changed")
    bench.build(COPY_DIR, source_date_epoch=1234)
    assert [p.epoch for p in offered(bench)] == [1234]


def test_no_offer_when_most_files_changed(bench: Bench) -> None:
    bench.build(COPY_DIR)
    for i in range(4):
        bench.write(f"src/f{i}.txt", "changed")
    bench.build(COPY_DIR)
    assert offered(bench) == []


def test_no_offer_when_the_step_differs_in_more_than_files(bench: Bench) -> None:
    bench.build(COPY_DIR)
    bench.write("src/f0.txt", "changed")
    bench.build("FROM base\nCOPY --chmod=600 src /app/\n")  # another instruction, same slot
    assert offered(bench) == []
    bench.base({"etc/os-release": "ID=other\n"})  # another base: another parent
    bench.write("src/f1.txt", "changed")
    bench.build("FROM base\nCOPY --chmod=600 src /app/\n")
    assert offered(bench) == []


def test_no_offer_without_the_cache_or_once_the_result_is_gone(bench: Bench) -> None:
    bench.build(COPY_DIR)
    bench.write("src/f0.txt", "changed")
    bench.build(COPY_DIR, no_cache=True)
    assert offered(bench) == []
    entries = list((bench.store.root / "buildcache").glob("*.json"))
    assert entries
    for entry in entries:  # the slots stay: they name a result that is not there
        entry.unlink()
    bench.write("src/f0.txt", "changed again")
    bench.build(COPY_DIR)
    assert offered(bench) == []


def test_a_copy_of_one_file_or_from_a_stage_gets_no_offer(bench: Bench) -> None:
    text = "FROM base AS a\nCOPY src /a/\nFROM base\nCOPY src/f0.txt /app/\nCOPY --from=a /a /b\n"
    bench.build(text)
    bench.write("src/f0.txt", "changed")
    bench.build(text)
    # Only the stage's directory copy is offered its layer.
    assert [list(entry_paths(p.changed)) for p in offered(bench)] == [["src/f0.txt"]]
