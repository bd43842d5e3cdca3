"""Everything mounted into a step besides its overlay: /proc, /dev, /sys, /etc files, --mount.

The init stages each mount in the private staging tmpfs under a name it controls. The step
process (PID 1 of the new PID namespace, in a mount namespace of its own) mounts /proc there,
then moves every staged mount onto its target, resolved inside the image by `inroot` and
reached through `/proc/self/fd/N`, so no image symlink can ever aim a mount at the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from layerbuild.errors import StepFailed
from layerbuild.sandbox import libc
from layerbuild.sandbox.inroot import ensure
from layerbuild.sandbox.layers import check_kind, mount_overlay, open_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from typing import Any

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore"}
# Docker's read-only and masked paths (moby oci/defaults.go).
PROC_READONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
PROC_MASKED = ("acpi", "asound", "kcore", "keys", "latency_stats", "sched_debug", "scsi",
               "timer_list", "timer_stats")
SYS_MASKED = ("firmware", "devices/virtual/powercap")
SYSTEM = (("proc", "/proc", "dir"), ("dev", "/dev", "dir"), ("sys", "/sys", "dir"),
          ("resolv.conf", "/etc/resolv.conf", "file"), ("hosts", "/etc/hosts", "file"))

_SAFE = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


class Staged:
    """A mount waiting in the staging dir under `name`, for `target` in the image."""

    __slots__ = ("kind", "name", "target")

    def __init__(self, name: str, target: str, kind: str) -> None:
        self.name, self.target, self.kind = name, target, kind


def _remount(name: str, readonly: bool, flags: int = libc.MS_NOSUID | libc.MS_NODEV) -> None:
    ro = libc.MS_RDONLY if readonly else 0
    libc.mount(None, name, None, libc.MS_REMOUNT | libc.MS_BIND | flags | ro)


def _bind(source_fd: int, name: str, is_dir: bool) -> None:
    if is_dir:
        os.mkdir(name, 0o755)
    else:
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    libc.mount(f"/proc/self/fd/{source_fd}", name, None, libc.MS_BIND | libc.MS_REC)


def stage_file(name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
               readonly: bool = True) -> None:
    """A file with `data`, bound onto itself so it can be moved (read-only) into the image."""
    fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    libc.mount(name, name, None, libc.MS_BIND)
    _remount(name, readonly, _SAFE)


def stage_dev(devices: dict[str, int]) -> None:
    """A fresh nodev,nosuid /dev: the host's harmless devices bound in, pts, shm, mqueue."""
    libc.mount("tmpfs", "dev", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
               "mode=755,size=65536k")
    for name, fd in devices.items():
        _bind(fd, f"dev/{name}", is_dir=False)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"dev/{name}")
    os.mkdir("dev/pts", 0o755)
    options = "newinstance,ptmxmode=0666,mode=0620"
    try:
        libc.mount("devpts", "dev/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
                   options + ",gid=5")
    except OSError as exc:  # a user namespace that maps no gid 5 (tty): ptys get the user's
        if exc.errno != errno.EINVAL:
            raise
        libc.mount("devpts", "dev/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC, options)
    os.mkdir("dev/shm", 0o1777)
    libc.mount("shm", "dev/shm", "tmpfs", _SAFE, "mode=1777,size=65536k")
    os.mkdir("dev/mqueue", 0o755)
    with contextlib.suppress(OSError):  # POSIX message queues are optional
        libc.mount("mqueue", "dev/mqueue", "mqueue", _SAFE)


def stage_sys() -> bool:
    """A read-only sysfs with Docker's masks; False where sysfs cannot be mounted here."""
    os.mkdir("sys", 0o755)
    try:
        libc.mount("sysfs", "sys", "sysfs", _SAFE | libc.MS_RDONLY)
    except OSError:
        return False
    for rel in SYS_MASKED:
        if os.path.isdir(f"sys/{rel}"):
            libc.mount("tmpfs", f"sys/{rel}", "tmpfs", _SAFE | libc.MS_RDONLY, "size=0")
    return True


def stage_user(index: int, m: dict[str, Any], source_fd: int | None) -> Staged:
    """One RUN --mount, staged as `m<index>`."""
    name, target, kind = f"m{index}", m["target"], m["kind"]
    if kind == "tmpfs":
        os.mkdir(name, 0o755)
        opts = [f"mode={m['mode'] if m['mode'] is not None else 0o1777:o}",
                f"uid={m['uid']}", f"gid={m['gid']}"]
        if m["size"]:
            opts.append(f"size={m['size']}")
        libc.mount("tmpfs", name, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, ",".join(opts))
        return Staged(name, target, "dir")
    assert source_fd is not None
    is_dir = stat.S_ISDIR(os.fstat(source_fd).st_mode)
    source = f"/proc/self/fd/{source_fd}"
    if kind == "secret" or (kind == "bind" and not is_dir and not m["readonly"]):
        if is_dir:
            raise StepFailed(f"secret for {target}: {m['source']} is a directory")
        with open(source, "rb") as f:
            data = f.read()
        mode = m["mode"] if m["mode"] is not None else (0o400 if kind == "secret" else 0o644)
        stage_file(name, data, mode, m["uid"], m["gid"], readonly=kind == "secret")
        return Staged(name, target, "file")
    if kind == "cache":
        if not is_dir:
            raise StepFailed(f"cache mount {target}: {m['source']} is not a directory")
        if not os.listdir(source):  # first use: owner and mode as asked
            os.chown(source, m["uid"], m["gid"])
            os.chmod(source, m["mode"] if m["mode"] is not None else 0o755)
    if kind == "bind" and is_dir and not m["readonly"]:
        # Writes to a read-write bind are kept for the step only (BuildKit's rule).
        for part in (name, f"{name}.upper", f"{name}.work"):
            os.mkdir(part, 0o755)
        upper, work = open_dir(f"{name}.upper", "staging"), open_dir(f"{name}.work", "staging")
        mount_overlay(name, [source_fd], upper, work, libc.MS_NOSUID | libc.MS_NODEV)
        return Staged(name, target, "dir")
    _bind(source_fd, name, is_dir)
    _remount(name, m["readonly"])
    return Staged(name, target, "dir" if is_dir else "file")


def mount_proc(null: str = "dev/null") -> None:
    """A procfs of the caller's PID namespace at `proc`, with Docker's read-only and masks."""
    libc.mount("proc", "proc", "proc", _SAFE)
    for rel in PROC_READONLY:
        path = f"proc/{rel}"
        if os.path.lexists(path):
            libc.mount(path, path, None, libc.MS_BIND | libc.MS_REC)
            _remount(path, True, _SAFE)
    for rel in PROC_MASKED:
        path = f"proc/{rel}"
        if os.path.isdir(path):
            libc.mount("tmpfs", path, "tmpfs", _SAFE | libc.MS_RDONLY, "size=0")
        elif os.path.lexists(path):
            libc.mount(null, path, None, libc.MS_BIND)


def move_into(root_fd: int, staged: list[Staged]) -> None:
    """Move each staged mount onto its target, resolved (and made if missing) in the image."""
    for s in staged:
        with ensure(root_fd, s.target, s.kind) as res:
            check_kind(s.target, res, s.kind)
            if not res.names:
                raise StepFailed(f"mount target {s.target} resolves to the image's root")
            libc.mount(s.name, f"/proc/self/fd/{res.fd}", None, libc.MS_MOVE)


def host_file(path: str, limit: int = 1 << 16) -> bytes:
    """A small host file (resolv.conf, hosts), or nothing when it is missing."""
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def hosts_file(hostname: str) -> bytes:
    """The step's /etc/hosts, BuildKit's fixed one: loopback under `localhost` and the step's
    hostname, nothing of the build host's own file (its names mean nothing in the step, and
    a package that reads them, as exim4's mail name does, would keep them)."""
    return (f"127.0.0.1\tlocalhost {hostname}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n").encode()
