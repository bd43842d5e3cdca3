"""The step's filesystem inside the child's mount namespace: staging tmpfs, overlays, scaffold.

Layers are named to overlayfs by fd number, relative to `/proc/self/fd`: every directory is
looked up once (when opened, before anything is covered), and the option string stays far
under a page even for hundreds of layers (`lowerdir=5:6:7…`, about four bytes a layer).
"""

from __future__ import annotations

import contextlib
import os
import stat

from layerbuild.errors import StepFailed
from layerbuild.nsmap import in_user_namespace
from layerbuild.sandbox import libc
from layerbuild.sandbox.inroot import Resolved, resolve

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_PAGE = 4096


def open_dir(path: str, what: str) -> int:
    """An O_PATH fd of a host directory the caller named."""
    try:
        return os.open(path, _DIR)
    except OSError as exc:
        raise StepFailed(f"{what} {path}: {exc.strerror}") from None


def enter_staging(work: str, *, cover: str | None = None) -> None:
    """Cover the workdir's parent (or `cover`) with a private tmpfs and work inside it.

    Only this mount namespace sees the tmpfs, and every host path needed from under it was
    opened before, so nothing is created on the host and the place is unique to the step.
    """
    place = cover or os.path.dirname(os.path.normpath(os.path.abspath(work)))
    if os.path.normpath(os.path.abspath(place)) == "/":
        raise StepFailed(f"{work} needs a parent directory other than /")
    libc.mount("tmpfs", place, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=0700")
    os.chdir(place)


OVERLAY_MAX_LOWERS = 500
"""The kernel's limit on an overlay's lower dirs (OVL_MAX_STACK); past it mount says EINVAL."""


def mount_overlay(target: str, lowers: list[int], upper: int | None = None,
                  work: int | None = None, flags: int = 0) -> None:
    """Mount an overlay of fds `lowers` (top first) on the staging dir `target`."""
    opts = ["lowerdir=" + ":".join(str(fd) for fd in lowers)]
    if upper is not None:
        opts += [f"upperdir={upper}", f"workdir={work}"]
    # No redirects, no metacopy, no index: the upper dir must stay a faithful diff.
    if in_user_namespace():  # rootless: user.overlay.* xattrs; no redirect is made either
        opts += ["userxattr", "redirect_dir=nofollow", "index=off", "metacopy=off"]
    else:
        opts += ["redirect_dir=off", "index=off", "metacopy=off"]
    data = ",".join(opts)
    if len(lowers) > OVERLAY_MAX_LOWERS:
        raise StepFailed(f"the image has too many layers: this step stacks {len(lowers)} "
                         f"(the image's and its own); overlayfs stacks at most "
                         f"{OVERLAY_MAX_LOWERS}")
    if len(data) >= _PAGE:
        raise StepFailed(f"{len(lowers)} layers are more than one overlay mount can stack")
    target_fd = os.open(target, _DIR)
    here = os.open(".", _DIR)
    try:
        os.chdir("/proc/self/fd")
        libc.mount("overlay", str(target_fd), "overlay", flags, data)
    except OSError as exc:
        raise StepFailed(f"cannot mount the overlay of {len(lowers)} layers: "
                         f"{os.strerror(exc.errno or 0)}") from None
    finally:
        os.fchdir(here)
        os.close(here)
        os.close(target_fd)


def build_scaffold(probe_fd: int, scaffold_fd: int, targets: list[tuple[str, str]]
                   ) -> list[str]:
    """Put the mount points the image lacks into the scaffold layer; canonical target paths.

    The scaffold is an extra lower layer on top of the image, so mount points never land in
    the upper dir (the layer). A directory it must hold that the image has (`/etc` for a
    missing `/etc/hosts`) gets the image's mode, owner, times and xattrs: overlayfs shows, and
    copies up, the top-most layer's directory.
    """
    canonical: list[str] = []
    times: list[tuple[str, int, int]] = []
    for path, kind in targets:
        with resolve(probe_fd, path) as res:
            canonical.append(res.path)
            if res.exists:
                check_kind(path, res, kind)
                continue
            for i in range(len(res.names)):
                rel = "/".join(res.names[: i + 1])
                if i < len(res.fds):
                    if _mkdir(scaffold_fd, rel):
                        times.append(_copy_attrs(res.fds[i], scaffold_fd, rel))
                elif i == len(res.names) - 1 and kind == "file":
                    _touch(scaffold_fd, rel)
                else:
                    _mkdir(scaffold_fd, rel)
    for rel, atime, mtime in reversed(times):  # children first: making them moved the parents'
        os.utime(rel, ns=(atime, mtime), dir_fd=scaffold_fd, follow_symlinks=False)
    return canonical


def check_kind(path: str, res: Resolved, kind: str) -> None:
    """Fail clearly when an existing mount target is not the kind of thing mounted on it."""
    is_dir = res.is_dir()
    if kind == "dir" and not is_dir:
        raise StepFailed(f"cannot mount on {path}: {res.path} is not a directory in the image")
    if kind == "file" and is_dir:
        raise StepFailed(f"cannot mount a file on {path}: {res.path} is a directory in the image")


def _mkdir(dir_fd: int, rel: str) -> bool:
    try:
        os.mkdir(rel, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        return False
    return True


def _touch(dir_fd: int, rel: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.close(os.open(rel, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd))


def _copy_attrs(image_fd: int, scaffold_fd: int, rel: str) -> tuple[str, int, int]:
    st = os.fstat(image_fd)
    os.chown(rel, st.st_uid, st.st_gid, dir_fd=scaffold_fd, follow_symlinks=False)
    os.chmod(rel, stat.S_IMODE(st.st_mode), dir_fd=scaffold_fd)
    source = f"/proc/self/fd/{image_fd}"
    fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=scaffold_fd)
    try:
        for key in _xattr_names(source):
            if not key.startswith(("trusted.overlay.", "user.overlay.")):
                # One tmpfs cannot hold would only change the step's view, not the layer.
                with contextlib.suppress(OSError):
                    os.setxattr(fd, key, os.getxattr(source, key))
    finally:
        os.close(fd)
    return rel, st.st_atime_ns, st.st_mtime_ns


def _xattr_names(path: str) -> list[str]:
    try:
        return os.listxattr(path)
    except OSError:
        return []
