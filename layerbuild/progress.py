"""How a build is drawn on the terminal (part of the CLI layer: the only other place that prints).

`plain` prints every step, every line of RUN output and each step's time, for logs, stage by
stage. `tty` keeps one line per step, completed in place with its time, and shows each running
step (one per stage, when stages build at once) with its latest output in a small window below
it, erased when the step ends. `auto` is `tty` when the stream is a terminal (and TERM is not
`dumb`), else `plain`; `quiet` prints nothing.
"""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
import time
from typing import TextIO

from layerbuild.events import (
    CacheMiss,
    Event,
    Events,
    StepFinished,
    StepOutput,
    StepStarted,
    Transfer,
    WouldRun,
    step_label,
)
from layerbuild.sizes import human_size

WINDOW_LINES = 8  # lines of RUN output shown while the step runs
REDRAW_EVERY = 0.1  # seconds: a live timer, yet a chatty step costs at most 10 redraws a second

# Escape sequences and control characters in RUN output would move our cursor or hide text.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def open_progress(mode: str, stream: TextIO | None = None) -> ProgressPrinter:
    """The printer for a `--progress` mode (`auto`, `tty`, `plain` or `quiet`); close it after."""
    out = stream or sys.stderr
    if mode == "auto":
        mode = "tty" if is_terminal(out) else "plain"
    return LiveProgress(out) if mode == "tty" else ProgressPrinter(mode, out)


def is_terminal(stream: TextIO) -> bool:
    """Whether the stream is a terminal that understands cursor movement."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class ProgressPrinter(Events):
    """Log lines: each step (`[build 3/9] RUN make`), every line of RUN output and the step's
    time; the steps of stages that build at once come stage by stage."""

    def __init__(self, mode: str = "plain", stream: TextIO | None = None) -> None:
        self.mode = mode
        self.out = stream or sys.stderr
        self._pending = b""
        self._write_lock = threading.Lock()  # a push's blobs report from several threads

    def _print(self, text: str) -> None:
        if self.mode != "quiet":
            with self._write_lock:  # print() writes the text and its newline apart
                print(text, file=self.out, flush=True)

    def step(self, number: int, total: int, text: str, stage: str = "") -> None:
        """Print the step's first line."""
        self._print(f"{step_label(number, total, stage)} {_first_line(text)}")

    def done(self, seconds: float, cached: bool = False, source: str = "") -> None:
        """Print the step's time, or CACHED (and the cache it came from)."""
        self._flush()
        self._print(f"  {finished_text(seconds, cached, source)}")

    def output(self, data: bytes) -> None:
        """Print each complete line of RUN output."""
        if self.mode == "quiet":
            return
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._print("  | " + line.decode("utf-8", "replace").rstrip("\r"))

    def _flush(self) -> None:
        if self._pending:
            self._print("  | " + self._pending.decode("utf-8", "replace"))
            self._pending = b""

    def note(self, text: str) -> None:
        """Print a remark about the build."""
        self._print(text)

    def close(self) -> None:
        """Finish the output; plain lines need nothing, but callers close every printer."""


def finished_text(seconds: float, cached: bool, source: str = "") -> str:
    """How a finished step's line ends: its time, `CACHED`, or `CACHED (from REF)`.

    >>> finished_text(1.25, False), finished_text(0, True, "reg/app:cache")
    ('1.2s', 'CACHED (from reg/app:cache)')
    """
    if not cached:
        return f"{seconds:.1f}s"
    return f"CACHED (from {source})" if source else "CACHED"


class _Running:
    """A step on screen while it runs: its line, its notes and its latest output."""

    def __init__(self, title: str, window: int) -> None:
        self.title = title
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=window)
        self.pending = b""

    def output(self, data: bytes) -> None:
        self.pending += data
        *lines, pending = self.pending.split(b"\n")
        self.tail.extend(_printable(line) for line in lines)
        # A progress bar redraws its line with \r: only the text after the last one shows.
        self.pending = pending[pending.rfind(b"\r", 0, len(pending) - 1) + 1:]

    def shown(self) -> list[str]:
        """Its latest output lines, the unfinished one last."""
        return [*self.tail, *([_printable(self.pending)] if self.pending else [])]


PLAIN = -1
"""Where the plain calls (`step`, `done`, `output`) go: one step at a time, as a replay
reports them."""


class LiveProgress(ProgressPrinter):
    """The terminal view: one line per step, completed in place, over a live window of output.

    Every running step is shown, one per stage when stages build at once, each with its timer
    and its latest output; a step that ends is written for good above those still running.
    Events only change what is to be shown; running steps are drawn by `refresh()`, which a
    timer thread calls every REDRAW_EVERY seconds. Every draw ends with a newline, so the cursor
    always waits at the start of the line below the view, where an error message can go.
    """

    concurrent_stages = True

    def __init__(self, stream: TextIO | None = None, window: int = WINDOW_LINES,
                 timer: bool = True) -> None:
        super().__init__("tty", stream)
        self.window = window
        self._lock = threading.Lock()  # the builder's threads and the timer all draw
        self._running: dict[int, _Running] = {}  # by stage, in the order they started
        self._rows = 0  # screen rows the running steps take above the cursor
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if timer:
            self._timer = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._timer.start()

    def emit(self, event: Event) -> None:
        """Take an event of the stage it names; the others as the plain calls."""
        match event:
            case StepStarted():
                self._start(event.stage, step_label(event.number, event.total,
                                                    event.stage_name), event.text)
            case StepFinished():
                with self._lock:
                    self._commit(event.stage, finished_text(event.seconds, event.cached,
                                                            event.source))
            case StepOutput():
                with self._lock:
                    if (running := self._running.get(event.stage)) is not None:
                        running.output(event.data)
            case CacheMiss():
                self._note(event.stage, f"  cache miss: {event.reason}")
            case WouldRun():
                self._note(event.stage, "  would run")
            case _:
                super().emit(event)

    def step(self, number: int, total: int, text: str, stage: str = "") -> None:
        """Start a step; it shows on the next refresh, unless it ends before."""
        self._start(PLAIN, step_label(number, total, stage), text)

    def done(self, seconds: float, cached: bool = False, source: str = "") -> None:
        """Complete the step's line with its time, or CACHED, and erase its output."""
        with self._lock:
            self._commit(PLAIN, finished_text(seconds, cached, source))

    def output(self, data: bytes) -> None:
        """Keep the last lines of RUN output for the window."""
        with self._lock:
            if (running := self._running.get(PLAIN)) is not None:
                running.output(data)

    def note(self, text: str) -> None:
        """Show a remark for good: under the running step's line, or on its own when none or
        several run."""
        with self._lock:
            if len(self._running) == 1:
                next(iter(self._running.values())).notes.append(_clean(text))
            else:
                self._render([_clean(text)])

    def refresh(self) -> None:
        """Redraw the running steps: each line with a timer, its notes and its latest output."""
        with self._lock:
            if self._running:
                self._render([])

    def close(self) -> None:
        """Stop the timer and leave the running steps' lines, and the cursor on a fresh line."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        with self._lock:
            for key in list(self._running):
                self._commit(key, "")

    def _tick(self) -> None:
        while not self._stop.wait(REDRAW_EVERY):
            try:
                self.refresh()
            except (OSError, ValueError):
                return  # the terminal went away (closed or hung up): nothing left to draw on

    def _start(self, key: int, label: str, text: str) -> None:
        with self._lock:
            self._commit(key, "")  # a step that ended without done() keeps its bare line
            self._running[key] = _Running(_clean(f"{label} {_first_line(text)}"), self.window)

    def _note(self, key: int, text: str) -> None:
        with self._lock:
            if (running := self._running.get(key)) is not None:
                running.notes.append(_clean(text))
            else:
                self._render([_clean(text)])

    def _commit(self, key: int, suffix: str) -> None:
        """Write the step's final line and its notes for good; its output window goes."""
        running = self._running.pop(key, None)
        if running is None:
            return
        width = _size(self.out).columns
        self._render([_fit(running.title, width, suffix), *running.notes])

    def _render(self, final: list[str]) -> None:
        """Write `final` lines for good, then the running steps below them, in one write
        that replaces what the running steps took on screen."""
        size = _size(self.out)
        now = time.monotonic()
        heads = [[_fit(r.title, size.columns, f"{now - r.started:.1f}s"), *r.notes]
                 for r in self._running.values()]
        # Cursor movement cannot reach rows scrolled off the top: the view must fit.
        free = size.lines - 1 - _rows([line for head in heads for line in head], size.columns)
        room = max(0, min(self.window, free)) // max(1, len(heads))
        live: list[str] = []
        for head, running in zip(heads, self._running.values(), strict=True):
            shown = running.shown()
            live += head + [_fit("  | " + line, size.columns)
                            for line in shown[max(0, len(shown) - room):]]
        up = f"\x1b[{self._rows}A" if self._rows else ""  # column 0: every draw ends in \n
        self.out.write(up + "\x1b[J" + "".join(line + "\n" for line in final + live))
        self.out.flush()
        self._rows = _rows(live, size.columns)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _printable(line: bytes) -> str:
    """One line of output as a terminal would leave it, without any control character."""
    line = line.rstrip(b"\r")
    return _clean(line[line.rfind(b"\r") + 1:].decode("utf-8", "replace"))


def _clean(text: str) -> str:
    """The text without what would move the cursor, so that its length is its width."""
    return _CONTROL.sub("", text).expandtabs()


def _fit(text: str, width: int, suffix: str = "") -> str:
    """The text, cut so that it and the suffix leave the terminal's last column free."""
    tail = f"  {suffix}" if suffix else ""
    return text[:max(0, width - 1 - len(tail))] + tail


def _rows(lines: list[str], width: int) -> int:
    """How many screen rows the lines take once the terminal wraps them."""
    return sum(max(1, -(-len(line) // width)) for line in lines)


def _size(stream: TextIO) -> os.terminal_size:
    """The size of the stream's own terminal (stdout may be a pipe while stderr is the tty)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        size = None
    if size and size.columns > 0 and size.lines > 0:
        return size
    import shutil  # rarely reached: its import costs every command otherwise

    return shutil.get_terminal_size()


def open_transfers(mode: str, stream: TextIO | None = None) -> TransferLog:
    """The view of a pull or push (`auto`, `tty`, `plain` or `quiet`); close it after."""
    out = stream or sys.stdout
    if mode == "auto":
        mode = "tty" if is_terminal(out) else "plain"
    return LiveTransfers(out) if mode == "tty" else TransferLog(mode, out)


class TransferLog(Events):
    """Log lines of a pull or push: each blob's status as it changes (`…: Pull complete`)."""

    def __init__(self, mode: str = "plain", stream: TextIO | None = None) -> None:
        self.mode = mode
        self.out = stream or sys.stdout
        self._lock = threading.Lock()  # transfers report from several threads

    def emit(self, event: Event) -> None:
        """Print a status change (byte counts are for the terminal view)."""
        if isinstance(event, Transfer):
            if not event.moving:
                self.note(f"{event.item}: {event.status}")
        else:
            super().emit(event)

    def note(self, text: str) -> None:
        """Print a line."""
        if self.mode != "quiet":
            with self._lock:
                print(_clean(text), file=self.out, flush=True)

    def close(self) -> None:
        """Nothing is left to draw."""


class LiveTransfers(TransferLog):
    """The terminal view of a pull or push: one line per blob, redrawn in place, with a bar."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__("tty", stream)
        self._lines: dict[str, str] = {}
        self._rows = 0
        self._last = 0.0

    def emit(self, event: Event) -> None:
        """Update the blob's line; byte counts redraw at most every REDRAW_EVERY seconds."""
        if not isinstance(event, Transfer):
            super().emit(event)
            return
        with self._lock:
            self._lines[event.item] = _transfer_line(event)
            now = time.monotonic()
            if event.moving and now - self._last < REDRAW_EVERY:
                return
            self._last = now
            self._draw()

    def note(self, text: str) -> None:
        """A line above the blobs' lines."""
        with self._lock:
            width = _size(self.out).columns
            up = f"\x1b[{self._rows}A" if self._rows else ""
            self.out.write(up + "\x1b[J" + _fit(_clean(text), width) + "\n")
            self._rows = 0
            self._draw()

    def _draw(self) -> None:
        width = _size(self.out).columns
        lines = [_fit(line, width) for line in self._lines.values()]
        up = f"\x1b[{self._rows}A" if self._rows else ""
        self.out.write(up + "\x1b[J" + "".join(line + "\n" for line in lines))
        self.out.flush()
        self._rows = _rows(lines, width)

    def close(self) -> None:
        """Leave every line as it ended."""
        with self._lock:
            self._draw()


def _transfer_line(event: Transfer) -> str:
    if not event.moving or not event.total:
        return f"{event.item}: {event.status}"
    done = min(event.current, event.total)
    filled = int(50 * done / event.total)
    bar = "=" * max(0, filled - 1) + (">" if filled else "") + " " * (50 - filled)
    return (f"{event.item}: {event.status} [{bar}] "
            f"{human_size(done)}/{human_size(event.total)}")
