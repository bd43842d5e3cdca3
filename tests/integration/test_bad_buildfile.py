"""A Buildfile that cannot be read gets one clear line from `layerbuild build`, quickly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli


def _one_line_error(store: Path, *args: str) -> str:
    proc = run_cli(store, "build", *args, check=False, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    return ctx


def test_a_directory_as_buildfile(tmp_path: Path, context: Path) -> None:
    line = _one_line_error(tmp_path / "store", "-f", str(context), str(context))
    assert line == f"layerbuild: error: cannot read {context}: Is a directory"


def test_a_buildfile_that_is_not_utf8(tmp_path: Path, context: Path) -> None:
    (context / "Buildfile").write_bytes(b"FROM scratch\nLABEL a=\xff\xfe\n")
    line = _one_line_error(tmp_path / "store", str(context))
    assert line == f"layerbuild: error: {context}/Buildfile:2: not UTF-8 text at byte 21"


def test_an_endless_buildfile_ends_at_the_size_limit(tmp_path: Path, context: Path) -> None:
    line = _one_line_error(tmp_path / "store", "-f", "/dev/zero", str(context))
    assert line == ("layerbuild: error: /dev/zero: the Buildfile is larger than the maximum "
                    "of 16777216 bytes")


def test_a_line_too_long(tmp_path: Path, context: Path) -> None:
    (context / "Buildfile").write_text("FROM scratch\nLABEL a=" + "x" * 10_000_000 + "\n")
    line = _one_line_error(tmp_path / "store", str(context))
    assert line == (f"layerbuild: error: {context}/Buildfile:2: dockerfile line greater than "
                    "max allowed size of 65535")


def test_a_buildfile_from_a_pipe_is_read_once(tmp_path: Path, context: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(tmp_path / "s"),
                           "build", "-q", "-f", "-", "-t", "piped:1", str(context)],
                          input=b"FROM scratch\nLABEL a=b\n", capture_output=True, timeout=120,
                          check=True)
    assert proc.stdout.decode().strip().startswith("sha256:")
    inspect = run_cli(tmp_path / "s", "inspect", "piped:1")
    assert '"a": "b"' in inspect.stdout
