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


def _counting(monkeypatch: pytest.MonkeyPatch) -> tuple[list[list[str]], list[list[str]]]:
    """The command of every child started, and of every one handed to a step, from now."""
    started: list[list[str]] = []
    handed: list[list[str]] = []
    real_start, real_child = launch._start, launch._child

    def counting(cmd: list[str], stack: bool) -> launch._Child:
        started.append(cmd)
        return real_start(cmd, stack)

    def handing(cmd: list[str], stack: bool) -> launch._Child:
        handed.append(cmd)
        return real_child(cmd, stack)

    monkeypatch.setattr(launch, "_start", counting)
    monkeypatch.setattr(launch, "_child", handing)
    launch.discard_spares()  # what earlier tests in this process asked for is gone
    return started, handed


def test_runs_use_spares_and_none_is_left(tmp_path: Path, base: str, store_root: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    need_root()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text(f"FROM {base}\n" + "".join(
        f"RUN echo {n} > /f{n}\n" for n in range(5)))
    started, handed = _counting(monkeypatch)
    before = _children()
    image = layerbuild.build(ctx, store=store_root, network="none")
    assert image is not None
    # Each RUN's child was asked for ahead (the first as the stage started, the next two as
    # each step before ran): five started, five handed out, none to spare.
    assert len([c for c in handed if "--pid" in c]) == 5
    assert len([c for c in started if "--pid" in c]) == 5
    assert set(_children()) <= set(before)
    assert launch._SPARES == {}


def test_copies_and_runs_of_one_build_start_no_child_in_vain(
        tmp_path: Path, base: str, store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_root()
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    for i in range(50):
        (ctx / "src" / f"f{i}").write_text(f"{i}\n")
    (ctx / "Buildfile").write_text(f"FROM {base}\nWORKDIR /app\nCOPY src /app/\n"
                                   "RUN ls /app > /list\nRUN cat /list\n")
    started, handed = _counting(monkeypatch)
    before = _children()
    image = layerbuild.build(ctx, store=store_root, network="none")
    assert image is not None
    runs = [c for c in handed if "--pid" in c]
    assert len(runs) == 2 and len(handed) == 4  # WORKDIR, COPY, two RUNs
    assert sorted(map(str, started)) == sorted(map(str, handed))
    assert set(_children()) <= set(before)
    assert launch._SPARES == {}
    # Rebuilt after a change to the copied files, the COPY takes the child asked for as
    # the stage started (the WORKDIR, cached, took none), and the RUNs theirs.
    (ctx / "src" / "f3").write_text("changed\n")
    started.clear()
    handed.clear()
    assert layerbuild.build(ctx, store=store_root, network="none") is not None
    assert len(handed) == 3
    assert sorted(map(str, started)) == sorted(map(str, handed))
    assert set(_children()) <= set(before)
    assert launch._SPARES == {}


def test_a_spare_that_is_never_used_exits_on_its_own() -> None:
    need_root()
    cmd = ["unshare", "--mount", "--propagation", "private", "--", launch.sys.executable,
           "-I", "-S", "-c", launch._BOOT, launch._PACKAGE_DIR]
    child = launch._start(cmd, False)
    assert child.proc.poll() is None
    child.discard()  # end-of-file on stdin, as when the builder dies
    assert child.proc.returncode == 0
