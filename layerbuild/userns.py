"""The user namespace a rootless layerbuild runs in: what it maps, and entering it (whether a
process is in one, and which host id an id is: `nsmap`).

A user who is not root enters a new user namespace (with a mount namespace) in which they are
root: their own uid and gid map to 0, and their `/etc/subuid` and `/etc/subgid` ranges to
1, 2, … (`subids.id_map`), written by the setuid helpers `newuidmap` and `newgidmap` (Debian's
`uidmap`), so an image's files keep their owners. With no range, or without the helpers, only
the user's own ids are mapped (to 0), which serves images whose files are all root's.

The process enters it itself, once, before it starts any thread (the kernel refuses
`unshare(CLONE_NEWUSER)` to a process with several): a child forked just before, still outside,
writes the maps while the parent waits. Every process started afterwards (the sandbox's
`unshare`, slirp4netns) starts inside.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbuild.errors import LayerbuildError
from layerbuild.nsmap import facts, in_user_namespace, unmapped_text
from layerbuild.subids import Extent, IdRange, id_map, mapped, ranges

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


class UserNamespaceError(LayerbuildError):
    """A user namespace could not be made or mapped (the message says what to fix)."""


def unmapped(what: str, uid: int, gid: int, known: dict[str, Any] | None = None,
             ) -> UserNamespaceError:
    """The error for `what` needing the owner uid:gid, which this user namespace does not map
    (`known`: its `facts()`, read now when not given)."""
    return UserNamespaceError(unmapped_text(what, uid, gid, **(known or facts())))


def overflow_uid() -> int:
    """The uid a user namespace shows for ids it does not map."""
    try:
        return int(Path("/proc/sys/kernel/overflowuid").read_text())
    except (OSError, ValueError):
        return 65534


@dataclass(frozen=True)
class Plan:
    """The maps a rootless namespace of this user gets, and why it gets no more."""

    user: str
    uids: list[Extent]
    gids: list[Extent]
    subuid: list[IdRange]
    subgid: list[IdRange]
    helpers: tuple[str | None, str | None]

    @property
    def full(self) -> bool:
        """Whether the subordinate ranges are mapped (else the user's own ids only)."""
        return bool(self.subuid and self.subgid and all(self.helpers))

    @property
    def ids(self) -> int:
        """How many uids the namespace maps (0…ids-1)."""
        return mapped(self.uids) if self.full else 1


def plan() -> Plan:
    """This user's namespace maps, from /etc/subuid, /etc/subgid and the helpers on PATH."""
    import shutil  # here and below: root, and every command's start-up, need none of them
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    subuid = ranges(_read(SUBUID), user, uid)
    subgid = ranges(_read(SUBGID), user, uid)
    return Plan(user, id_map(uid, subuid), id_map(gid, subgid), subuid, subgid,
                (shutil.which("newuidmap"), shutil.which("newgidmap")))


def enter() -> Plan | None:
    """Enter a rootless user namespace (mapped as `plan()` says) unless this process is root
    of the host's or already in one; the plan used, or None when nothing was done."""
    if os.geteuid() == 0 or in_user_namespace():
        return None
    import threading

    from layerbuild.sandbox import libc

    if threading.active_count() > 1:
        raise UserNamespaceError("a rootless layerbuild must enter its user namespace before "
                                 "the process starts threads: call layerbuild.enter_rootless() "
                                 "first")
    chosen = plan()
    if chosen.full:
        _enter_mapped(chosen)
    else:
        uid, gid = os.getuid(), os.getgid()  # (inside, before the maps, they read 65534)
        _unshare()
        _write_own_maps(uid, gid)
    with contextlib.suppress(OSError):
        os.setgroups([])  # the user's other groups are no ids of the namespace
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    return chosen


def _enter_mapped(chosen: Plan) -> None:
    """Unshare, and have a child left outside write the maps with newuidmap/newgidmap."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: still in the host's namespace
        try:
            os.close(go_w)
            os.close(done_r)
            said = b""
            if os.read(go_r, 1):
                said = _write_maps(os.getppid(), chosen).encode()
            os.write(done_w, said or b"ok")
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(done_w)
    try:
        _unshare()  # (on failure, the closed pipe tells the helper to do nothing)
        os.write(go_w, b"x")
        answer = b""
        while chunk := os.read(done_r, 4096):
            answer += chunk
    finally:
        with contextlib.suppress(OSError):
            os.close(go_w)
        os.close(done_r)
        os.waitpid(pid, 0)
    if answer != b"ok":
        raise UserNamespaceError(f"cannot map this user's ids into a user namespace: "
                                 f"{answer.decode(errors='replace').strip()}")


def _write_maps(pid: int, chosen: Plan) -> str:
    """Run newuidmap and newgidmap for `pid`; what they said when one failed, else ""."""
    import subprocess

    uidmap, gidmap = chosen.helpers
    assert uidmap is not None and gidmap is not None
    for tool, extents in ((uidmap, chosen.uids), (gidmap, chosen.gids)):
        args = [word for extent in extents for word in extent.args()]
        try:
            done = subprocess.run([tool, str(pid), *args], capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{tool}: {exc}"
        if done.returncode != 0:
            return done.stderr.strip() or f"{tool} exited with {done.returncode}"
    return ""


def _write_own_maps(uid: int, gid: int) -> None:
    """Map only the user's own uid and gid (to 0): what an unprivileged process may write."""
    try:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    except OSError as exc:
        raise UserNamespaceError(f"cannot map this user into a user namespace: "
                                 f"{exc.strerror}") from None


def _unshare() -> None:
    from layerbuild.sandbox import libc

    try:
        libc.unshare(libc.CLONE_NEWUSER | libc.CLONE_NEWNS)
    except OSError as exc:
        raise UserNamespaceError(
            f"cannot make a user namespace ({os.strerror(exc.errno or 0)}): unprivileged user "
            "namespaces are off here; enable them (`sysctl kernel.unprivileged_userns_clone=1`, "
            "`sysctl user.max_user_namespaces=15000`; on Ubuntu 24.04 and later also "
            "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`), or run as root"
        ) from None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
