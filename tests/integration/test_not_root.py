"""The command line run by a user who is not root (`nobody`, through setpriv): what needs root
says so in one line, and what does not need it works on a store of the user's own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from treeutil import need, need_root, need_tool

import layerbuild

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
VENV_PYTHON = "/opt/layerbuild-unit-venv/bin/python"  # scripts/unit-unprivileged makes it
DEPENDENCIES = "import isal, zstandard, jinja2, urllib3"

Nobody = Callable[..., subprocess.CompletedProcess[str]]


def _python_for_nobody() -> str | None:
    """An interpreter nobody can run with layerbuild's dependencies (this one is often under
    /root, out of nobody's reach)."""
    for python in (sys.executable, VENV_PYTHON):
        probe = subprocess.run([*NOBODY, python, "-c", DEPENDENCIES], capture_output=True)
        if probe.returncode == 0:
            return python
    return None


@pytest.fixture(scope="module")
def as_nobody() -> Iterator[tuple[Path, Nobody]]:
    """A world-readable copy of the package, a dir nobody owns, and a runner of the CLI as
    nobody from that copy."""
    need_root()
    need_tool("setpriv")
    python = _python_for_nobody()
    need(python is not None, "needs a python3 nobody can run with layerbuild's dependencies "
         f"({VENV_PYTHON}, made by scripts/unit-unprivileged)")
    assert python is not None
    work = Path(tempfile.mkdtemp(prefix="layerbuild-nobody-"))
    try:
        shutil.copytree(Path(layerbuild.__file__).parent, work / "pkg" / "layerbuild",
                        ignore=shutil.ignore_patterns("__pycache__"))
        home = work / "home"
        home.mkdir()
        shutil.chown(home, "nobody")
        for path in (work, *work.rglob("*")):
            path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else
                       path.stat().st_mode | 0o644)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*NOBODY, "env", f"PYTHONPATH={work / 'pkg'}", f"HOME={home}",
                 "LAYERBUILD_ROOT=/var/lib/layerbuild", python, "-m", "layerbuild.cli", *args],
                capture_output=True, text=True, timeout=120, cwd=home)

        yield home, run
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one_line(proc: subprocess.CompletedProcess[str], *said: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for part in said:
        assert part in lines[0], lines[0]
    return lines[0]


NEEDS_ROOT = ["build", "import", "load", "pull"]


@pytest.mark.parametrize("command", NEEDS_ROOT)
def test_what_needs_root_says_so(as_nobody: tuple[Path, Nobody], command: str) -> None:
    home, nobody = as_nobody
    own = home / f"store-{command}"
    args = {"build": ["build", str(home)], "import": ["import", "/dev/null", "x:1"],
            "load": ["load", "-i", "/dev/null"], "pull": ["pull", "busybox"]}[command]
    for root in (own, Path("/var/lib/layerbuild")):
        line = _one_line(nobody("--root", str(root), *args),
                         f"`layerbuild {command}` needs root: ",
                         "rootless use is not supported yet")
        assert line.startswith("layerbuild: error: ")


def test_a_store_of_roots_says_whose_it_is(as_nobody: tuple[Path, Nobody], lb, base: str,
                                           store_root: Path) -> None:
    _home, nobody = as_nobody
    for args in (["images"], ["inspect", "base"], ["save", "base", "-o", "/dev/null"],
                 ["history", "base"], ["rmi", "base"], ["du"], ["prune"], ["tag", "base", "x"]):
        _one_line(nobody("--root", str(store_root), *args),
                  f"store {store_root} is not usable: Permission denied (it is root's: run "
                  "layerbuild as root, or give --root DIR for a store of your own; rootless "
                  "use is not supported yet)")
    _one_line(nobody("images"), "store /var/lib/layerbuild is not usable")
    assert "base" in lb("images").stdout  # untouched


def test_a_store_of_ones_own_works_for_what_needs_no_root(as_nobody: tuple[Path, Nobody],
                                                          ) -> None:
    home, nobody = as_nobody
    own = home / "store-own"
    listed = nobody("--root", str(own), "images")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    (home / "Buildfile").write_text("FROM scratch\nENV A=1\n")
    dry = nobody("--root", str(own), "build", "--dry-run", str(home))
    assert dry.returncode == 0, dry.stderr
    _one_line(nobody("--root", str(own), "inspect", "nope"), "no such image")
