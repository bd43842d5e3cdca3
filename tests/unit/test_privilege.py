"""What needs root, said in one line to a user who is not root."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from layerbuild import privilege
from layerbuild.privilege import NeedsRoot, check_root, is_denied, store_hint


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privilege.os, "geteuid", lambda: 65534)


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privilege.os, "geteuid", lambda: 0)


@pytest.mark.parametrize("command", ["build", "import", "load", "pull"])
def test_commands_that_make_layers_say_they_need_root(not_root: None, command: str) -> None:
    with pytest.raises(NeedsRoot) as caught:
        check_root(command)
    message = str(caught.value)
    assert message.startswith(f"`layerbuild {command}` needs root: ")
    assert "rootless use is not supported yet" in message and "\n" not in message


@pytest.mark.parametrize("command", ["images", "inspect", "history", "save", "tag", "rmi",
                                     "prune", "du", "push", "diff"])
def test_commands_that_only_read_or_rename_need_no_root(not_root: None, command: str) -> None:
    check_root(command)


def test_a_dry_run_needs_no_root(not_root: None) -> None:
    check_root("build", dry_run=True)


def test_root_may_do_anything(root: None) -> None:
    for command in privilege.NEEDS_ROOT:
        check_root(command)
    assert store_hint(Path("/var/lib/layerbuild")) == ""


def test_a_store_out_of_reach_says_whose_it_is(not_root: None, tmp_path: Path) -> None:
    hint = store_hint(tmp_path / "missing" / "store")
    assert "s: run layerbuild as root, or give --root DIR" in hint
    assert hint.startswith(" (it is ")


def test_denied_means_inside_the_store(not_root: None, tmp_path: Path) -> None:
    store = tmp_path / "store"
    inside = PermissionError(errno.EACCES, "Permission denied", str(store / "tmp" / "x"))
    outside = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "other"))
    assert is_denied(inside, store)
    assert not is_denied(outside, store)
    assert not is_denied(FileNotFoundError(errno.ENOENT, "gone", str(store)), store)
