"""`layerbuild build` on a terminal: the live view, as a terminal emulator shows it at the end."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte

COLUMNS, LINES = 100, 40
CHATTY = "RUN for i in $(seq 1 30); do echo \"line $i\"; sleep 0.03; done"


def build_on_pty(store_root: Path, context: Path, timeout: float = 300,
                 ) -> tuple[int, bytes, str]:
    """`layerbuild build` with stderr on a pseudo-terminal: exit code, terminal bytes, stdout."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                             "build", str(context)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)  # the child's copy is the last: reading the master ends when it exits
    written = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every slave end is closed
                break
            if not chunk:
                break
            written += chunk
        else:
            proc.kill()
            raise AssertionError(f"the build did not end in {timeout}s:\n{written.decode()}")
    finally:
        os.close(master)
    assert proc.stdout is not None
    stdout = proc.stdout.read().decode()
    return proc.wait(timeout=60), bytes(written), stdout


def final_screen(written: bytes) -> list[str]:
    """The terminal's lines once everything written was drawn, without trailing blank ones."""
    screen = pyte.Screen(COLUMNS, LINES)
    pyte.ByteStream(screen).feed(written)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _context(tmp_path: Path, buildfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text(buildfile)
    return ctx


def test_live_view_ends_with_one_line_per_step(base: str, store_root: Path,
                                               tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"FROM {base}\n{CHATTY}\nENV DONE=1\n")
    code, written, stdout = build_on_pty(store_root, ctx)
    assert code == 0, written.decode()
    assert re.fullmatch(r"Successfully built sha256:[0-9a-f]{64}\n", stdout)
    assert re.search(rb"\x1b\[\d+A", written), "the running step was redrawn in place"
    assert re.search(rb"  \| line \d+\r\n", written), "RUN output was shown while it ran"
    shown = final_screen(written)
    print("\n".join(shown))
    steps = [line for line in shown if line.startswith("[")]
    assert len(steps) == 3, shown
    assert re.fullmatch(r"\[1/3\] FROM base  \d+\.\ds", steps[0])
    assert re.fullmatch(r"\[2/3\] RUN for i in .*  \d+\.\ds", steps[1])
    assert steps[2] == "[3/3] ENV DONE=1  0.0s"
    assert not [line for line in shown if "| line" in line], "the output window was erased"
    assert "  cache miss: not built before" in shown  # notes stay


def test_failure_is_printed_after_the_view_closed(base: str, store_root: Path,
                                                  tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"FROM {base}\n"
                   "RUN for i in 1 2 3 4 5; do echo \"out $i\"; sleep 0.1; done; exit 3\n")
    code, written, stdout = build_on_pty(store_root, ctx)
    assert code == 1
    assert stdout == ""
    error = written.index(b"layerbuild: error:")
    assert written.rindex(b"\x1b[") < error, "no drawing after the error"
    shown = final_screen(written)
    print("\n".join(shown))
    run = next(i for i, line in enumerate(shown) if line.startswith("[2/2] RUN"))
    assert shown[run].endswith("exit 3"), "an unfinished step shows no time"
    assert shown[run + 1] == "  cache miss: not built before"  # notes stay
    assert shown[run + 2].startswith("layerbuild: error:")
    assert "exit code 3" in "\n".join(shown[run + 2:])
    assert not [line for line in shown if line.startswith("  | ")], "the output window was erased"


# Each RUN says it started, then waits (at most 20 s) for the other stage's RUN to have
# started, then both run on for a second: they pass only when both run at once. The cache
# mount is the one place both see.
WAITS = ("RUN --mount=type=cache,target=/sync,id=tty-sync echo {me} started && "
         "touch /sync/{me} && i=0; while [ ! -e /sync/{other} ]; do i=$((i+1)); "
         "[ $i -gt 200 ] && exit 9; sleep 0.1; done; sleep 1; touch /{me}")


def test_stages_at_once_show_their_running_steps_together(base: str, store_root: Path,
                                                          tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"FROM {base} AS a\n{WAITS.format(me='a', other='b')}\n\n"
                   f"FROM {base} AS b\n{WAITS.format(me='b', other='a')}\n\n"
                   f"FROM {base}\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n")
    code, written, _stdout = build_on_pty(store_root, ctx)
    assert code == 0, written.decode()
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    both = False
    # The screen after each draw (each one starts by clearing what the running steps took).
    for n, drawn in enumerate(written.split(b"\x1b[J")):
        stream.feed((b"\x1b[J" if n else b"") + drawn)
        shown = [line.rstrip() for line in screen.display]
        # A step's output window is on screen only while it runs.
        both = both or {"  | a started", "  | b started"} <= set(shown)
    assert both, "both stages' RUN steps were shown running at once"
    shown = final_screen(written)
    print("\n".join(shown))
    steps = re.findall(r"^(\[\S+ \d/\d\]) .*  \d+\.\ds$", "\n".join(shown), re.M)
    assert sorted(steps[:4]) == ["[a 1/2]", "[a 2/2]", "[b 1/2]", "[b 2/2]"]
    assert steps[4:] == ["[stage-2 1/3]", "[stage-2 2/3]", "[stage-2 3/3]"]
    assert not [line for line in shown if line.startswith("  | ")], "output windows erased"
