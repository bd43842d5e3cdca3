"""The step's filesystem inside the child's mount namespace: staging tmpfs, overlays, scaffold.

Layers are named to overlayfs by fd number, relative to `/proc/self/fd`: every directory is
looked up once (when opened, before anything is covered), and the option string stays far
under a page even for hundreds of layers (`lowerdir=5:6:7…`, about four bytes a layer).

Rootless on a kernel whose overlayfs a user namespace cannot mount (before Linux 5.11), the
same overlays are fuse-overlayfs mounts (`use_fuse`): each is a daemon of the init, run in
the foreground with the init's death as its own, reading the same fd-numbered dirs.
"""

from __future__ import annotations

# signal's C module: `signal` adds IntEnums, and its import (enum with it, 4-6 ms) is paid
# by every step's child (see tests/unit/test_child_imports.py).
import _signal as signal  # type: ignore[import-not-found]
import contextlib
import os
import stat
import time

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
    if _fuse:  # fuse-overlayfs reaches the upper and work dirs through it (see `_mount_fuse`)
        _covered.append(os.open(place, _DIR))
    libc.mount("tmpfs", place, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=0700")
    os.chdir(place)


_fuse: list[str] = []
_daemons: list[int] = []
_covered: list[int] = []
"""Fds of the dirs the staging tmpfs covers, opened before it did (fuse-overlayfs only)."""
"""The fuse-overlayfs program, when this child mounts through it (see `use_fuse`)."""
_FUSE_WAIT = 10.0


def use_fuse(program: str) -> None:
    """Mount every overlay of this child through fuse-overlayfs at `program`."""
    _fuse[:] = [program]


def stop_fuse() -> None:
    """End this child's fuse-overlayfs daemons and reap them (their writes were synced)."""
    while _daemons:
        pid = _daemons.pop()
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def fuse_used() -> bool:
    """Whether this child's overlays are fuse-overlayfs mounts."""
    return bool(_fuse)


OVERLAY_MAX_LOWERS = 500
"""The kernel's limit on an overlay's lower dirs (OVL_MAX_STACK); past it mount says EINVAL."""


def mount_overlay(target: str, lowers: list[int], upper: int | None = None,
                  work: int | None = None, flags: int = 0) -> None:
    """Mount an overlay of fds `lowers` (top first) on the staging dir `target`."""
    if _fuse:  # fuse-overlayfs takes its own options (see `_mount_fuse`)
        _mount_fuse(target, lowers, upper, work, flags)
        return
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


def _mount_fuse(target: str, lowers: list[int], upper: int | None, work: int | None,
                flags: int) -> None:
    """The overlay as a fuse-overlayfs daemon, a child of this process dying with it.

    fuse-overlayfs takes paths (it resolves them itself), and the upper dir's parent may be
    covered by the staging tmpfs, so every dir is bound by its fd into `TARGET.fuse/` first:
    lowers as `l0`, `l1`, …, the upper and work dirs through their common parent as `host`
    (one mount: the daemon renames from one into the other). Its opaque-dir markers are made
    the store's form once the step is done (`sandbox.fuse.settle`).
    """
    path = os.path.abspath(target)
    place = f"{path}.fuse"
    os.mkdir(place, 0o700)
    names = [_reach(fd, place, f"l{i}") for i, fd in enumerate(lowers)]
    opts = ["lowerdir=" + ":".join(names)]
    if upper is not None and work is not None:
        host = _reach(_common_parent(upper, work), place, "host")
        opts += [f"upperdir={host}/{_name(upper)}", f"workdir={host}/{_name(work)}"]
    for flag, word in ((libc.MS_RDONLY, "ro"), (libc.MS_NOSUID, "nosuid"),
                       (libc.MS_NODEV, "nodev"), (libc.MS_NOEXEC, "noexec")):
        if flags & flag:
            opts.append(word)
    before = os.stat(path).st_dev
    said = os.open(f"{place}/said", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)  # never the step's output pipe: the build waits for its end
            os.dup2(said, 2)
            os.chdir(place)
            os.execv(_fuse[0], [_fuse[0], "-f", "-o", ",".join(opts), path])
        finally:
            os._exit(127)
    _daemons.append(pid)
    try:
        _wait_mounted(pid, path, before, said, len(lowers))
    finally:
        os.close(said)


def _reach(fd: int, place: str, name: str) -> str:
    os.mkdir(f"{place}/{name}", 0o700)
    libc.mount(f"/proc/self/fd/{fd}", f"{place}/{name}", None, libc.MS_BIND)
    return name


def _name(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def _common_parent(upper: int, work: int) -> int:
    """The dir holding both: the one the staging tmpfs covers (a lookup of `..` would enter
    the tmpfs), as opened before it was covered."""
    for parent in _covered:
        if all(_holds(parent, fd) for fd in (upper, work)):
            return parent
    raise StepFailed("fuse-overlayfs needs the upper dir and its workdir side by side")


def _holds(parent: int, fd: int) -> bool:
    try:
        found = os.stat(_name(fd), dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (found.st_dev, found.st_ino)


def _wait_mounted(pid: int, path: str, before: int, said: int, count: int) -> None:
    deadline = time.monotonic() + _FUSE_WAIT
    while os.stat(path).st_dev == before:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            lines = os.pread(said, 4096, 0).decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"exit status {os.waitstatus_to_exitcode(status)}"
            raise StepFailed(f"cannot mount the overlay of {count} layers: fuse-overlayfs: "
                             f"{why}")
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise StepFailed(f"cannot mount the overlay of {count} layers: fuse-overlayfs "
                             f"did not mount it within {_FUSE_WAIT:g}s")
        time.sleep(0.002)


def sync(path: str) -> None:
    """Make a fuse overlay's writes reach its upper dir before its daemon dies with us."""
    if not _fuse:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc.syncfs(fd)
    finally:
        os.close(fd)


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
