"""A build that fails on a COPY/ADD source, a bind mount or in the sandbox prints one line that
names the Buildfile, the line and the instruction, and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _context(tmp_path: Path, buildfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text(buildfile)
    (ctx / "f").write_text("f\n")
    (ctx / "sub").mkdir()
    os.symlink("/etc/passwd", ctx / "abs")
    os.symlink("../..", ctx / "up")
    os.symlink("../../etc", ctx / "sub" / "etc")
    return ctx


CASES = [
    ("COPY ../../etc/passwd /x", "COPY: ../../etc/passwd: outside the build context"),
    ("COPY abs /x", "COPY: abs: symlink abs -> /etc/passwd leads outside the build context"),
    ("ADD up/etc/passwd /x", "ADD: up/etc/passwd: symlink up -> ../.. leads outside the build "
                             "context"),
    ("COPY sub/etc/passwd /x", "COPY: sub/etc/passwd: symlink sub/etc -> ../../etc leads "
                               "outside the build context"),
    ("COPY sub/* /x/", "COPY: sub/etc: symlink sub/etc -> ../../etc leads outside the build "
                       "context"),
    ("COPY missing /x", "COPY: missing: not found in the build context"),
    ("COPY f /etc/passwd/x", "COPY: /etc/passwd is not a directory in the image"),
    ("COPY --from=base /no/such /x", "COPY: no/such: no such file or directory in the source"),
    ("RUN --mount=type=bind,source=up,target=/m true",
     "RUN: up: symlink up -> ../.. leads outside the build context"),
]


@pytest.mark.parametrize(("line", "said"), CASES, ids=[c[0] for c in CASES])
def test_the_error_names_the_buildfile_line_and_instruction(lb, base: str, tmp_path: Path,
                                                            store_root: Path, line: str,
                                                            said: str) -> None:
    ctx = _context(tmp_path, f"FROM base\nENV A=1\n{line}\n")
    proc = lb("build", "-q", "-t", "broken:1", str(ctx), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    [message] = proc.stderr.splitlines()
    assert message == f"layerbuild: error: {ctx}/Buildfile:3: {said}"
    assert "broken:1" not in lb("images").stdout
    assert list((store_root / "tmp").iterdir()) == []
