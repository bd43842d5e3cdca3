"""What this host gives layerbuild, for `layerbuild info`: root or rootless, user namespaces,
subordinate ids, the id helpers, overlayfs, the private network's parts; each part missing
with its fix (the facts are read here, the text is made by `hostcheck.render`, pure).

Overlay is tried for real: a forked child (single-threaded, as entering a user namespace
needs) enters the namespace a build would run in and mounts a tiny overlay in a temp dir of
its own mount namespace, so what is said is what a build would meet.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import layerbuild.userns as userns
from layerbuild.nsmap import is_rootless, missing_range_fix
from layerbuild.sandbox import fuse, libc
from layerbuild.subids import IdRange


@dataclass(frozen=True)
class Facts:
    """What was found (see `render`)."""

    rootless: bool
    user: str
    store: str
    kernel: str
    userns_max: int | None
    userns_clone: bool | None
    apparmor_restricts: bool | None
    subuid: list[IdRange] = field(default_factory=list)
    subgid: list[IdRange] = field(default_factory=list)
    helpers: tuple[str | None, str | None] = (None, None)
    ids: int = 1
    """How many ids a build's user namespace maps."""
    overlay: str = ""
    """"" when a test overlay mounted, else why not."""
    fuse: str | None = None
    """The fuse-overlayfs program, when found."""
    fuse_usable: bool = False
    """Whether /dev/fuse opens for this user."""
    overlay_setting: str = ""
    """LAYERBUILD_OVERLAY, as set."""
    slirp4netns: str | None = None
    tun_usable: bool = False


def gather(store: Path) -> Facts:
    """Read the host's facts (tries one overlay mount in a child)."""
    plan = userns.plan()
    rootless = is_rootless()
    return Facts(
        rootless=rootless, user=plan.user, store=str(store), kernel=platform.release(),
        userns_max=_int("/proc/sys/user/max_user_namespaces"),
        userns_clone=_flag("/proc/sys/kernel/unprivileged_userns_clone"),
        apparmor_restricts=_flag("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        subuid=plan.subuid, subgid=plan.subgid, helpers=plan.helpers, ids=plan.ids,
        overlay=_try_overlay(rootless), fuse=shutil.which("fuse-overlayfs"),
        fuse_usable=os.access("/dev/fuse", os.R_OK | os.W_OK),
        overlay_setting=os.environ.get(fuse.ENV, ""), slirp4netns=shutil.which("slirp4netns"),
        tun_usable=os.access("/dev/net/tun", os.R_OK | os.W_OK))


def render(facts: Facts) -> list[str]:
    """The report's lines: `Name: value`, and `  fix: …` under a part that is missing."""
    lines: list[str] = []

    def say(name: str, value: str, fix: str = "") -> None:
        lines.append(f"{name + ':':<18}{value}")
        if fix:
            lines.append(f"{'':<18}fix: {fix}")

    say("Mode", f"rootless (user {facts.user}, ids 0-{facts.ids - 1} mapped)"
        if facts.rootless else "root")
    say("Store", facts.store + (" (rootless: user.overlay.* xattrs)" if facts.rootless
                                else " (root: trusted.overlay.* xattrs)"))
    say("Kernel", facts.kernel)
    if facts.rootless:
        off = facts.userns_max == 0 or facts.userns_clone is False
        say("User namespaces", "off" if off else "enabled" + (
            " (AppArmor restricts them to profiled programs)" if facts.apparmor_restricts
            else ""),
            "`sysctl user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1`"
            if off else "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`"
            if facts.apparmor_restricts else "")
        say("Subordinate uids", _ranges(facts.subuid),
            "" if facts.subuid else missing_range_fix(facts.user))
        say("Subordinate gids", _ranges(facts.subgid),
            "" if facts.subgid else missing_range_fix(facts.user))
        missing = [n for n, p in zip(("newuidmap", "newgidmap"), facts.helpers, strict=True)
                   if p is None]
        say("Id helpers", ", ".join(p for p in facts.helpers if p) or "none",
            f"install {' and '.join(missing)} (Debian's package uidmap)" if missing else "")
    say("Overlay", *_overlay(facts))
    network = "host (the default rootless)" if facts.rootless else "private (slirp4netns)"
    fix = ""
    if facts.slirp4netns is None:
        fix = "install slirp4netns for --network private"
    elif not facts.tun_usable:
        fix = "`chmod 0666 /dev/net/tun` (udev's usual mode) for --network private"
    say("RUN network", network, fix)
    return lines


def _overlay(facts: Facts) -> tuple[str, str]:
    """What the Overlay line says, and its fix."""
    forced = facts.rootless and facts.overlay_setting == "fuse"
    if not forced and (not facts.overlay or facts.overlay_setting == "kernel"):
        if facts.overlay:
            return f"kernel overlayfs cannot mount: {facts.overlay}", "unset " + fuse.ENV
        return "kernel overlayfs" + (" with userxattr" if facts.rootless else ""), ""
    if not facts.rootless:
        return f"cannot mount: {facts.overlay}", "load the overlay module (`modprobe overlay`)"
    why = f"{fuse.ENV}=fuse" if forced else f"the kernel's cannot mount here: {facts.overlay}"
    if facts.fuse is None:
        return (f"cannot mount: {why}", "install fuse-overlayfs (Debian's package "
                "fuse-overlayfs), or use Linux 5.11 or later")
    if not facts.fuse_usable:
        return (f"fuse-overlayfs cannot open /dev/fuse ({why})",
                "`chmod 0666 /dev/fuse` (udev's usual mode)")
    return f"fuse-overlayfs {facts.fuse} ({why})", ""


def _ranges(found: list[IdRange]) -> str:
    return ", ".join(f"{r.start}-{r.start + r.count - 1} ({r.count})" for r in found) or "none"


def _try_overlay(rootless: bool) -> str:
    """"" when a test overlay mounts where a build would mount one, else the error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        said = b""
        try:
            os.close(r)
            said = _mount_test(rootless).encode()
        except BaseException as exc:
            said = str(exc).encode() or b"failed"
        finally:
            with contextlib.suppress(OSError):
                os.write(w, said or b"ok")
            os._exit(0)
    os.close(w)
    answer = b""
    while chunk := os.read(r, 4096):
        answer += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return "" if answer == b"ok" else answer.decode(errors="replace")


def _mount_test(rootless: bool) -> str:
    try:
        if rootless:
            userns.enter()
        else:
            libc.unshare(libc.CLONE_NEWNS)
    except OSError as exc:
        return f"cannot make a mount namespace: {os.strerror(exc.errno or 0)}"
    return fuse.kernel_refusal()


def _int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _flag(path: str) -> bool | None:
    value = _int(path)
    return None if value is None else value != 0
