"""One whiteout recogniser for export and extraction: both overlay forms of a deletion."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from layerbuild.layer import whiteout


def _st(mode: int, size: int = 0, rdev: int = 0) -> Any:
    return SimpleNamespace(st_mode=mode, st_size=size, st_rdev=rdev)


def _never() -> dict[str, bytes]:
    raise AssertionError("xattrs read for an entry whose stat decides")


def test_a_0_0_char_device_is_a_whiteout_without_reading_xattrs() -> None:
    assert whiteout.is_whiteout(_st(stat.S_IFCHR | 0o600), _never)


def test_other_devices_and_files_are_not() -> None:
    assert not whiteout.is_whiteout(_st(stat.S_IFCHR | 0o600, rdev=os.makedev(1, 3)), _never)
    assert not whiteout.is_whiteout(_st(stat.S_IFREG | 0o644, size=3), _never)
    assert not whiteout.is_whiteout(_st(stat.S_IFDIR | 0o755), _never)
    assert not whiteout.is_whiteout(_st(stat.S_IFREG | 0o644), dict)


@pytest.mark.parametrize("namespace", ["user", "trusted"])
def test_an_empty_file_marked_overlay_whiteout_is_one(namespace: str) -> None:
    xattrs = {f"{namespace}.overlay.whiteout": b""}
    assert whiteout.is_whiteout(_st(stat.S_IFREG | 0o000), lambda: xattrs)


def test_read_xattrs_of_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "wh"
    path.touch()
    try:
        os.setxattr(path, "user.overlay.whiteout", b"y")
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    found = whiteout.read_xattrs(str(path))
    assert found == {"user.overlay.whiteout": b"y"}
    assert whiteout.is_whiteout(os.lstat(path), lambda: found)
