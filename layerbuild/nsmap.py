"""This process's user namespace, as its uid map tells: whether it is the host's, which host id
an id is, and the words for an owner it cannot map. Light on purpose (pwd only): the
sandbox's child imports it, and every RUN and COPY pays for what the child imports.
"""

from __future__ import annotations

import os
import pwd

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from typing import Any

_INITIAL = ["0", "0", "4294967295"]


def _uid_map() -> str | None:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read()
    except OSError:
        return None


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the host's."""
    text = _uid_map()
    return text is not None and text.split() != _INITIAL


def is_rootless() -> bool:
    """Whether layerbuild runs (or is to run) rootless: not root, or root of a user namespace."""
    return os.geteuid() != 0 or in_user_namespace()


def host_id(uid: int) -> int | None:
    """The host's uid for `uid` of this process's user namespace (None: not mapped)."""
    text = _uid_map()
    if text is None:
        return uid
    for line in text.splitlines():
        inside, outside, count = (int(word) for word in line.split())
        if inside <= uid < inside + count:
            return outside + uid - inside
    return None


def facts() -> dict[str, Any]:
    """Who this namespace's root is on the host, and how many ids it maps: what
    `unmapped_text` needs, read where /proc can be (a sandbox child chroots before copying)."""
    text = _uid_map() or ""
    try:
        count = sum(int(line.split()[2]) for line in text.splitlines())
    except (IndexError, ValueError):
        count = 0
    try:
        user = pwd.getpwuid(host_id(0) or 0).pw_name
    except KeyError:
        user = "this user"
    return {"user": user, "ids": count}


def missing_range_fix(user: str) -> str:
    """What to run so that `user` gets subordinate ids."""
    return (f"add a range for {user} to /etc/subuid and /etc/subgid, e.g. `sudo usermod "
            f"--add-subuids 100000-165535 --add-subgids 100000-165535 {user}` (and install "
            "newuidmap/newgidmap: Debian's package uidmap)")


def unmapped_text(what: str, uid: int, gid: int, user: str, ids: int) -> str:
    """Why `what` cannot have the owner uid:gid in a namespace of `user` mapping `ids` ids.

    >>> unmapped_text("'./x'", 1000, 1000, "ann", 65537).split(";")[0].split(": ")[1]
    'its user namespace maps the ids 0-65536'
    """
    fix = (missing_range_fix(user) if ids <= 1 else
           f"give {user} a larger range in /etc/subuid and /etc/subgid")
    span = "only the id 0" if ids <= 1 else f"the ids 0-{ids - 1}"
    return (f"{what} needs the owner {uid}:{gid}, which a rootless layerbuild cannot give "
            f"here: its user namespace maps {span}; {fix}")
