"""Test helpers: snapshots of directory trees, and the requirement checks for real tools."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip when a real tool or privilege is missing, but never in CI: there it fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (mknod, overlay mounts, chown)")


def need_tool(*names: str) -> None:
    for name in names:
        need(shutil.which(name) is not None, f"needs {name} on PATH")


def docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def entry(path: Path, with_mtime: bool = False) -> tuple[object, ...]:
    """What a file is: type, mode, owner, size and content digest or link target."""
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            what: object = hashlib.file_digest(f, "sha256").hexdigest()
        size = st.st_size
    elif stat.S_ISLNK(st.st_mode):
        what, size = os.readlink(path), 0
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        what, size = (os.major(st.st_rdev), os.minor(st.st_rdev)), 0
    else:
        what, size = None, 0
    out: tuple[object, ...] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, what)
    if with_mtime and not stat.S_ISDIR(st.st_mode):
        out += (int(st.st_mtime),)
    return out


def snapshot(root: Path, skip: frozenset[str] = frozenset(),
             with_mtime: bool = False) -> dict[str, tuple[object, ...]]:
    """Every path under root (relative) mapped to its `entry`."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in [*dirs, *files]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip or rel.split("/", 1)[0] in skip:
                continue
            out[rel] = entry(Path(dirpath) / name, with_mtime)
    return out


def inode_groups(root: Path) -> list[list[str]]:
    """Sets of paths under root that are hard links of one file."""
    groups: dict[tuple[int, int], list[str]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                groups.setdefault((st.st_dev, st.st_ino), []).append(
                    os.path.relpath(path, root))
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def make_busybox_rootfs(root: Path) -> Path:
    """A small root filesystem around Debian's static busybox, with links, owners and modes."""
    busybox = Path("/bin/busybox")
    need(busybox.exists(), "needs /bin/busybox (Debian package busybox-static)")
    for d in ("bin", "etc", "root", "tmp", "home/user", "var/empty", "usr/bin", "data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin/busybox")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (root / "usr/bin/env").symlink_to("/bin/busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "user:x:1000:1000:user:/home/user:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nuser:x:1000:\n")
    (root / "etc/motd").write_text("hello from layerbuild\n")
    os.link(root / "etc/motd", root / "etc/motd.hardlink")
    (root / "data/a").write_text("a\n")
    (root / "data/b").write_text("b\n")
    (root / "home/user/notes").write_text("owned by user\n")
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    suid = root / "bin/suid-tool"
    suid.write_bytes(b"#!/bin/sh\necho suid\n")
    if os.geteuid() == 0:
        for p in (root / "home/user", root / "home/user/notes"):
            os.chown(p, 1000, 1000)
    os.chmod(suid, 0o4755)
    return root


def make_tar(src: Path, dest: Path) -> Path:
    """A plain tar of a directory's contents, numeric owners, as `tar -C src -cf dest .`."""
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(src), "-cf", str(dest),
                    "."], check=True)
    return dest
