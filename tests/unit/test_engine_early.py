"""A COPY after a cache miss starts before its key is known (`builder.early`), and the engine
asks the sandbox for the processes of the steps likely to run next (`Sandbox.prepare`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from enginetools import Bench, new_bench
from fakesandbox import FakeSandbox

from layerbuild.builder import engine
from layerbuild.builder.plan import may_start_early
from layerbuild.buildfile import parse_buildfile
from layerbuild.errors import LayerbuildError
from layerbuild.events import StepFinished
from layerbuild.image import Image
from layerbuild.sandbox.spec import CopyItem, PreviousLayer, StepRoot

BUILDFILE = "FROM base\nWORKDIR /app\nCOPY src /app/\nRUN make\n"


class ThreadedSandbox(FakeSandbox):
    """The fake sandbox, noting which thread each copy ran on."""

    def __init__(self) -> None:
        super().__init__(scripts={"make": lambda upper, _spec: 0})
        self.threads: list[str] = []

    def copy_into(self, root: StepRoot, source: Path | Sequence[Path],
                  items: Sequence[CopyItem], follow_source_symlinks: bool = False,
                  as_user: str | None = None, previous: PreviousLayer | None = None) -> None:
        self.threads.append(threading.current_thread().name)
        super().copy_into(root, source, items, follow_source_symlinks, as_user, previous)


def bench_at(path: Path) -> Bench:
    path.mkdir()
    bench = new_bench(path)
    bench.sandbox = ThreadedSandbox()
    for i in range(5):
        bench.write(f"src/f{i}.txt", f"file {i}", mtime=2000 + i)
    return bench


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return bench_at(tmp_path / "a")


def threads(bench: Bench) -> list[str]:
    assert isinstance(bench.sandbox, ThreadedSandbox)
    return bench.sandbox.threads


def staging_left(bench: Bench) -> list[str]:
    return sorted(p.name for p in bench.store.tmp.iterdir())


def test_a_copy_after_a_miss_starts_early_and_makes_the_same_image(
        bench: Bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    early = bench.build(BUILDFILE, source_date_epoch=7)
    # WORKDIR misses first (on the stage's thread), so the COPY starts at once on its own.
    assert threads(bench) == ["MainThread", "early-copy"]
    assert staging_left(bench) == []

    monkeypatch.setattr(engine, "may_start_early", lambda _instr: False)
    other = bench_at(tmp_path / "b")
    late = other.build(BUILDFILE, source_date_epoch=7)
    assert threads(other) == ["MainThread", "MainThread"]
    assert isinstance(early, Image) and isinstance(late, Image)
    assert early.config.diff_ids == late.config.diff_ids
    assert early.id == late.id


def test_the_first_miss_is_not_started_early(bench: Bench) -> None:
    bench.build(BUILDFILE)
    threads(bench).clear()
    bench.write("src/f1.txt", "changed")
    bench.build(BUILDFILE)  # WORKDIR hits: the COPY is the stage's first miss
    assert threads(bench) == ["MainThread"]


def test_without_the_cache_the_first_copy_starts_early(bench: Bench) -> None:
    bench.build("FROM base\nCOPY src /app/\n", no_cache=True)
    assert threads(bench) == ["early-copy"]


def test_an_early_copy_whose_key_hits_is_thrown_away(bench: Bench) -> None:
    first = bench.build(BUILDFILE, source_date_epoch=7)
    # The WORKDIR's entry gone: it misses and runs again, and the COPY after it (the same
    # key: keys are made of inputs) is found in the cache after it was started early.
    cache = bench.store.buildcache
    entries = [p for p in cache.glob("*.json")
               if "WORKDIR" in json.loads(p.read_text())["history"].get("created_by", "")]
    assert len(entries) == 1
    entries[0].unlink()
    threads(bench).clear()
    again = bench.build(BUILDFILE, source_date_epoch=7)
    assert threads(bench) == ["MainThread", "early-copy"]
    cached = {e.step: e.cached for e in bench.of(StepFinished)}  # type: ignore[attr-defined]
    assert cached["COPY src /app/"] is True and cached["RUN make"] is True
    assert cached["WORKDIR /app"] is False
    assert isinstance(first, Image) and isinstance(again, Image)
    assert again.id == first.id
    assert staging_left(bench) == []


def test_a_failing_early_copy_fails_as_a_late_one(
        bench: Bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "FROM base\nWORKDIR /app\nCOPY missing /app/\n"
    with pytest.raises(LayerbuildError) as early:
        bench.build(text)
    assert staging_left(bench) == []
    monkeypatch.setattr(engine, "may_start_early", lambda _instr: False)
    other = bench_at(tmp_path / "b")
    with pytest.raises(LayerbuildError) as late:
        other.build(text)
    assert str(early.value).replace(str(bench.root), "") \
        == str(late.value).replace(str(other.root), "")
    assert "Buildfile:3" in str(early.value)


@pytest.mark.parametrize(("line", "early"), [
    ("COPY src /app/", True),
    ("COPY --chown=app src /app/", True),
    ("ADD src /app/", True),
    ("COPY --from=other /x /app/", False),
    ("COPY --link src /app/", False),
    ("ADD https://example.com/f /app/", False),
    ("ADD $SRC /app/", False),
    ("RUN make", False),
    ("WORKDIR /app", False),
])
def test_which_steps_may_start_early(line: str, early: bool) -> None:
    [stage] = parse_buildfile(f"FROM base\n{line}\n", Path("Buildfile")).stages
    assert may_start_early(stage.instructions[0]) is early


def test_the_processes_of_likely_steps_are_asked_for_ahead(bench: Bench) -> None:
    bench.build(BUILDFILE)
    assert bench.sandbox.prepared == [
        ("copy", "none", 1),  # the stage's first filesystem step, as the stage starts
        # WORKDIR missed: the next two steps' (the COPY's, besides the WORKDIR's own; the
        # RUN's)...
        ("copy", "none", 2), ("run", "default", 1),
        ("run", "default", 1),  # ...and as the COPY runs, the RUN's still
    ]
    bench.sandbox.prepared.clear()
    bench.write("src/f1.txt", "changed")
    bench.build(BUILDFILE, network="none")
    # The WORKDIR hits, so only the stage's start and the COPY's miss ask (the COPY, being
    # the first miss, only once its key is known).
    assert bench.sandbox.prepared == [("copy", "none", 1), ("run", "none", 1)]


def test_two_steps_ahead_are_asked_for(bench: Bench) -> None:
    for name in "abc":
        bench.sandbox.scripts[name] = lambda upper, _spec: 0
    bench.build("FROM base\nRUN a\nENV X=1\nRUN b\nRUN c\n", network="none")
    assert bench.sandbox.prepared == [
        ("run", "none", 1),  # RUN a, as the stage starts
        ("run", "none", 3),  # RUN a runs: its own, and those of b and c
        ("run", "none", 2),  # the ENV (no process of its own) is applied: b's and c's
        ("run", "none", 2),  # RUN b runs: its own, and c's
    ]


def test_nothing_is_asked_for_in_a_dry_run(bench: Bench) -> None:
    bench.build(BUILDFILE, dry_run=True)
    assert bench.sandbox.prepared == []
