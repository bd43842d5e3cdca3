"""A user who is not root: subordinate ids and the namespace map made of them, where their
store is, which commands enter the user namespace, and what a store out of reach says."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from layerbuild import nsmap, store, userns
from layerbuild.errors import StoreError
from layerbuild.privilege import is_denied, store_hint
from layerbuild.subids import Extent, IdRange, id_map, mapped, ranges

SUBUID = """\
# comment lines and junk are skipped
alice:100000:65536
bob:165536:65536
1001:300000:10
alice:500000:1000
alice:x:1
alice:-5:10
carol:4294967290:100
"""


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns.os, "geteuid", lambda: 65534)


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(userns, "in_user_namespace", lambda: False)
    monkeypatch.setattr(nsmap, "in_user_namespace", lambda: False)  # is_rootless asks it


def test_a_users_ranges_are_found_by_name_or_uid() -> None:
    assert ranges(SUBUID, "alice", 1000) == [IdRange(100000, 65536), IdRange(500000, 1000)]
    assert ranges(SUBUID, "dave", 1001) == [IdRange(300000, 10)]
    assert ranges(SUBUID, "carol", 1002) == []  # runs past the largest id
    assert ranges("", "alice", 1000) == []


def test_the_map_puts_the_user_at_0_and_the_ranges_after_it() -> None:
    extents = id_map(1000, [IdRange(100000, 65536), IdRange(500000, 1000)])
    assert extents == [Extent(0, 1000, 1), Extent(1, 100000, 65536), Extent(65537, 500000, 1000)]
    assert mapped(extents) == 1 + 65536 + 1000
    assert [w for e in extents for w in e.args()][:6] == ["0", "1000", "1", "1", "100000",
                                                          "65536"]
    assert id_map(1000, []) == [Extent(0, 1000, 1)]


def test_a_range_holding_the_users_own_id_skips_it() -> None:
    extents = id_map(1005, [IdRange(1000, 10)])
    assert extents == [Extent(0, 1005, 1), Extent(1, 1000, 5), Extent(6, 1006, 4)]
    assert mapped(extents) == 10


def test_roots_store_and_a_users_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAYERBUILD_ROOT", raising=False)
    monkeypatch.setattr(store, "is_rootless", lambda: False)
    assert store.default_root() == Path("/var/lib/layerbuild")
    monkeypatch.setattr(store, "is_rootless", lambda: True)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert store.default_root() == tmp_path / ".local/share/layerbuild"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert store.default_root() == tmp_path / "data/layerbuild"
    monkeypatch.setenv("XDG_DATA_HOME", "relative")  # not absolute: ignored, as the spec says
    assert store.default_root() == tmp_path / ".local/share/layerbuild"
    monkeypatch.setenv("LAYERBUILD_ROOT", str(tmp_path / "named"))
    assert store.default_root() == tmp_path / "named"


def test_a_store_is_of_one_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(store, "in_user_namespace", lambda: True)
    made = store.Store(tmp_path / "rootless")
    assert made.rootless and (tmp_path / "rootless" / store.USERXATTR).is_file()
    assert store.Store(tmp_path / "rootless").rootless
    monkeypatch.setattr(store, "in_user_namespace", lambda: False)
    with pytest.raises(StoreError, match=r"is a rootless one .* use it as the user who made it"):
        store.Store(tmp_path / "rootless")
    assert not store.Store(tmp_path / "roots").rootless
    monkeypatch.setattr(store, "in_user_namespace", lambda: True)
    with pytest.raises(StoreError, match=r"was made by root .* leave out --root"):
        store.Store(tmp_path / "roots")


def test_root_gets_no_hint(root: None) -> None:
    assert store_hint(Path("/var/lib/layerbuild")) == ""


def test_a_store_out_of_reach_says_whose_it_is(not_root: None, tmp_path: Path) -> None:
    hint = store_hint(tmp_path / "missing" / "store")
    assert hint.startswith(" (it is ")
    assert "s: leave out --root for a store of your own, give --root DIR" in hint


def test_denied_means_inside_the_store(not_root: None, tmp_path: Path) -> None:
    root_dir = tmp_path / "store"
    inside = PermissionError(errno.EACCES, "Permission denied", str(root_dir / "tmp" / "x"))
    outside = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "other"))
    assert is_denied(inside, root_dir)
    assert not is_denied(outside, root_dir)
    assert not is_denied(FileNotFoundError(errno.ENOENT, "gone", str(root_dir)), root_dir)


def test_info_names_the_fix_for_each_missing_part() -> None:
    from layerbuild.hostcheck import Facts, render

    lacking = render(Facts(rootless=True, user="ann", store="/home/ann/.local/share/layerbuild",
                           kernel="5.4.0", userns_max=0, userns_clone=None,
                           apparmor_restricts=None, overlay="Operation not permitted",
                           slirp4netns=None))
    text = "\n".join(lacking)
    assert "User namespaces:  off\n" in text and "user.max_user_namespaces" in text
    assert text.count("fix: add a range for ann to /etc/subuid and /etc/subgid") == 2
    assert "install newuidmap and newgidmap (Debian's package uidmap)" in text
    assert ("Overlay:          cannot mount: the kernel's cannot mount here: Operation not "
            "permitted") in text
    assert "install fuse-overlayfs (Debian's package fuse-overlayfs), or use Linux 5.11" in text
    assert "install slirp4netns" in text
    whole = render(Facts(rootless=False, user="root", store="/var/lib/layerbuild",
                         kernel="6.1", userns_max=100, userns_clone=True,
                         apparmor_restricts=False, slirp4netns="/usr/bin/slirp4netns",
                         tun_usable=True))
    assert whole[0] == "Mode:             root" and not any("fix:" in line for line in whole)


def test_info_says_which_overlay_a_rootless_build_mounts() -> None:
    from dataclasses import replace

    from layerbuild.hostcheck import Facts, render

    facts = Facts(rootless=True, user="ann", store="/s", kernel="5.10.0", userns_max=100,
                  userns_clone=True, apparmor_restricts=False, overlay="Invalid argument",
                  fuse="/usr/bin/fuse-overlayfs", fuse_usable=True)

    def overlay(f: Facts) -> list[str]:
        lines = render(f)
        at = next(i for i, line in enumerate(lines) if line.startswith("Overlay:"))
        return lines[at:at + 2] if lines[at + 1].strip().startswith("fix:") else lines[at:at + 1]

    assert overlay(facts) == ["Overlay:          fuse-overlayfs /usr/bin/fuse-overlayfs (the "
                              "kernel's cannot mount here: Invalid argument)"]
    assert overlay(replace(facts, fuse_usable=False))[1].endswith(
        "fix: `chmod 0666 /dev/fuse` (udev's usual mode)")
    kernel = replace(facts, overlay="")
    assert overlay(kernel) == ["Overlay:          kernel overlayfs with userxattr"]
    assert overlay(replace(kernel, overlay_setting="fuse")) == [
        "Overlay:          fuse-overlayfs /usr/bin/fuse-overlayfs (LAYERBUILD_OVERLAY=fuse)"]
