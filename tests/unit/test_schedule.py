"""Stages at once: dependency order, the first error, and reports shown in stage order."""

from __future__ import annotations

import threading

import pytest

from layerbuild.builder.report import Report
from layerbuild.builder.schedule import run_at_once
from layerbuild.events import (
    CacheMiss,
    Events,
    RecordingEvents,
    StepFinished,
    StepOutput,
    StepStarted,
)


class Lines(Events):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, number: int, total: int, text: str, stage: str = "") -> None:
        self.lines.append(f"[{stage} {number}/{total}] {text}")

    def done(self, seconds: float, cached: bool = False) -> None:
        self.lines.append("CACHED" if cached else "done")

    def output(self, data: bytes) -> None:
        self.lines.append(data.decode())

    def note(self, text: str) -> None:
        self.lines.append(text)


def test_a_stage_starts_after_what_it_needs() -> None:
    started: list[int] = []
    ready = {0: threading.Event(), 1: threading.Event()}

    def build(stage: int) -> None:
        started.append(stage)
        if stage in ready:  # 0 and 1 run at once: each waits for the other to start
            ready[stage].set()
            assert ready[1 - stage].wait(5)

    run_at_once([0, 1, 2], {2: {0, 1}}, build, lambda: None)
    assert sorted(started[:2]) == [0, 1] and started[2] == 2


def test_the_first_error_wins_and_stops_the_rest_once() -> None:
    stops: list[int] = []
    failed = threading.Event()

    def build(stage: int) -> None:
        if stage == 0:
            failed.set()
            raise ValueError("first")
        assert failed.wait(5)
        raise RuntimeError("killed because stopped")

    def stop() -> None:
        stops.append(1)

    with pytest.raises(ValueError, match="first"):
        run_at_once([0, 1, 2], {2: {1}}, build, stop)
    assert stops == [1]


def test_a_stage_after_a_failure_does_not_start() -> None:
    built: list[int] = []

    def build(stage: int) -> None:
        built.append(stage)
        if stage == 0:
            raise OSError("no")

    with pytest.raises(OSError):
        run_at_once([0, 1], {1: {0}}, build, lambda: None)
    assert built == [0]


def test_reports_are_shown_stage_by_stage_and_numbered_per_stage() -> None:
    out = Lines()
    report = Report(out, [0, 1, 2])
    a, b, c = report.channel(0, "a", 2), report.channel(1, "b", 2), report.channel(2, "", 1)
    b.emit(StepStarted(0, 0, "FROM base", 1, is_from=True))  # b runs first, a shown first
    b.emit(StepFinished(0.0, False, "FROM base", 1))
    b.emit(StepStarted(0, 0, "RUN b", 1))
    b.emit(StepOutput(b"from b\n", 1))
    a.emit(StepStarted(0, 0, "FROM base", 0, is_from=True))
    a.emit(StepOutput(b"from a\n", 0))
    b.emit(StepFinished(1.0, False, "RUN b", 1))
    report.finished(1)
    a.emit(StepFinished(0.5, False, "FROM base", 0))
    report.finished(0)
    c.emit(StepStarted(0, 0, "FROM base", 2))
    c.emit(StepFinished(0.0, True, "FROM base", 2))
    report.finished(2)
    assert out.lines == ["[a 1/2] FROM base", "from a\n", "done", "[b 1/2] FROM base",
                         "done", "[b 2/2] RUN b", "from b\n", "done", "[ 1/1] FROM base",
                         "CACHED"]
    assert report.steps == [("FROM base", True, "a", 1, 2), ("FROM base", True, "b", 1, 2),
                            ("RUN b", False, "b", 2, 2), ("FROM base", False, "", 1, 1)]


def test_a_receiver_that_shows_stages_at_once_gets_every_event_as_it_comes() -> None:
    class AtOnce(RecordingEvents):
        concurrent_stages = True

    out = AtOnce()
    report = Report(out, [0, 1])
    a, b = report.channel(0, "a", 3), report.channel(1, "b", 2)
    b.emit(StepStarted(0, 0, "FROM base", 1, is_from=True))
    a.emit(StepStarted(0, 0, "FROM base", 0, is_from=True))
    b.emit(StepOutput(b"b\n", 1))
    report.finished(1)
    assert out.events == [StepStarted(1, 2, "FROM base", 1, True, "b"),
                          StepStarted(1, 3, "FROM base", 0, True, "a"), StepOutput(b"b\n", 1)]
    # Stage by stage all the same in a replay's record.
    assert [step[2] for step in report.steps] == ["a", "b"]


def test_a_stage_total_grows_with_its_onbuild_triggers() -> None:
    out = RecordingEvents()
    report = Report(out, [0])
    stage = report.channel(0, "", 2)
    stage.emit(StepStarted(0, 0, "FROM parent", 0, is_from=True))
    stage.total += 1
    stage.emit(StepStarted(0, 0, "ONBUILD RUN x", 0))
    assert [(e.number, e.total) for e in out.of(StepStarted)] == [(1, 2), (2, 3)]  # type: ignore


def test_typed_events_are_passed_on_numbered() -> None:
    out = RecordingEvents()
    report = Report(out, [0, 1])
    a, b = report.channel(0, "stage-0", 1), report.channel(1, "stage-1", 1)
    b.emit(StepStarted(0, 0, "FROM base", 1, is_from=True))
    b.emit(CacheMiss("FROM base", "new step", 1))
    a.emit(StepStarted(0, 0, "FROM scratch", 0, is_from=True))
    report.finished(0)
    report.finished(1)
    assert out.events == [StepStarted(1, 1, "FROM scratch", 0, True, "stage-0"),
                          StepStarted(1, 1, "FROM base", 1, True, "stage-1"),
                          CacheMiss("FROM base", "new step", 1)]


def test_a_closed_report_shows_nothing_more() -> None:
    out = Lines()
    report = Report(out, [0, 1])
    a, b = report.channel(0, "a", 2), report.channel(1, "b", 2)
    a.emit(StepStarted(0, 0, "RUN a", 0))
    b.emit(StepStarted(0, 0, "RUN b", 1))
    assert report.close() == 0
    a.emit(StepOutput(b"late\n", 0))
    report.finished(0)
    assert out.lines == ["[a 1/2] RUN a"]
