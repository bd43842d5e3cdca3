"""Which overlay a rootless build mounts, and making a fuse-overlayfs upper dir a layer.

Rootless, the kernel's overlayfs mounts in a user namespace from Linux 5.11 on (`userxattr`).
Where it does not, fuse-overlayfs (Buildah's and podman's fallback) mounts the same stacks.
`LAYERBUILD_OVERLAY=kernel|fuse` forces one; by default the kernel's is tried once per process
and fuse-overlayfs used only when that fails and the program and /dev/fuse are there. Root
always uses the kernel's.

fuse-overlayfs marks an opaque dir its own way (`user.fuseoverlayfs.opaque` and the entries
`.wh..wh..opq` and `.wh..opq`); `settle` turns that into overlayfs's own `user.overlay.opaque`,
so a store holds one form whichever overlay made its layers, and the layer is the one the
kernel's would have made. Whiteouts are 0/0 character devices in both.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import StepFailed
from layerbuild.layer.whiteout import OPAQUE, is_opaque, is_whiteout, opaque_xattr, read_xattrs
from layerbuild.nsmap import in_user_namespace
from layerbuild.sandbox import libc

ENV = "LAYERBUILD_OVERLAY"
_FUSE_OPAQUE = "user.fuseoverlayfs.opaque"
_FUSE_XATTRS = "user.fuseoverlayfs."
_FUSE_OPAQUE_DEV = ".wh..opq"
_FUSE_ORIGIN = "user.fuseoverlayfs.origin"
_LOCK = threading.Lock()
_chosen: list[Driver] = []


@dataclass(frozen=True)
class Driver:
    """The overlay this process mounts: "kernel" or "fuse" (with the program's path), and why."""

    kind: str
    program: str | None = None
    why: str = ""
    """Why fuse-overlayfs is used (the kernel's refusal, or the setting)."""


def driver() -> Driver:
    """The overlay every sandbox child of this process mounts (decided once)."""
    with _LOCK:
        if not _chosen:
            _chosen.append(_choose())
        return _chosen[0]


def _choose() -> Driver:
    wanted = os.environ.get(ENV, "")
    if wanted not in ("", "auto", "kernel", "fuse"):
        raise StepFailed(f"{ENV}={wanted!r}: use kernel, fuse or auto")
    if not in_user_namespace() or wanted == "kernel":
        return Driver("kernel")
    if wanted == "fuse":
        return _fuse(f"{ENV}=fuse")
    refused = kernel_refusal()
    if not refused:
        return Driver("kernel")
    return _fuse(f"the kernel's overlayfs cannot mount here: {refused}")


def _fuse(why: str) -> Driver:
    program = shutil.which("fuse-overlayfs") or shutil.which(
        "fuse-overlayfs", path="/usr/local/bin:/usr/bin:/bin")
    if program is None:
        raise StepFailed(f"{why}; install fuse-overlayfs (Debian's package fuse-overlayfs) "
                         "for rootless builds on this kernel")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise StepFailed(f"{why}; fuse-overlayfs needs /dev/fuse, which this user cannot "
                         "open (`chmod 0666 /dev/fuse`, udev's usual mode)")
    return Driver("fuse", program, why)


def kernel_refusal() -> str:
    """"" when the kernel's overlayfs mounts here as a step's would, else why not.

    Tried in this process's own mount namespace (a rootless process has one of its own), in
    a temp dir, and unmounted at once.
    """
    import tempfile  # only the rootless probe needs it

    opts = "userxattr,redirect_dir=nofollow,index=off,metacopy=off" if in_user_namespace() \
        else "redirect_dir=off,index=off,metacopy=off"
    with tempfile.TemporaryDirectory(prefix="layerbuild-overlay-") as tmp:
        for name in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, name))
        try:
            libc.mount("overlay", f"{tmp}/merged", "overlay", 0,
                       f"lowerdir={tmp}/lower,upperdir={tmp}/upper,workdir={tmp}/work,{opts}")
        except OSError as exc:
            return os.strerror(exc.errno or 0)
        libc.umount(f"{tmp}/merged", libc.MNT_DETACH)
    return ""


def settle(upper: Path, lowers: Sequence[Path]) -> None:
    """Make a fuse-overlayfs upper dir the one the kernel's overlayfs would have left.

    fuse-overlayfs marks every dir it creates opaque; the kernel only one made where a name
    below was deleted, so the mark is kept only where the lowers have the name. A file it
    copied up only to keep track of hard links (`user.fuseoverlayfs.origin`), the same as
    the one below, is no change and is dropped. Its own xattrs go, and opaque marks become
    overlayfs's `*.overlay.opaque`.
    """
    for top, _dirs, files, top_fd in os.fwalk(upper):
        rel = os.path.relpath(top, upper)
        own = _own_xattrs(top)
        marked = OPAQUE in files or _FUSE_OPAQUE in own
        for name in (OPAQUE, _FUSE_OPAQUE_DEV):
            if name in files:
                _remove_marker(top_fd, name, top)
        for key in own:
            os.removexattr(top_fd, key)
        if marked and rel != "." and _below(rel, lowers) is not None:
            os.setxattr(top_fd, opaque_xattr(), b"y")
        for name in files:
            if name not in (OPAQUE, _FUSE_OPAQUE_DEV):
                _settle_file(os.path.join(top, name), os.path.normpath(f"{rel}/{name}"),
                             lowers)


def _own_xattrs(path: str) -> list[str]:
    try:
        return [k for k in os.listxattr(path, follow_symlinks=False)
                if k.startswith(_FUSE_XATTRS)]
    except OSError:
        return []


def _settle_file(path: str, rel: str, lowers: Sequence[Path]) -> None:
    own = _own_xattrs(path)
    if not own:
        return
    for key in own:
        os.removexattr(path, key, follow_symlinks=False)
    if _FUSE_ORIGIN in own:
        lower = _below(rel, lowers)
        if lower is not None and _same(path, lower):
            os.unlink(path)


def _same(path: str, other: str) -> bool:
    a, b = os.lstat(path), os.lstat(other)
    if (a.st_mode, a.st_uid, a.st_gid, a.st_size, a.st_mtime_ns) != (
            b.st_mode, b.st_uid, b.st_gid, b.st_size, b.st_mtime_ns):
        return False
    if read_xattrs(path) != read_xattrs(other):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(path) == os.readlink(other)
    return not stat.S_ISREG(a.st_mode) or filecmp.cmp(path, other, shallow=False)


def _below(rel: str, lowers: Sequence[Path]) -> str | None:
    """The path of the top-most entry at `rel` in the merged lowers (top first), or None."""
    parts = rel.split("/")
    active = [str(p) for p in lowers]
    for i in range(len(parts)):
        last, found = i == len(parts) - 1, []
        for layer in active:
            path = os.path.join(layer, *parts[: i + 1])
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if is_whiteout(st, lambda p=path: read_xattrs(p)):  # type: ignore[misc]
                break
            if last:
                return path
            if not stat.S_ISDIR(st.st_mode):
                break
            found.append(layer)
            if is_opaque(read_xattrs(path)):
                break
        if not found:
            return None
        active = found
    return None


def _remove_marker(dir_fd: int, name: str, top: str) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        raise StepFailed(f"{os.path.join(top, name)}: a directory where fuse-overlayfs keeps "
                         "its opaque mark")
    os.unlink(name, dir_fd=dir_fd)
