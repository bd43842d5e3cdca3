"""Killed processes are reaped in the background, and `settle` waits until every one is."""

from __future__ import annotations

import subprocess
import sys
import time

from layerbuild.sandbox import reaper

# Exits 0.3 s after SIGTERM, as a process whose exit the kernel takes a while over does.
SLOW_TO_DIE = ("import signal, sys, time; "
               "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.3), sys.exit(7))); "
               "print(flush=True); time.sleep(60)")


def _slow_to_die() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TO_DIE], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # its handler is set
    proc.stdout.close()
    proc.terminate()
    return proc


def _state(pid: int) -> str | None:
    """The process's state letter (Z for a zombie), None once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # reaped before, or while, it was read
        return None


def test_reap_returns_at_once_and_settle_waits_for_the_exit() -> None:
    proc = _slow_to_die()
    started = time.monotonic()
    reaper.reap(proc)
    assert time.monotonic() - started < 0.1
    assert reaper.settle()
    assert proc.returncode == 7
    assert _state(proc.pid) is None, "left as a zombie"


def test_settle_says_when_a_process_outlasts_its_timeout() -> None:
    proc = _slow_to_die()
    reaper.reap(proc)
    assert not reaper.settle(timeout=0.01)
    assert reaper.settle()
    assert proc.returncode == 7


def test_a_process_that_dies_meanwhile_leaves_no_zombie() -> None:
    proc = subprocess.Popen(["true"])
    reaper.reap(proc)
    deadline = time.monotonic() + 5
    while _state(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # no settle: the background thread alone reaps it
    assert _state(proc.pid) is None
    assert reaper.settle()
