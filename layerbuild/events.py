"""What a build reports while it runs, as typed events, and the receiver they go to.

The engine emits one event per thing it has to say; a receiver (`Events`) either takes them as
they are (`emit`) or, by default, as the plain calls the progress view draws (step, done,
output, note), with the wording the CLI has always shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerbuild.digest import Digest


@dataclass(frozen=True)
class StepStarted:
    """A step starts: `number` of its stage's `total` steps (FROM counts), in the stage named
    `stage_name` (empty when the Buildfile has one stage: BuildKit's `[build 2/5]`)."""

    number: int
    total: int
    text: str
    stage: int
    is_from: bool = False
    stage_name: str = ""


@dataclass(frozen=True)
class StepFinished:
    """The step started last ended, after `seconds`; `cached` when it came from the cache."""

    seconds: float
    cached: bool
    step: str
    stage: int
    source: str = ""
    """Where a cached step came from, when not this store's cache (`--cache-from`)."""


@dataclass(frozen=True)
class CacheMiss:
    """The first step of a stage the cache does not have, and why (later ones miss too)."""

    step: str
    reason: str
    stage: int


@dataclass(frozen=True)
class WouldRun:
    """A dry run would run this step (it is not in the cache)."""

    step: str
    stage: int


@dataclass(frozen=True)
class Relinked:
    """A cached COPY --link layer stored again on a new base (`chain_id`), without rerunning."""

    step: str
    stage: int
    chain_id: Digest


@dataclass(frozen=True)
class BuildWarning:
    """A warning about the build (say, build args no ARG uses)."""

    text: str


@dataclass(frozen=True)
class StepOutput:
    """Bytes a RUN step printed."""

    data: bytes
    stage: int = 0


@dataclass(frozen=True)
class Transfer:
    """A blob moving to or from a registry: `Pulling fs layer`, `Downloading` (with bytes),
    `Pull complete`, `Already exists`, `Pushing`, `Pushed`, `Layer already exists`, …"""

    item: str
    """What moves: a layer's short digest, or a name."""
    status: str
    current: int = 0
    total: int | None = None

    @property
    def moving(self) -> bool:
        """Whether this only counts bytes (a status line repeats it)."""
        return self.status in ("Downloading", "Pushing")


Event = (StepStarted | StepFinished | CacheMiss | WouldRun | Relinked | BuildWarning | StepOutput
         | Transfer)


def step_label(number: int, total: int, stage: str = "") -> str:
    """A step's place as BuildKit shows it: `[build 2/5]`, `[ 3/12]` (the number padded to
    the width of the total), `[2/5]` without a stage name.

    >>> step_label(2, 5, "build")
    '[build 2/5]'
    """
    place = f"{number:>{len(str(total))}}/{total}"
    return f"[{stage} {place}]" if stage else f"[{place}]"


class Events:
    """What a build reports while it runs; the CLI draws it, tests may record it."""

    concurrent_stages = False
    """Whether this receiver takes the events of stages that build at once as they happen
    (each event names its stage); otherwise they come stage by stage, as a one-at-a-time
    build would report them."""

    def emit(self, event: Event) -> None:
        """Take one event; by default, as the plain calls below, worded as the CLI shows it."""
        match event:
            case StepStarted() if event.stage_name:
                self.step(event.number, event.total, event.text, stage=event.stage_name)
            case StepStarted():  # as receivers written before stages had names take it
                self.step(event.number, event.total, event.text)
            case StepFinished() if event.source:
                self.done(event.seconds, cached=event.cached, source=event.source)
            case StepFinished():
                self.done(event.seconds, cached=event.cached)
            case StepOutput():
                self.output(event.data)
            case CacheMiss():
                self.note(f"  cache miss: {event.reason}")
            case WouldRun():
                self.note("  would run")
            case BuildWarning():
                self.note(event.text)
            case Relinked():
                pass  # shown as the CACHED step it is
            case Transfer():
                if not event.moving:
                    self.note(f"{event.item}: {event.status}")

    def step(self, number: int, total: int, text: str, stage: str = "") -> None:
        """A step starts: `number` of `total` in the stage named `stage`."""

    def done(self, seconds: float, cached: bool = False, source: str = "") -> None:
        """The current step ended (`source`: the imported cache it came from)."""

    def output(self, data: bytes) -> None:
        """A RUN step printed something."""

    def note(self, text: str) -> None:
        """A remark about the build (a warning, say)."""


class RecordingEvents(Events):
    """Keeps every event, in order, in `events`."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        """Keep the event."""
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        """The events of one kind, in order."""
        return [e for e in self.events if isinstance(e, kind)]
