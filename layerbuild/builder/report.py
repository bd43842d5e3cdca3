"""What stages report while they build at once, passed on as the receiver wants them.

Each stage numbers its own steps (`[build 2/5]`, as BuildKit does). A receiver that shows
stages at once (`Events.concurrent_stages`, the terminal view) gets every event as it happens.
Any other gets them as a one-at-a-time build reports them: the first unfinished stage (in
Buildfile order) reports live, the others are held back and passed on when their turn comes.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from layerbuild.events import Event, Events, StepOutput, StepStarted

HELD_OUTPUT = 8 << 20
"""Bytes of RUN output held per waiting stage; beyond it, the oldest is dropped."""

Step = tuple[str, bool, str, int, int]
"""A step as a replay shows it again: (text, is a FROM, stage name, number, total)."""


class Report:
    """Events from the stages of one build, passed on to `events`."""

    def __init__(self, events: Events, order: list[int]) -> None:
        self.events = events
        self._order = order
        self._stages = list(order)
        self._front = 0
        self._held: dict[int, list[Event]] = {i: [] for i in order}
        self._held_bytes = dict.fromkeys(order, 0)
        self._steps: dict[int, list[Step]] = {i: [] for i in order}
        self._finished: set[int] = set()
        self._lock = threading.Lock()

    @property
    def steps(self) -> list[Step]:
        """Every step started so far, stage by stage in Buildfile order."""
        with self._lock:
            return [step for stage in self._stages for step in self._steps[stage]]

    def close(self) -> int | None:
        """Pass nothing more on (the build is stopping); returns the stage being shown."""
        with self._lock:
            shown = self._order[self._front] if self._front < len(self._order) else None
            self._front = len(self._order)
            self._order = []
            return shown

    def channel(self, stage: int, name: str, total: int) -> StageEvents:
        """The events one stage reports through: `name` as its steps show it (empty for the
        only stage), `total` its steps so far known."""
        return StageEvents(self, stage, name, total)

    def emit(self, stage: int, event: Event) -> None:
        """Pass an event on now if its stage is shown now, else hold it."""
        with self._lock:
            if not self._order:
                return  # closed
            if isinstance(event, StepStarted):
                self._steps[stage].append((event.text, event.is_from, event.stage_name,
                                           event.number, event.total))
            if self.events.concurrent_stages or stage == self._order[self._front]:
                self.events.emit(event)
                return
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
                        self.events.emit(event)
                    self._held[following] = []


class StageEvents(Events):
    """One stage's side of a `Report`: numbers its steps; `where` says which step it is at
    (for Ctrl-C); `total` grows when the base brings ONBUILD triggers."""

    def __init__(self, report: Report, stage: int, name: str, total: int) -> None:
        self.report = report
        self.stage = stage
        self.name = name
        self.total = total
        self.where = ""
        self._number = 0

    def emit(self, event: Event) -> None:
        """Pass the event on to the report, a StepStarted numbered within the stage."""
        if isinstance(event, StepStarted):
            self._number += 1
            event = replace(event, number=self._number, total=max(self.total, self._number),
                            stage_name=self.name)
        self.report.emit(self.stage, event)
