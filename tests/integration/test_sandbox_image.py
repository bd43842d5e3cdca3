"""Hostile images cannot aim the sandbox at the host; image files are read as the image has them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sandbox import make_layer, need_sandbox, new_root, no_mount_left, sentinel, sh
from treeutil import make_busybox_rootfs

from layerbuild.errors import StepFailed
from layerbuild.sandbox import (
    Mount,
    RunSpec,
    export_merged,
    glob_in_image,
    read_image_file,
    read_image_files,
    resolve_in_image,
    run_step,
)

__all__ = ["sentinel"]  # a fixture, used by name


@pytest.fixture(autouse=True)
def _guard() -> Iterator[None]:
    need_sandbox()
    with no_mount_left():
        yield


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


def up(n: int) -> str:
    return "../" * n


def test_symlinked_system_mount_points_stay_in_the_image(base: Path, tmp_path: Path,
                                                         sentinel: Path) -> None:
    s = str(sentinel)
    top = make_layer(tmp_path / "top", {
        "etc/resolv.conf": ("link", f"{s}/pwned"),
        "etc/hosts": ("link", f"{up(9)}{s}/hosts"),
        "proc": ("link", f"{up(4)}{s}/p"),
        "dev": ("link", f"{s}/d"),
        "mnt": ("link", s),
    })
    ctx = make_layer(tmp_path / "ctx", {"f": "from the context\n"})
    root = new_root(tmp_path, top, base)
    code, out = sh(root, "cat /etc/resolv.conf | wc -l; grep -c buildkitsandbox /etc/hosts; "
                   "cat /proc/self/status | grep -c ^Pid; echo x >/dev/null && echo dev-ok; "
                   "cat /mnt/ctx/f; stat -c %a /tmp", mounts=(Mount("bind", "/mnt/ctx", ctx),))
    assert code == 0, out
    resolv = Path("/etc/resolv.conf").read_text().count("\n")
    assert out.splitlines() == [str(resolv), "1", "1", "dev-ok", "from the context", "1777"]
    assert os.listdir(root.upper) == []


def test_mount_points_that_collide_fail_clearly(base: Path, tmp_path: Path,
                                                sentinel: Path) -> None:
    top = make_layer(tmp_path / "top", {
        "etc/resolv.conf": ("link", f"{sentinel}/pwned"),
        "proc": ("link", f"{up(4)}{sentinel}"),
        "dev": ("link", str(sentinel)),
    })
    with pytest.raises(StepFailed, match=f"/proc and /dev both lead to {sentinel}"):
        sh(new_root(tmp_path, top, base), "true")


@pytest.mark.parametrize(("entries", "error"), [
    ({"proc": ("link", "/")}, "/proc: it resolves to the image's root"),
    ({"proc": "not a dir"}, "/proc is not a directory in the image"),
    ({"etc/hosts": ("dir",)}, "/etc/hosts is a directory in the image"),
    ({"a": ("link", "b"), "b": ("link", "a"), "etc/hosts": ("link", "/a")},
     "too many levels of symbolic links"),
])
def test_bad_mount_points_fail_clearly(base: Path, tmp_path: Path, entries: dict[str, object],
                                       error: str) -> None:
    top = make_layer(tmp_path / "top", entries)
    with pytest.raises(StepFailed, match=error):
        sh(new_root(tmp_path, top, base), "true")


def test_workdir_through_a_climbing_symlink(base: Path, tmp_path: Path,
                                            sentinel: Path) -> None:
    top = make_layer(tmp_path / "top", {"w": ("link", f"{up(6)}{sentinel}")})
    root = new_root(tmp_path, top, base)
    assert sh(root, "pwd", cwd="/w/sub") == (0, f"{sentinel}/sub\n")
    assert (root.upper / str(sentinel).lstrip("/") / "sub").is_dir()


def test_scaffold_directories_copy_the_image_attributes(base: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    image = os.stat(base / "etc")
    code, out = sh(root, "stat -c '%a %u %Y' /etc /tmp; touch /etc/new")
    assert code == 0, out
    assert out.splitlines()[0] == f"755 0 {int(image.st_mtime)}"
    assert out.splitlines()[1].startswith("1777 0 ")
    copied = os.stat(root.upper / "etc")
    assert (copied.st_mode, copied.st_uid) == (image.st_mode, image.st_uid)
    assert sorted(os.listdir(root.upper / "etc")) == ["new"]


@pytest.fixture
def top(tmp_path: Path, sentinel: Path) -> Iterator[Path]:
    """A layer of tricky links, whiteouts and an opaque dir; the host has a file it names."""
    secret = sentinel / "secret"
    secret.write_text("host secret\n")
    yield make_layer(tmp_path / "top", {
        "abs": ("link", "/etc/passwd"),
        "rel": ("link", "etc/../etc/group"),
        "hostonly": ("link", str(secret)),
        "esc": ("link", f"{up(12)}{secret}"),
        "etc/motd": ("whiteout",),
        "data": ("opaque",),
        "data/c": "only c\n",
    })
    secret.unlink()


def test_read_image_file_resolves_inside_the_image(base: Path, top: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, top, base)
    passwd = (base / "etc/passwd").read_bytes()
    assert read_image_file(root, "/abs") == passwd
    assert read_image_file(root, "/rel") == (base / "etc/group").read_bytes()
    assert read_image_file(root, "/hostonly") is None
    assert read_image_file(root, "/esc") is None
    assert read_image_files(root, ["/etc/passwd", "/nope", "/etc/nope/x"]) == [passwd, None, None]


def test_read_image_file_honours_whiteouts_and_opaque_dirs(base: Path, top: Path,
                                                           tmp_path: Path) -> None:
    root = new_root(tmp_path, top, base)
    got = read_image_files(root, ["/etc/motd", "/etc/motd.hardlink", "/data/a", "/data/c"])
    assert got == [None, b"hello from layerbuild\n", None, b"only c\n"]


def test_read_image_file_refuses_dirs_and_big_files(base: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    with pytest.raises(StepFailed, match="not a regular file"):
        read_image_file(root, "/etc")
    with pytest.raises(StepFailed, match="larger than 10 bytes"):
        read_image_file(root, "/etc/passwd", limit=10)


def test_reads_see_the_step_upper_dir(base: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    assert run_step(root, _spec("echo new >/etc/motd; rm /etc/group"), lambda _: None) == 0
    assert read_image_files(root, ["/etc/motd", "/etc/group"]) == [b"new\n", None]


def test_resolve_in_image(base: Path, top: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, top, base)
    assert resolve_in_image(root, "/abs") == "/etc/passwd"
    assert resolve_in_image(root, "/rel") == "/etc/group"
    assert resolve_in_image(root, "/../../bin/../etc") == "/etc"
    assert resolve_in_image(root, "/hostonly") is None


def test_glob_in_image(base: Path, top: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, top, base)
    (tmp_path / "host").mkdir()
    (tmp_path / "host/file").write_text("x")
    got = glob_in_image(root, ["/etc/motd*", "/data/*", "/bin/suid-t??l", "/nothing/*",
                               f"{tmp_path}/host/*", "/etc/pass[w]d"])
    assert got == [["/etc/motd.hardlink"], ["/data/c"], ["/bin/suid-tool"], [], [],
                   ["/etc/passwd"]]  # whiteouts, opaque dirs; never the host's files
    dots = make_layer(tmp_path / "dots", {"d/.hidden": "h\n", "d/shown": "s\n"})
    assert glob_in_image(new_root(tmp_path, dots), ["/d/*"]) == [["/d/.hidden", "/d/shown"]]


def _spec(script: str) -> RunSpec:
    return RunSpec(("/bin/sh", "-c", script), ("PATH=/bin",))


def test_export_merged_applies_whiteouts_and_stays_in_dest(base: Path, top: Path,
                                                           tmp_path: Path,
                                                           sentinel: Path) -> None:
    extra = make_layer(tmp_path / "extra", {"x/y": ("link", str(sentinel)),
                                            "etc/motd": "again\n"})
    dest = tmp_path / "out"
    dest.mkdir()
    export_merged((extra, top, base), dest)
    assert (dest / "etc/motd").read_text() == "again\n"
    assert sorted(os.listdir(dest / "data")) == ["c"]
    assert os.readlink(dest / "x/y") == str(sentinel)
    assert os.readlink(dest / "abs") == "/etc/passwd"
    assert (dest / "etc/passwd").read_bytes() == (base / "etc/passwd").read_bytes()
    assert os.stat(dest / "etc/motd.hardlink").st_nlink == 1  # its partner was replaced
    assert os.stat(dest / "bin/suid-tool").st_mode & 0o7777 == 0o4755
    assert os.stat(dest / "home/user/notes").st_uid == 1000
    export_merged((), dest)  # an empty image: nothing to add
