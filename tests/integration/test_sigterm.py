"""SIGTERM (`kill`, a service manager, `timeout`) stops a build as Ctrl-C does: the running step
is killed, nothing is left (mounts, processes, staging dirs), one line says where, and the exit
code is 143 (128 + 15, as the Docker CLI exits on a signal since docker/cli#5760)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def _context(tmp_path: Path, buildfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text(buildfile)
    (ctx / "f").write_text("f\n")
    return ctx


def _store_mounts(store_root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(store_root) in line]


@pytest.mark.parametrize("to_group", [False, True], ids=["process", "process-group"])
def test_sigterm_during_a_run_stops_cleanly(lb, base: str, tmp_path: Path, store_root: Path,
                                            to_group: bool) -> None:
    ctx = _context(tmp_path, "FROM base\nCOPY f /f\nRUN echo started && sleep 43 && "
                   "touch /never\n")
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                             "build", "--progress", "plain", "-t", "termed:1", str(ctx)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # the RUN is running once it has printed
        if "| started" in line:
            break
    if to_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143
    assert rest.splitlines()[-1] == (f"layerbuild: terminated at {ctx}/Buildfile:3: "
                                     "RUN echo started && sleep 43 && touch /never")
    assert "Traceback" not in rest
    assert list((store_root / "tmp").iterdir()) == []
    assert _store_mounts(store_root) == []
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [p for p in processes.splitlines() if "sleep 43" in p]
    assert "termed:1" not in lb("images").stdout
    (ctx / "Buildfile").write_text("FROM base\nCOPY f /f\nRUN touch /done\n")
    again = lb("build", "--progress", "plain", str(ctx)).stderr
    assert again.split("COPY f /f")[1].splitlines()[1] == "  CACHED"


def test_sigterm_while_loading_leaves_no_staging(lb, busybox_tar: Path, tmp_path: Path,
                                                 store_root: Path) -> None:
    """Another command than build: stopped mid-way, the store is as it was."""
    lb("import", str(busybox_tar), "bb:1")
    archive = tmp_path / "bb.tar"
    lb("save", "bb:1", "-o", str(archive))
    other = tmp_path / "other"
    read_r, read_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(other),
                             "load", "-i", "-"], stdin=read_r, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    os.close(read_r)
    with open(read_w, "wb") as feed, open(archive, "rb") as src:
        feed.write(src.read(len(archive.read_bytes()) // 2))  # half, then it waits for more
        feed.flush()
        _wait_for_staging(other)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.splitlines() == ["layerbuild: terminated"]
    assert list((other / "tmp").iterdir()) == []
    assert "bb" not in subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root",
                                       str(other), "images"], capture_output=True,
                                      text=True).stdout


def _wait_for_staging(store: Path) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (store / "tmp").is_dir() and any((store / "tmp").iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError("the load never staged anything")
