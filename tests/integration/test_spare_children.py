"""Spare sandbox children: started ahead for the next step of a kind, never outliving a build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from treeutil import need_root

import layerbuild
from layerbuild.sandbox import launch


def _children() -> list[int]:
    """This process's live child processes."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            out.append(int(entry))
    return out


def test_runs_use_spares_and_none_is_left(tmp_path: Path, base: str, store_root: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    need_root()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text(f"FROM {base}\n" + "".join(
        f"RUN echo {n} > /f{n}\n" for n in range(5)))
    started: list[list[str]] = []
    real = launch._start

    def counting(cmd: list[str], stack: bool) -> launch._Child:
        started.append(cmd)
        return real(cmd, stack)

    monkeypatch.setattr(launch, "_start", counting)
    launch.discard_spares()  # what earlier tests in this process asked for is forgotten
    before = _children()
    image = layerbuild.build(ctx, store=store_root, network="none")
    assert image is not None
    runs = [c for c in started if "--pid" in c]
    # 5 RUN children handed out: the first two started on demand, a spare started beside
    # each from the second on (three of them handed out, the last one discarded).
    assert len(runs) == 6
    assert set(_children()) <= set(before)  # the unused spare ended with the build
    assert launch._SPARES == {}


def test_a_spare_that_is_never_used_exits_on_its_own() -> None:
    need_root()
    cmd = ["unshare", "--mount", "--propagation", "private", "--", launch.sys.executable,
           "-I", "-S", "-c", launch._BOOT, launch._PACKAGE_DIR]
    child = launch._start(cmd, False)
    assert child.proc.poll() is None
    child.discard()  # end-of-file on stdin, as when the builder dies
    assert child.proc.returncode == 0
