"""Reading a file leaves its access time alone (no inode write per file read)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from layerbuild.reading import open_quietly


def test_a_read_keeps_the_access_time(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))  # older than mtime: relatime updates it
    fd = open_quietly(str(path))
    try:
        assert os.read(fd, 10) == b"data"
    finally:
        os.close(fd)
    assert os.stat(path).st_atime_ns == 1_000_000_000
    os.symlink(path, tmp_path / "link")
    try:
        open_quietly(str(tmp_path / "link"))
    except OSError as exc:  # a final symlink is not followed
        assert exc.errno == errno.ELOOP
    else:
        raise AssertionError("a symlink was followed")
