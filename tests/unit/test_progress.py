"""The build's progress view: plain log lines, and the live terminal view as a terminal shows it."""

from __future__ import annotations

import io
import re
import threading
import time

import pyte
import pytest

from layerbuild.events import (
    CacheMiss,
    StepFinished,
    StepOutput,
    StepStarted,
    Transfer,
    step_label,
)
from layerbuild.progress import LiveProgress, ProgressPrinter, open_progress

COLUMNS, LINES = 40, 24


class FakeTty(io.StringIO):
    """A terminal that keeps what was written; its size comes from COLUMNS and LINES."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def terminal_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(COLUMNS))
    monkeypatch.setenv("LINES", str(LINES))
    monkeypatch.setenv("TERM", "xterm")


def screen(written: str, columns: int = COLUMNS) -> list[str]:
    """The lines a terminal shows after `written`, without trailing blank ones."""
    shown = pyte.Screen(columns, LINES)
    pyte.Stream(shown).feed(written.replace("\n", "\r\n"))  # a tty's ONLCR
    lines = [line.rstrip() for line in shown.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def live(window: int = 3) -> tuple[LiveProgress, FakeTty]:
    tty = FakeTty()
    return LiveProgress(tty, window=window, timer=False), tty


def test_plain_prints_every_line_as_before() -> None:
    out = io.StringIO()
    printer = open_progress("plain", out)
    printer.step(1, 3, "FROM base")
    printer.done(0.01)
    printer.step(2, 3, "RUN make\n  && make install")
    printer.note("  cache miss: the instruction changed")
    printer.output(b"one\r\ntw")
    printer.output(b"o\npart")
    printer.done(1.25)
    printer.step(3, 3, "COPY . /app")
    printer.done(0.0, cached=True)
    printer.close()
    assert out.getvalue() == (
        "[1/3] FROM base\n"
        "  0.0s\n"
        "[2/3] RUN make\n"
        "  cache miss: the instruction changed\n"
        "  | one\n"
        "  | two\n"
        "  | part\n"
        "  1.2s\n"
        "[3/3] COPY . /app\n"
        "  CACHED\n")


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    printer = open_progress("quiet", out)
    printer.step(1, 1, "RUN make")
    printer.output(b"hello\n")
    printer.note("a note")
    printer.done(1.0)
    printer.close()
    assert out.getvalue() == ""


def test_auto_is_live_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    printers = [open_progress("auto", FakeTty()), open_progress("auto", io.StringIO()),
                open_progress("tty", io.StringIO())]
    monkeypatch.setenv("TERM", "dumb")
    printers.append(open_progress("auto", FakeTty()))
    for printer in printers:
        printer.close()
    assert [type(p) for p in printers] == [LiveProgress, ProgressPrinter, LiveProgress,
                                           ProgressPrinter]
    assert printers[1].mode == printers[3].mode == "plain"


def test_finished_steps_are_one_completed_line_each() -> None:
    printer, tty = live()
    printer.step(1, 3, "FROM base")
    printer.refresh()
    printer.done(0.04)
    printer.step(2, 3, "RUN make\n  && make install")
    for n in range(5):
        printer.output(f"building {n}\n".encode())
        printer.refresh()
    printer.done(0.8)
    printer.step(3, 3, "COPY . /app")
    printer.done(0.0, cached=True)
    printer.close()
    assert screen(tty.getvalue()) == ["[1/3] FROM base  0.0s", "[2/3] RUN make  0.8s",
                                      "[3/3] COPY . /app  CACHED"]
    assert re.search(r"\x1b\[\d+A", tty.getvalue()), "the running step was redrawn in place"


def test_window_shows_the_last_lines_and_goes_at_the_end() -> None:
    printer, tty = live(window=3)
    printer.step(1, 1, "RUN make")
    printer.output(b"".join(b"line %d\n" % n for n in range(10)) + b"partial")
    printer.refresh()
    shown = screen(tty.getvalue())
    assert re.fullmatch(r"\[1/1\] RUN make  \d+\.\ds", shown[0])
    assert shown[1:] == ["  | line 8", "  | line 9", "  | partial"]
    printer.done(2.0)
    assert screen(tty.getvalue()) == ["[1/1] RUN make  2.0s"]


def test_long_lines_are_cut_to_the_terminal_width() -> None:
    printer, tty = live()
    printer.step(1, 1, "RUN " + "y" * 80)
    printer.output(b"x" * 100 + b"\n")
    printer.refresh()
    shown = screen(tty.getvalue())
    assert shown[1] == "  | " + "x" * (COLUMNS - 5)
    assert all(len(line) < COLUMNS for line in shown)
    printer.done(0.5)
    assert screen(tty.getvalue()) == ["[1/1] RUN " + "y" * (COLUMNS - 17) + "  0.5s"]


def test_output_is_shown_as_a_terminal_would_leave_it() -> None:
    printer, tty = live()
    printer.step(1, 1, "RUN make")
    printer.output(b"\x1b[31mred\x1b[0m\tend\r\ndownload 10%\rdownload 50%\r")
    printer.refresh()
    assert screen(tty.getvalue())[1:] == ["  | red     end", "  | download 50%"]


def test_notes_stay_under_their_step() -> None:
    printer, tty = live()
    printer.note("warning: before any step")
    printer.step(1, 1, "RUN make")
    long_note = "  cache miss: file " + "f" * 50 + " changed"  # wraps: two rows
    printer.note(long_note)
    printer.output(b"one\ntwo\n")
    printer.refresh()
    printer.refresh()
    printer.done(1.5)
    wrapped = [long_note[:COLUMNS], long_note[COLUMNS:]]
    assert screen(tty.getvalue()) == ["warning: before any step", "[1/1] RUN make  1.5s",
                                      *wrapped]


def test_close_mid_step_leaves_a_fresh_line_for_the_error() -> None:
    printer, tty = live()
    printer.step(1, 2, "FROM base")
    printer.done(0.1)
    printer.step(2, 2, "RUN make")
    printer.output(b"compiling\nfailed")
    printer.refresh()
    printer.close()
    printer.close()  # closing twice is harmless
    assert tty.getvalue().endswith("\n")
    tty.write("layerbuild: error: RUN make: exit code 2\n")
    assert screen(tty.getvalue()) == ["[1/2] FROM base  0.1s", "[2/2] RUN make",
                                      "layerbuild: error: RUN make: exit code 2"]


def test_the_timer_thread_redraws_and_stops_on_close() -> None:
    tty = FakeTty()
    printer = LiveProgress(tty)
    printer.step(1, 1, "RUN sleep 1")
    time.sleep(0.45)
    printer.close()
    written = tty.getvalue()
    assert len(re.findall(r"\x1b\[\d+A", written)) >= 2, written
    assert "progress" not in [t.name for t in threading.enumerate()]
    assert screen(written) == ["[1/1] RUN sleep 1"]


# --- stages: their names, and stages that build at once ---------------------------------


def test_steps_are_labelled_as_buildkit_labels_them() -> None:
    assert step_label(2, 5, "build") == "[build 2/5]"
    assert step_label(3, 12, "stage-1") == "[stage-1  3/12]"  # padded to the total's width
    assert step_label(1, 3) == "[1/3]"
    out = io.StringIO()
    printer = open_progress("plain", out)
    printer.emit(StepStarted(2, 5, "RUN make", 0, stage_name="build"))
    printer.emit(StepFinished(1.0, False, "RUN make", 0))
    assert out.getvalue() == "[build 2/5] RUN make\n  1.0s\n"


def test_stages_at_once_each_show_their_running_step() -> None:
    printer, tty = live(window=4)
    printer.emit(StepStarted(2, 3, "RUN make a", 0, stage_name="a"))
    printer.emit(StepStarted(2, 2, "RUN make b", 1, stage_name="b"))
    printer.emit(CacheMiss("RUN make b", "not built before", 1))
    for n in range(4):
        printer.emit(StepOutput(f"a{n}\n".encode(), 0))
        printer.emit(StepOutput(f"b{n}\n".encode(), 1))
    printer.refresh()
    shown = screen(tty.getvalue())
    assert [re.sub(r"\d+\.\ds$", "T", line) for line in shown] == [
        "[a 2/3] RUN make a  T", "  | a2", "  | a3",  # the window shared between them
        "[b 2/2] RUN make b  T", "  cache miss: not built before", "  | b2", "  | b3"]
    printer.emit(StepFinished(0.7, False, "RUN make b", 1))  # b ends first: written above a
    printer.emit(StepOutput(b"a4\n", 0))
    printer.refresh()
    shown = screen(tty.getvalue())
    assert shown[:2] == ["[b 2/2] RUN make b  0.7s", "  cache miss: not built before"]
    assert re.fullmatch(r"\[a 2/3\] RUN make a  \d+\.\ds", shown[2])
    assert shown[3:] == ["  | a1", "  | a2", "  | a3", "  | a4"]  # a has the whole window
    printer.emit(StepFinished(1.5, False, "RUN make a", 0))
    printer.emit(StepStarted(3, 3, "COPY --from=b /out /out", 0, stage_name="a"))
    printer.emit(StepFinished(0.0, True, "COPY --from=b /out /out", 0))
    printer.close()
    assert screen(tty.getvalue()) == [
        "[b 2/2] RUN make b  0.7s", "  cache miss: not built before",
        "[a 2/3] RUN make a  1.5s", "[a 3/3] COPY --from=b /out /out  CACHED"]


def test_a_note_while_stages_run_at_once_is_a_line_of_its_own() -> None:
    printer, tty = live()
    printer.emit(StepStarted(1, 2, "FROM alpine", 0, True, "a"))
    printer.emit(StepStarted(1, 2, "FROM debian", 1, True, "b"))
    printer.emit(Transfer("1234abcd", "Pull complete"))
    printer.close()
    assert screen(tty.getvalue()) == ["1234abcd: Pull complete", "[a 1/2] FROM alpine",
                                      "[b 1/2] FROM debian"]


def test_the_view_of_stages_at_once_fits_a_small_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINES", "6")
    printer, tty = live(window=8)
    for stage in range(3):
        printer.emit(StepStarted(2, 2, f"RUN s{stage}", stage, stage_name=f"s{stage}"))
        printer.emit(StepOutput(b"x\ny\n", stage))
    printer.refresh()
    written = tty.getvalue()
    assert len(screen(written)) == 3  # no room for output: the step lines only
    printer.close()


# --- pulls and pushes ---------------------------------------------------------------------


def test_the_transfer_log_prints_each_status_change_and_no_byte_counts() -> None:
    from layerbuild.events import Transfer
    from layerbuild.progress import open_transfers

    out = io.StringIO()
    view = open_transfers("auto", out)  # not a terminal: log lines
    view.emit(Transfer("aaaa", "Pulling fs layer", 0, 100))
    view.emit(Transfer("aaaa", "Downloading", 50, 100))
    view.emit(Transfer("bbbb", "Already exists"))
    view.emit(Transfer("aaaa", "Pull complete", 100, 100))
    view.close()
    assert out.getvalue().splitlines() == [
        "aaaa: Pulling fs layer", "bbbb: Already exists", "aaaa: Pull complete"]


def test_the_live_transfer_view_keeps_one_line_per_blob_with_its_bar(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from layerbuild.events import Transfer
    from layerbuild.progress import LiveTransfers

    monkeypatch.setenv("COLUMNS", "120")
    out = FakeTty()
    view = LiveTransfers(out)
    view.emit(Transfer("aaaa", "Pulling fs layer", 0, 2_000_000))
    view.emit(Transfer("bbbb", "Pulling fs layer", 0, 1000))
    time.sleep(0.12)  # byte counts redraw at most every REDRAW_EVERY
    view.emit(Transfer("aaaa", "Downloading", 1_000_000, 2_000_000))
    view.note("a notice")
    view.emit(Transfer("bbbb", "Pull complete", 1000, 1000))
    view.close()
    shown = screen(out.getvalue(), 120)
    assert shown[0] == "a notice"
    assert shown[1].startswith("aaaa: Downloading [") and shown[1].endswith("1MB/2MB")
    assert shown[1].count("=") + shown[1].count(">") == 25
    assert shown[2] == "bbbb: Pull complete"
    assert len(shown) == 3


def test_quiet_transfers_print_nothing() -> None:
    from layerbuild.events import Transfer
    from layerbuild.progress import open_transfers

    out = io.StringIO()
    view = open_transfers("quiet", out)
    view.emit(Transfer("aaaa", "Pull complete"))
    view.note("x")
    view.close()
    assert out.getvalue() == ""


class YieldingStream(io.StringIO):
    """A stream that lets other threads run inside each write, as a pipe's writes do."""

    def write(self, text: str) -> int:
        time.sleep(0)
        return super().write(text)


def test_plain_lines_from_several_threads_stay_whole() -> None:
    out = YieldingStream()
    printer = ProgressPrinter("plain", out)

    def report(n: int) -> None:
        for _ in range(200):
            printer.note(f"{n:012x}: Mounted from lbtest/base")

    threads = [threading.Thread(target=report, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 800
    assert all(re.fullmatch(r"[0-9a-f]{12}: Mounted from lbtest/base", line) for line in lines)
