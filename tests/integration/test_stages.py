"""Stages that do not use each other build at the same time, and stop together."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Each RUN waits (at most 20 s) for the other stage's RUN to have started: they pass only when
# both run at once. The cache mount is the one place both can see.
WAIT_FOR = ("RUN --mount=type=cache,target=/sync,id=sync touch /sync/{me} && i=0; "
            "while [ ! -e /sync/{other} ]; do i=$((i+1)); [ $i -gt 200 ] && exit 9; "
            "sleep 0.1; done; echo {me} saw {other} > /{me}")

TOGETHER = f"""\
FROM base AS a
{WAIT_FOR.format(me="a", other="b")}

FROM base AS b
{WAIT_FOR.format(me="b", other="a")}

FROM base
COPY --from=a /a /a
COPY --from=b /b /b
RUN cat /a /b
"""

# Stage a fails once stage b's RUN is running; b's RUN would take 29 s and then leave a mark.
ONE_FAILS = """\
FROM base AS a
RUN --mount=type=cache,target=/sync,id=sync i=0; while [ ! -e /sync/started ]; do \
i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.1; done; echo a gives up; exit 3

FROM base AS b
RUN --mount=type=cache,target=/sync,id=sync touch /sync/started && echo started && \
sleep 29 && touch /sync/finished

FROM base
COPY --from=a /etc/motd /a
COPY --from=b /etc/motd /b
"""


@pytest.fixture
def ctx(base: str, tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    root.mkdir()
    return root


def _leftovers(store_root: Path) -> list[str]:
    """Mounts, staging dirs and step processes a stopped build must not leave."""
    with open("/proc/self/mountinfo") as f:
        found = [line for line in f if str(store_root) in line]
    found += [str(p) for p in (store_root / "tmp").iterdir()]
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return found + [line for line in processes.splitlines() if line.strip() == "sleep 29"]


def test_independent_stages_run_at_once_and_print_in_order(lb, ctx: Path) -> None:
    (ctx / "Buildfile").write_text(TOGETHER)
    proc = lb("build", "--progress", "plain", "-t", "together:1", str(ctx))
    assert "  | a saw b\n  | b saw a\n" in proc.stderr
    steps = re.findall(r"^\[(\S+) (\d+)/(\d+)\] (\S+)", proc.stderr, re.M)
    # Shown as a one-at-a-time build shows them: stage by stage, each numbering its steps.
    assert steps == [("a", "1", "2", "FROM"), ("a", "2", "2", "RUN"), ("b", "1", "2", "FROM"),
                     ("b", "2", "2", "RUN"), ("stage-2", "1", "4", "FROM"),
                     ("stage-2", "2", "4", "COPY"), ("stage-2", "3", "4", "COPY"),
                     ("stage-2", "4", "4", "RUN")]
    again = lb("build", "--progress", "plain", "-t", "together:1", str(ctx))
    assert again.stdout == proc.stdout  # the same image, every step cached


def test_a_failing_stage_stops_the_others(lb, ctx: Path, store_root: Path) -> None:
    (ctx / "Buildfile").write_text(ONE_FAILS)
    proc = lb("build", "--progress", "plain", "-t", "stopped:1", str(ctx), check=False)
    assert proc.returncode == 1
    assert "Buildfile:2" in proc.stderr and "exit code 3" in proc.stderr
    assert "a gives up" in proc.stderr
    assert _leftovers(store_root) == []
    marks = [p.name for p in (store_root / "cachemounts").glob("*/*")]
    assert "started" in marks and "finished" not in marks  # b's RUN was killed mid-way
    assert "stopped" not in lb("images").stdout


def test_ctrl_c_stops_every_stage(lb, ctx: Path, store_root: Path) -> None:
    (ctx / "Buildfile").write_text(ONE_FAILS.replace("exit 3", "sleep 29"))
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                             "build", "--progress", "plain", str(ctx)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # stage a is shown; it prints once stage b's RUN runs
        if "| a gives up" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "layerbuild: interrupted at " in rest and "Buildfile:2: RUN " in rest
    assert _leftovers(store_root) == []
    assert "finished" not in [p.name for p in (store_root / "cachemounts").glob("*/*")]
