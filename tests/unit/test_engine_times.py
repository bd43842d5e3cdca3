"""Created times and COPY --link rebases, through the fake sandbox (no root)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from enginetools import Bench, new_bench
from fakesandbox import writes

from layerbuild.events import Relinked, StepFinished
from layerbuild.image import Image, rfc3339, timestamp


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return new_bench(tmp_path)


def created(image: Image | None) -> list[str | None]:
    """The created time of each step after the base's."""
    assert image is not None
    return [h.created for h in image.config.history[1:]]


def test_a_copy_is_as_new_as_the_step_before_or_its_newest_file(bench: Bench) -> None:
    bench.write("old.txt", "old", mtime=500)  # older than the base (1000)
    bench.write("new.txt", "new", mtime=5000)
    image = bench.build("FROM base\nCOPY old.txt /old\nCOPY new.txt /new\nENV A=1\n")
    assert created(image) == [rfc3339(1000), rfc3339(5000), rfc3339(5000)]
    assert image is not None and image.config.created == rfc3339(5000)


def test_a_run_takes_the_clock(bench: Bench) -> None:
    bench.sandbox.scripts["make"] = writes({"/out": "x"})
    before = time.time()
    image = bench.build("FROM base\nRUN make\n")
    [when] = created(image)
    assert when is not None
    at = timestamp(when)
    assert at is not None and before - 1 <= at <= time.time() + 1


def test_with_source_date_epoch_every_step_takes_the_epoch(bench: Bench) -> None:
    bench.write("new.txt", "new", mtime=5000)
    bench.sandbox.scripts["make"] = writes({"/out": "x"})
    image = bench.build("FROM base\nCOPY new.txt /new\nRUN make\nENV A=1\n",
                        source_date_epoch=7)
    assert created(image) == [rfc3339(7)] * 3
    assert image is not None and image.config.created == rfc3339(7)


def test_a_fully_cached_build_keeps_its_image_id_and_times(bench: Bench) -> None:
    bench.sandbox.scripts["make"] = writes({"/out": "x"})
    first = bench.build("FROM base\nRUN make\n")
    time.sleep(1.1)
    second = bench.build("FROM base\nRUN make\n")
    assert first is not None and second is not None and first.id == second.id


LINKED = "FROM base\nCOPY --link f.txt /f.txt\n"


def test_copy_link_after_a_base_change_is_rebased_not_rerun(bench: Bench) -> None:
    bench.write("f.txt", "linked")
    first = bench.build(LINKED)
    assert first is not None and bench.of(Relinked) == []
    new_base = bench.base({"etc/os-release": "ID=other\n"}, epoch=2000)
    second = bench.build(LINKED)
    assert second is not None and second.id != first.id
    assert bench.sandbox.calls_of("copy_into") == []
    assert [(e.step, e.cached) for e in bench.of(StepFinished)] == [  # type: ignore[attr-defined]
        ("FROM base", False), ("COPY --link f.txt /f.txt", True)]
    [relinked] = bench.of(Relinked)
    assert relinked.step == "COPY --link f.txt /f.txt"  # type: ignore[attr-defined]
    assert second.config.diff_ids == (*new_base.config.diff_ids, first.config.diff_ids[-1])
    assert bench.store.layer(relinked.chain_id) is not None  # type: ignore[attr-defined]
    assert bench.read(second, "/f.txt") == "linked"
    assert bench.read(second, "/etc/os-release") == "ID=other\n"


def test_copy_link_on_a_base_it_was_stored_on_is_not_relinked(bench: Bench) -> None:
    bench.write("f.txt", "linked")
    bench.build(LINKED)
    bench.build(LINKED)
    assert bench.of(Relinked) == []
