"""No other host user reaches a file in the store: not a setuid-root program or a device node
that a RUN made, neither in a stored layer nor in the staging dir while the RUN runs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Run
from treeutil import need_tool

MADE = "cp /bin/busybox /busybox.suid && chmod 4755 /busybox.suid && mknod -m 666 /node c 1 3"


@pytest.fixture
def store_root() -> Iterator[Path]:
    """A store in a dir every user can pass through (pytest's tmp dirs are root's alone), so
    that only the store's own modes keep other users out."""
    parent = Path(tempfile.mkdtemp(prefix="lb-private-"))
    os.chmod(parent, 0o755)
    yield parent / "deep/er/store"
    shutil.rmtree(parent)


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True,
                          text=True, timeout=60)


def _assert_unreachable(suid: Path, node: Path) -> None:
    """The files are there (root sees them), yet nobody can run or open them."""
    assert os.stat(suid).st_mode & stat.S_ISUID and stat.S_ISCHR(os.stat(node).st_mode)
    ran = _as_nobody(str(suid), "id", "-u")
    assert ran.returncode != 0 and "0" not in ran.stdout.split(), ran
    assert "Permission denied" in ran.stderr
    opened = _as_nobody("/bin/busybox", "dd", f"if={node}", "of=/dev/null", "count=1")
    assert opened.returncode != 0 and "Permission denied" in opened.stderr, opened


def _ctx(tmp_path: Path, buildfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Buildfile").write_text(buildfile)
    return ctx


def test_store_dirs_are_private_from_the_first_mkdir(lb: Run, base: str,
                                                     store_root: Path) -> None:
    made = [store_root, *(store_root.parents[i] for i in range(2))]
    made += [store_root / d for d in ("image", "overlay2", "tmp", "blobs", "buildcache")]
    for d in made:
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert _as_nobody("test", "-x", str(store_root.parents[2])).returncode == 0


def test_a_stored_layer_is_out_of_reach(lb: Run, base: str, store_root: Path,
                                        tmp_path: Path) -> None:
    need_tool("runuser")
    lb("build", "-t", "made", str(_ctx(tmp_path, f"FROM base\nRUN {MADE}\n")))
    suid = next(store_root.glob("overlay2/*/diff/busybox.suid"))
    _assert_unreachable(suid, suid.with_name("node"))


def test_a_running_step_is_out_of_reach(lb: Run, base: str, store_root: Path,
                                        tmp_path: Path) -> None:
    need_tool("runuser")
    ctx = _ctx(tmp_path, f"FROM base\nRUN {MADE} && touch /made && sleep 4\n")
    build = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root",
                              str(store_root), "build", str(ctx)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(store_root.glob("tmp/*/upper/made")) and time.monotonic() < deadline:
            time.sleep(0.05)
        upper = next(store_root.glob("tmp/*/upper/made")).parent
        _assert_unreachable(upper / "busybox.suid", upper / "node")
    finally:
        out, _ = build.communicate(timeout=120)
    assert build.returncode == 0, out


def test_a_loose_store_is_tightened_with_a_notice(lb: Run, base: str,
                                                  store_root: Path) -> None:
    for d in (store_root, store_root / "overlay2", store_root / "tmp"):
        os.chmod(d, 0o755)
    first = lb("images")
    notices = [line for line in first.stderr.splitlines() if "notice" in line]
    assert len(notices) == 1 and notices[0].startswith("layerbuild: notice: store "), notices
    assert "overlay2" in notices[0] and "tmp" in notices[0]
    for d in (store_root, store_root / "overlay2", store_root / "tmp"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert "base" in first.stdout
    assert lb("images").stderr == ""
