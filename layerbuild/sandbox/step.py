"""A RUN step set up by the sandbox's init: host fds, scaffold, overlay, staged mounts, process.

Order matters: every host path is opened first; then the staging tmpfs covers the workdir's
parent (in this mount namespace only); the image is probed through a read-only overlay for
the step's USER and HOME (its /etc/passwd and /etc/group) and for the mount points it lacks;
those go into the scaffold layer; then the step's overlay is mounted with the scaffold on top
of the image's layers and the fresh upper dir below none.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from collections.abc import Callable

from layerbuild.errors import StepFailed
from layerbuild.sandbox import identity, libc, mounts, network, process
from layerbuild.sandbox.inroot import ensure
from layerbuild.sandbox.layers import (
    build_scaffold,
    enter_staging,
    fuse_used,
    mount_overlay,
    open_dir,
    sync,
)
from layerbuild.sandbox.mounts import SYSTEM, Staged

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from typing import Any

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_PROBE_FLAGS = libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


def run(req: dict[str, Any], lifeline: int, report: Callable[[dict[str, Any]], None]
        ) -> dict[str, Any]:
    """Set the step up, run it to the end, and return its exit code."""
    root, spec = req["root"], req["run"]
    lowers = [open_dir(p, "layer") for p in root["lowers"]]
    upper = open_dir(root["upper"], "upper dir")
    work = open_dir(root["work"], "overlay workdir")
    sources = [_open_source(m) for m in spec["mounts"]]
    devices = {name: os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC)
               for name in mounts.DEVICES}
    resolv = mounts.host_file("/etc/resolv.conf")
    if spec["network"] == "private":
        resolv = network.resolv_conf(resolv)
    hosts = mounts.hosts_file(spec["hostname"])
    last_cap = int(mounts.host_file("/proc/sys/kernel/cap_last_cap").strip() or b"40")

    enter_staging(root["work"])
    for name in ("root", "probe", "scaffold", "empty", "proc", "dev"):
        os.mkdir(name, 0o755)
    empty, scaffold = open_dir("empty", "staging"), open_dir("scaffold", "staging")
    kinds = [_kind(m, fd) for m, fd in zip(spec["mounts"], sources, strict=True)]
    targets = [(t, k) for _, t, k in SYSTEM] + [
        (m["target"], k) for m, k in zip(spec["mounts"], kinds, strict=True)]

    mount_overlay("probe", [upper, *lowers, empty], flags=_PROBE_FLAGS)
    probe = open_dir("probe", "staging")
    try:
        uid, gid, groups, env = _identity(spec, probe)  # an unknown USER is reported first
        canonical = build_scaffold(probe, scaffold, targets)
    finally:
        os.close(probe)
        libc.umount("probe")
    _check_targets(targets, canonical)

    # nodev, not nosuid: setuid programs must work in a RUN (Docker mounts its rootfs alike).
    mount_overlay("root", [scaffold, *lowers], upper, work, libc.MS_NODEV)
    root_fd = open_dir("root", "staging")
    ensure(root_fd, spec["cwd"], "dir").close()
    os.close(root_fd)

    staged = _stage_all(spec, sources, devices, resolv, hosts)
    order = sorted(range(len(targets)), key=lambda i: canonical[i].count("/"))
    launch = process.Launch(
        argv=spec["argv"], env=env, cwd=spec["cwd"], uid=uid, gid=gid, groups=groups,
        last_cap=last_cap,
        staged=[s for s in (staged[i] for i in order) if s is not None],
        seccomp=req.get("seccomp") or None)
    libc.sethostname(spec["hostname"])
    if spec["network"] != "host":
        _loopback_up()
    if "network_fd" in req:
        network.wait_ready(req["network_fd"])  # as late as can be: the stack starts meanwhile
    if fuse_used():
        # The init is PID 1 of the namespace `unshare --fork` made, its fuse daemons beside
        # it; the step gets a namespace of its own below, where it is PID 1 and sees none of
        # them. Its pid here means nothing to the builder, which kills the init instead.
        libc.unshare(libc.CLONE_NEWPID)
    pid, err_r, _alive = process.start(launch)
    if not fuse_used():
        report({"pid": pid})
    code, error = process.supervise(pid, err_r, lifeline)
    if error:
        raise StepFailed(error)
    sync("root")
    return {"exit": code}


def _identity(spec: dict[str, Any], probe: int
              ) -> tuple[int, int, list[int], list[str]]:
    """uid, gid, groups and environment of the step: its USER and HOME looked up in the
    image when the request asks (`image_user`, `home_at`), else as given."""
    ids = (spec["uid"], spec["gid"], tuple(spec["groups"]))
    env = spec["env"]
    if spec.get("image_user") is None and spec.get("home_at") is None:
        return ids[0], ids[1], list(ids[2]), env
    ids, home = identity.lookup(probe, spec.get("image_user"), ids)
    if spec.get("home_at") is not None:
        env = [*env[:spec["home_at"]], f"HOME={home}", *env[spec["home_at"]:]]
    return ids[0], ids[1], list(ids[2]), env


def _open_source(m: dict[str, Any]) -> int | None:
    if m["source"] is None:
        return None
    try:
        return os.open(m["source"], os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise StepFailed(f"--mount type={m['kind']} target={m['target']}: {m['source']}: "
                         f"{exc.strerror}") from None


def _kind(m: dict[str, Any], fd: int | None) -> str:
    if m["kind"] == "tmpfs":
        return "dir"
    if m["kind"] == "secret":
        return "file"
    assert fd is not None
    return "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"


def _check_targets(targets: list[tuple[str, str]], canonical: list[str]) -> None:
    """Refuse mounts on the image root, and system mounts an image aims at one place."""
    seen: dict[str, str] = {}
    for i, ((path, _), where) in enumerate(zip(targets, canonical, strict=True)):
        if where == "/":
            raise StepFailed(f"cannot mount on {path}: it resolves to the image's root")
        if i < len(SYSTEM):
            if where in seen:
                raise StepFailed(f"the image's {seen[where]} and {path} both lead to {where}")
            seen[where] = path


def _stage_all(spec: dict[str, Any], sources: list[int | None], devices: dict[str, int],
               resolv: bytes, hosts: bytes) -> list[Staged | None]:
    """Stage every mount, in the order of SYSTEM then the user's; None for one not made."""
    mounts.stage_dev(devices)
    has_sys = mounts.stage_sys()
    mounts.stage_file("resolv.conf", resolv)
    mounts.stage_file("hosts", hosts)
    staged: list[Staged | None] = [
        Staged(name, target, kind) if name != "sys" or has_sys else None
        for name, target, kind in SYSTEM]
    for i, (m, fd) in enumerate(zip(spec["mounts"], sources, strict=True)):
        staged.append(mounts.stage_user(i, m, fd))
    return staged


def _loopback_up() -> None:
    """Bring up `lo` in the step's new network namespace, as Docker does.

    Through a socket made by libc: importing the `socket` module would cost the step ~3 ms.
    """
    fd = libc.socket(libc.AF_INET, libc.SOCK_DGRAM)
    try:
        req = struct.pack("16sH", b"lo", 0).ljust(40, b"\0")
        flags = struct.unpack_from("16sH", fcntl.ioctl(fd, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(fd, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP).ljust(40, b"\0"))
    finally:
        os.close(fd)
