"""What stages report while they build at once, passed on in stage order.

Stages that do not depend on each other build at the same time, but their steps are shown as
a one-at-a-time build shows them: the first unfinished stage (in Buildfile order) reports live,
the others are held back and passed on, numbered in that order, when their turn comes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from layerbuild.builder.request import Events

HELD_OUTPUT = 8 << 20
"""Bytes of RUN output held per waiting stage; beyond it, the oldest is dropped."""


class Report:
    """Events from the stages of one build, passed on to `events` in stage order."""

    def __init__(self, events: Events, order: list[int], total: Callable[[], int]) -> None:
        self.events = events
        self.total = total
        self.steps: list[tuple[str, bool]] = []
        """Every step passed on so far: (text, is a FROM)."""
        self._order = order
        self._front = 0
        self._held: dict[int, list[tuple[str, tuple[object, ...]]]] = {i: [] for i in order}
        self._held_bytes = dict.fromkeys(order, 0)
        self._finished: set[int] = set()
        self._number = 0
        self._lock = threading.Lock()

    def close(self) -> int | None:
        """Pass nothing more on (the build is stopping); returns the stage being shown."""
        with self._lock:
            shown = self._order[self._front] if self._front < len(self._order) else None
            self._front = len(self._order)
            self._order = []
            return shown

    def channel(self, stage: int) -> StageEvents:
        """The events one stage reports through."""
        return StageEvents(self, stage)

    def emit(self, stage: int, kind: str, *args: object) -> None:
        """Pass an event on now if its stage is the one shown, else hold it."""
        with self._lock:
            if self._front < len(self._order) and stage == self._order[self._front]:
                self._send(kind, args)
                return
            if not self._order:
                return  # closed
            held = self._held[stage]
            if kind == "output":
                self._held_bytes[stage] += len(args[0])  # type: ignore[arg-type]
                while self._held_bytes[stage] > HELD_OUTPUT:
                    dropped = next(i for i, e in enumerate(held) if e[0] == "output")
                    self._held_bytes[stage] -= len(held.pop(dropped)[1][0])  # type: ignore
            held.append((kind, args))

    def finished(self, stage: int) -> None:
        """A stage ended: show the next ones, with what they held."""
        with self._lock:
            self._finished.add(stage)
            while self._front < len(self._order) and self._order[self._front] in self._finished:
                self._front += 1
                if self._front < len(self._order):
                    following = self._order[self._front]
                    for kind, args in self._held[following]:
                        self._send(kind, args)
                    self._held[following] = []

    def _send(self, kind: str, args: tuple[object, ...]) -> None:
        if kind == "step":
            text, is_from = args
            self._number += 1
            self.steps.append((str(text), bool(is_from)))
            self.events.step(self._number, self.total(), str(text))
        elif kind == "done":
            self.events.done(float(args[0]), cached=bool(args[1]))  # type: ignore[arg-type]
        elif kind == "output":
            self.events.output(args[0])  # type: ignore[arg-type]
        else:
            self.events.note(str(args[0]))


class StageEvents(Events):
    """One stage's side of a `Report`; `where` says which step it is at (for Ctrl-C)."""

    def __init__(self, report: Report, stage: int) -> None:
        self.report = report
        self.stage = stage
        self.where = ""

    def begin(self, text: str, is_from: bool = False) -> None:
        """A step starts (numbered when it is shown)."""
        self.report.emit(self.stage, "step", text, is_from)

    def step(self, number: int, total: int, text: str) -> None:
        self.begin(text)

    def done(self, seconds: float, cached: bool = False) -> None:
        self.report.emit(self.stage, "done", seconds, cached)

    def output(self, data: bytes) -> None:
        self.report.emit(self.stage, "output", data)

    def note(self, text: str) -> None:
        self.report.emit(self.stage, "note", text)
