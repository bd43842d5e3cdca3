"""What stages report while they build at once, passed on in stage order.

Stages that do not depend on each other build at the same time, but their steps are shown as
a one-at-a-time build shows them: the first unfinished stage (in Buildfile order) reports live,
the others are held back and passed on, numbered in that order, when their turn comes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from layerbuild.events import Event, Events, StepOutput, StepStarted

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
        self._held: dict[int, list[Event]] = {i: [] for i in order}
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

    def emit(self, stage: int, event: Event) -> None:
        """Pass an event on now if its stage is the one shown, else hold it."""
        with self._lock:
            if self._front < len(self._order) and stage == self._order[self._front]:
                self._send(event)
                return
            if not self._order:
                return  # closed
            held = self._held[stage]
            if isinstance(event, StepOutput):
                self._held_bytes[stage] += len(event.data)
                while self._held_bytes[stage] > HELD_OUTPUT:
                    dropped = next(i for i, e in enumerate(held) if isinstance(e, StepOutput))
                    self._held_bytes[stage] -= len(held.pop(dropped).data)  # type: ignore
            held.append(event)

    def finished(self, stage: int) -> None:
        """A stage ended: show the next ones, with what they held."""
        with self._lock:
            self._finished.add(stage)
            while self._front < len(self._order) and self._order[self._front] in self._finished:
                self._front += 1
                if self._front < len(self._order):
                    following = self._order[self._front]
                    for event in self._held[following]:
                        self._send(event)
                    self._held[following] = []

    def _send(self, event: Event) -> None:
        if isinstance(event, StepStarted):  # numbered in the order steps are shown
            self._number += 1
            self.steps.append((event.text, event.is_from))
            event = replace(event, number=self._number, total=self.total())
        self.events.emit(event)


class StageEvents(Events):
    """One stage's side of a `Report`; `where` says which step it is at (for Ctrl-C)."""

    def __init__(self, report: Report, stage: int) -> None:
        self.report = report
        self.stage = stage
        self.where = ""

    def emit(self, event: Event) -> None:
        """Pass the event on to the report (a StepStarted is numbered when it is shown)."""
        self.report.emit(self.stage, event)
