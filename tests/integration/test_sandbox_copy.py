"""COPY through the sandbox: Docker's rules, sources kept in their root, destinations in-image."""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sandbox import entries, make_layer, need_sandbox, new_root, no_mount_left, sentinel
from treeutil import make_busybox_rootfs

from layerbuild.errors import StepFailed, UnsafePath
from layerbuild.sandbox import CopyItem, copy_into
from layerbuild.users import UnknownUser

__all__ = ["sentinel"]  # a fixture, used by name
T1, T2 = 1_000_000_000, 1_100_000_000


@pytest.fixture(autouse=True)
def _guard() -> Iterator[None]:
    need_sandbox()
    with no_mount_left():
        yield


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("copy") / "rootfs")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    """A build context with modes, times, links, a fifo, an xattr and links that escape."""
    (tmp_path / "outside").write_text("outside the context\n")
    root = make_layer(tmp_path / "ctx", {
        "dir/a": "a\n", "dir/sub/b": "b\n", "dir/link": ("link", "a"), "dir/owned": "o\n",
        "file.txt": "file\n", "esc": ("link", "../outside"), "abs": ("link", "/etc/passwd"),
        "inner": ("link", "dir"), "dir/sub/up": ("link", "../a"),
    })
    os.link(root / "dir/a", root / "dir/hard")
    os.mkfifo(root / "dir/fifo", 0o644)
    os.chmod(root / "dir", 0o751)
    os.chmod(root / "dir/a", 0o640)
    os.chmod(root / "dir/sub", 0o700)
    os.chmod(root / "dir/sub/b", 0o755)
    os.chmod(root / "file.txt", 0o600)
    os.chown(root / "dir/owned", 1234, 5678)
    os.setxattr(root / "dir/a", "user.note", b"kept")
    os.utime(root / "dir/a", (T1, T1))
    os.utime(root / "dir/sub", (T2, T2))
    return root


def meta(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_dir_contents_with_their_metadata(base: Path, ctx: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    copy_into(root, ctx, [CopyItem("dir", "/dst")])
    dst = root.upper / "dst"
    assert entries(dst) == {"a", "hard", "link", "owned", "fifo", "sub", "sub/b", "sub/up"}
    assert meta(dst) == (0o755, 0, 0)
    assert meta(dst / "a") == (0o640, 0, 0)
    assert meta(dst / "sub") == (0o700, 0, 0)
    assert meta(dst / "sub/b") == (0o755, 0, 0)
    assert meta(dst / "owned") == (0o644, 1234, 5678)  # None keeps the source's owner
    assert os.stat(dst / "a").st_mtime == T1
    assert os.stat(dst / "sub").st_mtime == T2
    assert os.readlink(dst / "link") == "a"
    assert os.readlink(dst / "sub/up") == "../a"
    assert os.stat(dst / "a").st_ino == os.stat(dst / "hard").st_ino
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    assert os.getxattr(dst / "a", "user.note") == b"kept"
    assert (dst / "sub/b").read_text() == "b\n"


def test_owner_and_mode_given(base: Path, ctx: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    copy_into(root, ctx, [CopyItem("dir", "/new/o", uid=1000, gid=1001, mode=0o640)])
    assert meta(root.upper / "new") == (0o755, 1000, 1001)
    assert meta(root.upper / "new/o") == (0o755, 1000, 1001)
    for rel in ("a", "owned", "sub", "sub/b", "fifo"):
        assert meta(root.upper / "new/o" / rel) == (0o640, 1000, 1001), rel
    assert os.lstat(root.upper / "new/o/link")[4:6] == (1000, 1001)


def test_file_destinations(base: Path, ctx: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    copy_into(root, ctx, [CopyItem("file.txt", "/f/"), CopyItem("file.txt", "/etc"),
                          CopyItem("file.txt", "/x/renamed", uid=0, gid=0, mode=0o755),
                          CopyItem("dir/./sub/../a", "/y")])
    assert (root.upper / "f/file.txt").read_text() == "file\n"
    assert meta(root.upper / "f/file.txt") == (0o600, 0, 0)
    assert (root.upper / "etc/file.txt").read_text() == "file\n"
    assert meta(root.upper / "x/renamed") == (0o755, 0, 0)
    assert (root.upper / "y").read_text() == "a\n"
    with pytest.raises(StepFailed, match="cannot replace the directory /etc"):
        copy_into(root, ctx, [CopyItem("file.txt", "/etc", into_existing_dir=False)])


def test_sources_stay_in_their_root(base: Path, ctx: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    for source in ("../outside", "dir/../../outside", "esc/x"):
        with pytest.raises(UnsafePath, match="leads out of its root"):
            copy_into(root, ctx, [CopyItem(source, "/x")])
    with pytest.raises(UnsafePath):
        copy_into(root, ctx, [CopyItem("esc", "/x")], follow_source_symlinks=True)
    with pytest.raises(StepFailed, match="no such file"):  # the context's /etc, not the host's
        copy_into(root, ctx, [CopyItem("abs", "/x")], follow_source_symlinks=True)
    copy_into(root, ctx, [CopyItem("esc", "/e")])
    copy_into(root, ctx, [CopyItem("inner/a", "/ia"), CopyItem("inner", "/id", mode=0o644)],
              follow_source_symlinks=True)
    assert os.readlink(root.upper / "e") == "../outside"  # a link is copied, not followed
    assert (root.upper / "ia").read_text() == "a\n"
    assert (root.upper / "id/a").read_text() == "a\n"
    copy_into(root, ctx, [CopyItem("inner", "/il")])
    assert os.readlink(root.upper / "il") == "dir"
    # a followed link keeps its own name in the destination dir (Docker's COPY --from)
    copy_into(root, ctx, [CopyItem("dir/link", "/followed/")], follow_source_symlinks=True)
    assert (root.upper / "followed/link").read_text() == "a\n"
    assert not (root.upper / "followed/a").exists()


def test_destinations_resolve_inside_the_image(base: Path, ctx: Path, tmp_path: Path,
                                               sentinel: Path) -> None:
    top = make_layer(tmp_path / "top", {"app": ("link", "/etc"), "app2": ("link", str(sentinel)),
                                        "app3": ("link", "../../../../../../etc")})
    name = f"lbtest-{random.getrandbits(32):x}"
    root = new_root(tmp_path, top, base)
    copy_into(root, ctx, [CopyItem("file.txt", f"/app/{name}"),
                          CopyItem("dir", f"/app2/{name}"),
                          CopyItem("file.txt", f"/app3/{name}.3")])
    assert (root.upper / "etc" / name).read_text() == "file\n"
    assert (root.upper / "etc" / f"{name}.3").read_text() == "file\n"
    assert (root.upper / str(sentinel).lstrip("/") / name / "a").read_text() == "a\n"
    assert not os.path.lexists(f"/etc/{name}")
    assert not os.path.lexists(f"/etc/{name}.3")


def test_overwriting_image_files(base: Path, ctx: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    copy_into(root, ctx, [CopyItem("file.txt", "/etc/motd"), CopyItem("file.txt", "/bin/ls")])
    assert (root.upper / "etc/motd").read_text() == "file\n"
    assert not os.path.islink(root.upper / "bin/ls")
    assert (base / "etc/motd").read_text() == "hello from layerbuild\n"
    with pytest.raises(StepFailed, match="not a directory in the image"):
        copy_into(root, ctx, [CopyItem("dir", "/etc/passwd")])


def test_copy_from_a_layer_stack(base: Path, tmp_path: Path) -> None:
    stage = make_layer(tmp_path / "stage", {"etc/motd": ("whiteout",), "etc/new": "new\n"})
    root = new_root(tmp_path, base)
    copy_into(root, (stage, base), [CopyItem("etc", "/from")])
    assert {"passwd", "group", "new", "motd.hardlink"} <= set(os.listdir(root.upper / "from"))
    assert "motd" not in os.listdir(root.upper / "from")
    copy_into(new_root(tmp_path), (), [])  # an empty stage is a valid source


def test_items_one_entry_at_a_time(base: Path, ctx: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    copy_into(root, ctx, [CopyItem("dir", "/nr", recursive=False),
                          CopyItem("dir/sub", "/nr/sub", recursive=False),
                          CopyItem("dir/sub/b", "/nr/sub/b", into_existing_dir=False)])
    assert entries(root.upper / "nr") == {"sub", "sub/b"}
    assert meta(root.upper / "nr") == (0o751, 0, 0)
    assert meta(root.upper / "nr/sub") == (0o700, 0, 0)
    assert os.stat(root.upper / "nr/sub").st_mtime == T2  # kept although b was added later


def test_hard_links_are_kept_within_a_link_group(base: Path, ctx: Path, tmp_path: Path) -> None:
    """Items walked one entry at a time keep their links (one group); another group, as a
    second source of the same COPY is, copies the file again."""
    root = new_root(tmp_path, base)
    copy_into(root, ctx, [CopyItem("dir/a", "/g/a", into_existing_dir=False),
                          CopyItem("dir/hard", "/g/hard", into_existing_dir=False),
                          CopyItem("dir/hard", "/g/other", into_existing_dir=False,
                                   link_group=1)])
    inode = os.stat(root.upper / "g/a").st_ino
    assert os.stat(root.upper / "g/hard").st_ino == inode
    assert os.stat(root.upper / "g/other").st_ino != inode
    assert (root.upper / "g/other").read_text() == "a\n"


def test_an_existing_directory_is_left_untouched(base: Path, tmp_path: Path) -> None:
    """Copying a directory onto one the image has writes nothing, so the upper dir stays empty
    (not even the parent copied up): what WORKDIR of an existing directory needs."""
    root = new_root(tmp_path, base)
    empty = tmp_path / "empty"
    empty.mkdir()
    copy_into(root, empty, [CopyItem(".", "/home/user", 1000, 1000, 0o755, recursive=False,
                                     made_time=T1)])
    assert os.listdir(root.upper) == []


def test_as_user_owns_the_items_by_the_images_passwd(base: Path, ctx: Path,
                                                     tmp_path: Path) -> None:
    top = make_layer(tmp_path / "top", {
        "etc/passwd": "root:x:0:0::/root:/bin/sh\nsvc:x:2000:2100::/var/svc:/bin/sh\n",
        "etc/group": "svc:x:2100:\nstaff:x:50:svc\n"})
    root = new_root(tmp_path, top, base)
    copy_into(root, ctx, [CopyItem("file.txt", "/srv/f", 7, 7)], as_user="svc:staff")
    assert meta(root.upper / "srv/f")[1:] == (2000, 50)
    with pytest.raises(UnknownUser, match=r"^unable to find user nobody-here: "):
        copy_into(new_root(tmp_path, top, base), ctx, [CopyItem("file.txt", "/g")],
                  as_user="nobody-here")


def test_as_user_never_opens_a_device_node_of_the_image(base: Path, ctx: Path,
                                                        tmp_path: Path) -> None:
    top = tmp_path / "devtop"
    (top / "etc").mkdir(parents=True)
    os.mknod(top / "etc/passwd", 0o644 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's
    root = new_root(tmp_path, top, base)
    with pytest.raises(StepFailed, match=r"^/etc/passwd in the image: Permission denied$"):
        copy_into(root, ctx, [CopyItem("file.txt", "/f")], as_user="")
    assert entries(root.upper) == set()


def test_entries_below_a_new_directory_keep_every_rule(base: Path, ctx: Path, tmp_path: Path,
                                                       sentinel: Path) -> None:
    """What goes below a directory the copy makes is written to the upper dir directly: the
    same metadata, replacement and in-image destinations as through the overlay."""
    top = make_layer(tmp_path / "top", {"app": ("link", str(sentinel))})
    root = new_root(tmp_path, top, base)
    copy_into(root, ctx, [
        CopyItem("dir", "/app/new", recursive=False, entries="a\0sub\0sub/b\0link\0hard\0"),
        CopyItem("file.txt", "/app/new/sub/b", into_existing_dir=False),  # replaces b
        CopyItem("file.txt", "/app/new/sub/"),  # into the new directory
    ])
    new = root.upper / str(sentinel).lstrip("/") / "new"
    assert entries(new) == {"a", "sub", "sub/b", "sub/file.txt", "link", "hard"}
    assert (new / "a").read_text() == "a\n"
    assert meta(new / "a") == (0o640, 0, 0)
    assert os.getxattr(new / "a", "user.note") == b"kept"
    assert os.stat(new / "a").st_mtime == T1
    assert os.readlink(new / "link") == "a"
    assert (new / "sub/b").read_text() == "file\n"
    assert meta(new / "sub") == (0o700, 0, 0)
    assert os.stat(new / "sub").st_mtime == T2  # as the source's, though written into later
    assert os.stat(new / "hard").st_ino == os.stat(new / "a").st_ino  # one link group
    with pytest.raises(StepFailed, match="cannot replace the directory"):
        copy_into(new_root(tmp_path, top, base), ctx, [
            CopyItem("dir", "/app/again", recursive=False, entries="sub\0"),
            CopyItem("file.txt", "/app/again/sub", into_existing_dir=False)])


def test_a_symlink_written_below_a_new_directory_leads_into_the_image(
        base: Path, tmp_path: Path) -> None:
    """A copy through a symlink it wrote itself (one that climbs far above the image's root)
    reaches the image's directory, which keeps the image's times, not those of a host
    directory the same climb from the upper dir would reach."""
    climb = "../" * 40 + "etc"
    src = make_layer(tmp_path / "src", {"links/toetc": ("link", climb), "f": "f\n"})
    root = new_root(tmp_path, base)
    copy_into(root, src, [CopyItem("links", "/app/new", recursive=False, entries="toetc\0"),
                          CopyItem("f", "/app/new/toetc/")])
    assert (root.upper / "etc/f").read_text() == "f\n"
    assert os.readlink(root.upper / "app/new/toetc") == climb
    assert os.stat(root.upper / "etc").st_mtime_ns == os.stat(base / "etc").st_mtime_ns
    assert os.stat("/etc").st_mtime_ns != os.stat(base / "etc").st_mtime_ns
