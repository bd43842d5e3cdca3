"""Comparing images: config fields, history entries, layer paths, and the text they render to."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from layerbuild.digest import Digest
from layerbuild.image import Image, canonical_json
from layerbuild.imagediff import (
    Difference,
    ImageDiff,
    compare_configs,
    compare_history,
    diff_images,
    render,
)
from layerbuild.ingest import clamp_mtimes
from layerbuild.layer.contents import (
    PathInfo,
    compare_listings,
    compare_paths,
    describe,
    scan_layer,
    with_contents,
)
from layerbuild.store import Store

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.*)")
T0 = 1_600_000_000
DIFF_A, DIFF_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def config(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"a.b": "1"},
                   "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30}},
        "rootfs": {"type": "layers", "diff_ids": [DIFF_A]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD x /"}],
    }
    base.update(changes)
    return base


def runtime(**changes: Any) -> dict[str, Any]:
    section = dict(config()["config"])
    section.update(changes)
    return section


def fields(diffs: list[Difference]) -> list[tuple[str, str]]:
    return [(d.where, d.what) for d in diffs]


# --- config and history ----------------------------------------------------------------------


def test_equal_configs_have_no_differences() -> None:
    assert compare_configs(config(), config()) == []
    assert compare_history(config()["history"], config()["history"]) == []


def test_top_level_fields_name_the_field_and_both_values() -> None:
    diffs = compare_configs(config(), config(architecture="arm64", created="2025-01-01T00:00:00Z",
                                             author="me"))
    assert [str(d) for d in diffs] == [
        'config: architecture: "amd64" != "arm64"',
        'config: created: "2024-01-01T00:00:00Z" != "2025-01-01T00:00:00Z"',
        'config: author: (absent) != "me"',
    ]


def test_diff_ids_are_compared_layer_by_layer() -> None:
    more = config(rootfs={"type": "layers", "diff_ids": [DIFF_A, DIFF_B]})
    other = config(rootfs={"type": "layers", "diff_ids": [DIFF_B]})
    assert [str(d) for d in compare_configs(config(), more)] == [
        f'config: rootfs.diff_ids[1]: (absent) != "{DIFF_B}"']
    assert [str(d) for d in compare_configs(config(), other)] == [
        f'config: rootfs.diff_ids[0]: "{DIFF_A}" != "{DIFF_B}"']


@pytest.mark.parametrize(("key", "value", "what"), [
    ("Env", ["PATH=/bin", "A=1"], "config.Env"), ("Cmd", ["true"], "config.Cmd"),
    ("Entrypoint", ["/init"], "config.Entrypoint"), ("WorkingDir", "/app", "config.WorkingDir"),
    ("User", "user", "config.User"), ("StopSignal", "SIGINT", "config.StopSignal"),
    ("ExposedPorts", {"80/tcp": {}}, "config.ExposedPorts"),
    ("Volumes", {"/data": {}}, "config.Volumes"),
    ("Shell", ["/bin/ash", "-c"], "config.Shell"), ("OnBuild", ["RUN true"], "config.OnBuild"),
    ("ArgsEscaped", True, "config.ArgsEscaped"), ("SomethingNew", [1], "config.SomethingNew"),
])
def test_every_runtime_key_is_compared(key: str, value: object, what: str) -> None:
    diffs = compare_configs(config(), config(config=runtime(**{key: value})))
    assert fields(diffs) == [("config", what)]


def test_objects_in_both_are_compared_key_by_key() -> None:
    ports = runtime(ExposedPorts={"80/tcp": {}})
    changed = runtime(Labels={"a.b": "2", "new": ""}, ExposedPorts={"80/tcp": {}, "53/udp": {}},
                      Healthcheck={"Test": ["CMD", "true"], "Interval": 60})
    assert [str(d) for d in compare_configs(config(config=ports), config(config=changed))] == [
        'config: config.ExposedPorts["53/udp"]: (absent) != {}',
        "config: config.Healthcheck.Interval: 30 != 60",
        'config: config.Labels["a.b"]: "1" != "2"',
        'config: config.Labels.new: (absent) != ""',
    ]


def test_values_compare_as_json_not_as_python() -> None:
    # True == 1 in Python, but a config holding one or the other is a different config.
    diffs = compare_configs(config(config=runtime(X=1)), config(config=runtime(X=True)))
    assert [str(d) for d in diffs] == ["config: config.X: 1 != true"]
    diffs = compare_configs(config(config=runtime(X=None)), config(config=runtime()))
    assert [str(d) for d in diffs] == ["config: config.X: null != (absent)"]


def test_unknown_top_level_fields_are_compared() -> None:
    diffs = compare_configs(config(docker_version="20.10"), config(docker_version="24.0",
                                                                   **{"os.version": "10"}))
    assert fields(diffs) == [("config", "os.version"), ("config", "docker_version")]


def test_history_entries_field_by_field() -> None:
    left = [{"created": "t1", "created_by": "RUN a", "empty_layer": True}, {"created_by": "X"}]
    right = [{"created": "t2", "created_by": "RUN b", "comment": "c"}, {"created_by": "X"}]
    assert [str(d) for d in compare_history(left, right)] == [
        'history[0]: created: "t1" != "t2"',
        'history[0]: created_by: "RUN a" != "RUN b"',
        'history[0]: comment: (absent) != "c"',
        "history[0]: empty_layer: true != (absent)",
    ]


def test_history_of_other_lengths_says_so_and_shows_the_extra_entry() -> None:
    extra = {"created_by": "ENV A=1", "empty_layer": True}
    assert [str(d) for d in compare_history([], [extra])] == [
        "history: entries: 0 != 1",
        'history[0]: entry: (absent) != {"created_by": "ENV A=1", "empty_layer": true}',
    ]


# --- paths -------------------------------------------------------------------------------------


FILE = PathInfo("file", 0o644, 0, 0, size=2, mtime=T0, content=Digest.of(b"a\n"))


def test_same_path_info_is_no_difference() -> None:
    assert compare_paths(FILE, FILE) is None
    assert compare_listings({"/a": FILE}, {"/a": FILE}) == []


def test_each_differing_attribute_is_named_with_both_values() -> None:
    other = PathInfo("file", 0o4755, 1000, 1001, size=3, mtime=T0 + 61,
                     content=Digest.of(b"bb\n"), xattrs=(("user.x", b"1"),))
    assert compare_paths(FILE, other) == (
        f"content {FILE.content} != {other.content}, size 2 != 3, mode 0644 != 4755, "
        "uid 0 != 1000, gid 0 != 1001, xattr user.x (absent) != \"1\", "
        "mtime 2020-09-13T12:26:40Z != 2020-09-13T12:27:41Z")


def test_links_devices_and_binary_xattrs() -> None:
    link = PathInfo("symlink", 0o777, link="busybox")
    assert compare_paths(link, PathInfo("symlink", 0o777, link="/bin/busybox")) == (
        'link target "busybox" != "/bin/busybox"')
    hard = PathInfo("hardlink", 0o644, link="/etc/motd")
    assert compare_paths(hard, PathInfo("hardlink", 0o644, link="/etc/issue")) == (
        'link target "/etc/motd" != "/etc/issue"')
    null = PathInfo("char device", 0o666, device=(1, 3))
    assert compare_paths(null, PathInfo("char device", 0o666, device=(1, 5))) == (
        "device 1:3 != 1:5")
    cap = PathInfo("file", xattrs=(("security.capability", b"\x01\x00"),))
    assert compare_paths(PathInfo("file"), cap) == (
        "xattr security.capability (absent) != 0x0100")


def test_whiteouts_and_opaque_dirs_read_as_such() -> None:
    gone = PathInfo("deletion", 0o600)
    assert compare_paths(FILE, gone) == "type file (2 bytes) != deletion"
    assert compare_paths(None, gone) == "(absent) != deletion"
    plain, opaque = PathInfo("directory", 0o755), PathInfo("directory", 0o755, opaque=True)
    assert compare_paths(plain, opaque) == "opaque no != yes"
    assert describe(opaque) == "opaque directory"


def test_listings_are_compared_in_tree_order_with_printable_names() -> None:
    left = {"/a/b": FILE, "/a-b": FILE, "/a": PathInfo("directory", 0o755)}
    right = {"/a-b": FILE, "/a": PathInfo("directory", 0o700), "/z\udcff": FILE}
    assert compare_listings(left, right) == [
        ("/a", "mode 0755 != 0700"),
        ("/a/b", "file (2 bytes) != (absent)"),
        ("/z\\xff", "(absent) != file (2 bytes)"),
    ]


# --- scanning a diff dir -----------------------------------------------------------------------


def _tree(root: Path, text: str) -> Path:
    (root / "d").mkdir(parents=True)
    (root / "d/f").write_text(text)
    os.link(root / "d/f", root / "d/g")
    (root / "d/l").symlink_to("f")
    for path in (root / "d/f", root / "d/l", root / "d"):
        os.utime(path, (T0, T0), follow_symlinks=False)
    return root


def test_scan_reads_files_links_and_hard_links_as_the_tar_would(tmp_path: Path) -> None:
    listing = scan_layer(_tree(tmp_path / "one", "a\n"))
    assert listing.paths["/d/f"] == PathInfo("file", 0o644 & ~_umask(), os.getuid(),
                                             os.getgid(), size=2, mtime=T0)
    assert listing.paths["/d/g"].kind == "hardlink"
    assert listing.paths["/d/g"].link == "/d/f"
    assert listing.paths["/d/l"].link == "f"
    assert set(listing.files) == {"/d/f"}  # a hard link's data is its first name's


def test_stored_layers_hold_the_mtimes_their_tars_have(tmp_path: Path) -> None:
    root = _tree(tmp_path / "one", "a\n")
    clamp_mtimes(root, T0 + 10)  # nothing is newer: nothing changes
    assert {i.mtime for i in scan_layer(root).paths.values()} == {T0}
    clamp_mtimes(root, T0 - 10)
    assert {i.mtime for i in scan_layer(root).paths.values()} == {T0 - 10}


def test_only_files_in_both_layers_are_hashed(tmp_path: Path) -> None:
    one = scan_layer(_tree(tmp_path / "one", "a\n"))
    two = scan_layer(_tree(tmp_path / "two", "b\n"))
    a, b = with_contents(one, two)
    assert a["/d/f"].content == Digest.of(b"a\n")
    assert b["/d/f"].content == Digest.of(b"b\n")
    old, new = Digest.of(b"a\n"), Digest.of(b"b\n")
    assert compare_listings(a, b) == [("/d/f", f"content {old} != {new}")]


@needs_root
def test_scan_shows_whiteouts_opaque_dirs_and_devices(tmp_path: Path) -> None:
    (tmp_path / "opq").mkdir()
    os.setxattr(tmp_path / "opq", "trusted.overlay.opaque", b"y")
    os.setxattr(tmp_path, "trusted.overlay.opaque", b"y")
    os.mknod(tmp_path / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chown(tmp_path / "null", 5, 6)
    paths = scan_layer(tmp_path).paths
    assert paths["/"].opaque
    assert paths["/opq"].opaque and paths["/opq"].xattrs == ()  # overlay's own xattr is no xattr
    assert paths["/gone"] == PathInfo("deletion", 0o600, 0, 0, mtime=paths["/gone"].mtime)
    assert (paths["/null"].kind, paths["/null"].device, paths["/null"].uid) == (
        "char device", (1, 3), 5)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- images ----------------------------------------------------------------------------------


def _image(raw: dict[str, Any], indent: int | None = None) -> Image:
    data = json.dumps(raw, indent=indent).encode() if indent else canonical_json(raw)
    return Image.from_config_bytes(data)


def test_same_image_is_identical_and_renders_nothing(tmp_path: Path) -> None:
    image = _image(config(rootfs={"type": "layers", "diff_ids": []}))
    result = diff_images(Store(tmp_path), image, image)
    assert result.identical and result.differences == ()
    assert render(result, "a", "b") == []


def test_layerless_images_differ_by_config_and_history(tmp_path: Path) -> None:
    empty = {"type": "layers", "diff_ids": []}
    left = _image(config(rootfs=empty))
    right = _image(config(rootfs=empty, config=runtime(User="user"),
                          history=[{"created_by": "USER user", "empty_layer": True}]))
    result = diff_images(Store(tmp_path), left, right)
    assert fields(list(result.differences)) == [
        ("config", "config.User"), ("history[0]", "created"), ("history[0]", "created_by"),
        ("history[0]", "empty_layer")]
    lines = render(result, "one:1", "two:1")
    assert lines[0] == f"one:1 ({left.id.short}) != two:1 ({right.id.short})"
    assert lines[1] == 'config: config.User: (absent) != "user"'


def test_same_json_in_other_bytes_is_still_a_difference(tmp_path: Path) -> None:
    raw = config(rootfs={"type": "layers", "diff_ids": []})
    result = diff_images(Store(tmp_path), _image(raw), _image(raw, indent=2))
    assert not result.identical
    assert fields(list(result.differences)) == [("config", "encoding")]


def test_a_difference_prints_as_one_line() -> None:
    diff = ImageDiff(Digest.of(b"1"), Digest.of(b"2"), (Difference("layer 2", "/a", "x != y"),))
    assert render(diff, "a", "b")[1:] == ["layer 2: /a: x != y"]
