"""A fuse-overlayfs upper dir made the one the kernel's overlayfs leaves (`sandbox.fuse`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbuild.sandbox import fuse

OPAQUE = "user.overlay.opaque"


@pytest.fixture(autouse=True)
def _user_xattrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuse, "opaque_xattr", lambda: OPAQUE)


def _xattrs(path: Path) -> list[str]:
    return os.listxattr(path)


def _marked(path: Path) -> None:
    """A dir as fuse-overlayfs leaves one it created: both marker entries."""
    path.mkdir(parents=True)
    (path / ".wh..wh..opq").touch()
    (path / ".wh..opq").touch()


def test_only_a_dir_made_where_the_lowers_had_the_name_stays_opaque(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc/old").mkdir(parents=True)
    (lower / "etc/old/f").touch()
    _marked(upper / "etc/old")  # `rm -rf /etc/old && mkdir /etc/old`
    _marked(upper / "etc/new")  # a dir nothing below has
    _marked(upper / "etc/new/deeper")
    (upper / "etc/new/file").touch()
    fuse.settle(upper, [lower])
    assert sorted(os.listdir(upper / "etc/old")) == []
    assert sorted(os.listdir(upper / "etc/new")) == ["deeper", "file"]
    assert os.getxattr(upper / "etc/old", OPAQUE) == b"y"
    assert OPAQUE not in _xattrs(upper / "etc/new")
    assert OPAQUE not in _xattrs(upper / "etc/new/deeper")


def test_a_name_hidden_below_counts_as_missing(tmp_path: Path) -> None:
    top, bottom, upper = tmp_path / "top", tmp_path / "bottom", tmp_path / "upper"
    (bottom / "a/gone").mkdir(parents=True)
    (top / "a").mkdir(parents=True)
    os.setxattr(top / "a", OPAQUE, b"y")  # the top layer made /a opaque: /a/gone is no more
    _marked(upper / "a/gone")
    fuse.settle(upper, [top, bottom])
    assert OPAQUE not in _xattrs(upper / "a/gone")
    assert fuse._below("a", [top, bottom]) == str(top / "a")
    assert fuse._below("a/gone", [top, bottom]) is None
    assert fuse._below("a/gone", [bottom]) == str(bottom / "a/gone")


def test_a_copy_up_kept_only_for_hard_links_is_dropped(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (upper / "etc").mkdir(parents=True)
    for name, text in (("same", "x\n"), ("changed", "x\n")):
        (lower / "etc" / name).write_text(text)
        os.utime(lower / "etc" / name, ns=(10**9, 10**9))
    (upper / "etc/same").write_text("x\n")
    (upper / "etc/changed").write_text("y\n")
    for name in ("same", "changed"):
        os.utime(upper / "etc" / name, ns=(10**9, 10**9))
        os.setxattr(upper / "etc" / name, "user.fuseoverlayfs.origin", b"etc/x\0")
    fuse.settle(upper, [lower])
    assert sorted(os.listdir(upper / "etc")) == ["changed"]
    assert _xattrs(upper / "etc/changed") == []


def test_fuse_overlayfs_is_chosen_only_where_the_kernel_refuses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from layerbuild.errors import StepFailed

    monkeypatch.setattr(fuse, "in_user_namespace", lambda: True)
    monkeypatch.setattr(fuse.shutil, "which", lambda name, path=None: f"/usr/bin/{name}")
    monkeypatch.setattr(fuse.os, "access", lambda path, mode: True)
    monkeypatch.delenv(fuse.ENV, raising=False)
    monkeypatch.setattr(fuse, "kernel_refusal", lambda: "")
    assert fuse._choose() == fuse.Driver("kernel")
    monkeypatch.setattr(fuse, "kernel_refusal", lambda: "Invalid argument")
    chosen = fuse._choose()
    assert chosen.kind == "fuse" and chosen.program == "/usr/bin/fuse-overlayfs"
    assert chosen.why == "the kernel's overlayfs cannot mount here: Invalid argument"
    monkeypatch.setenv(fuse.ENV, "kernel")
    assert fuse._choose() == fuse.Driver("kernel")
    monkeypatch.setenv(fuse.ENV, "fuse")
    monkeypatch.setattr(fuse, "kernel_refusal", lambda: "")
    assert fuse._choose().why == "LAYERBUILD_OVERLAY=fuse"
    monkeypatch.setattr(fuse.shutil, "which", lambda name, path=None: None)
    with pytest.raises(StepFailed, match="install fuse-overlayfs"):
        fuse._choose()
    monkeypatch.setenv(fuse.ENV, "maybe")
    with pytest.raises(StepFailed, match="use kernel, fuse or auto"):
        fuse._choose()
    monkeypatch.setattr(fuse, "in_user_namespace", lambda: False)  # root: always the kernel's
    monkeypatch.setenv(fuse.ENV, "fuse")
    assert fuse._choose() == fuse.Driver("kernel")
