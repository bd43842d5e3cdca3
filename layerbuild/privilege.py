"""What a user who is not root gets: a user namespace of their own, and clear words when a
store is not theirs.

Layers keep their files' owners and device nodes (overlay whiteouts are 0/0 devices), and RUN
and COPY steps run in overlay mounts in new namespaces. As root, layerbuild does that on the
host's ids. As anyone else, it first enters a user namespace in which the user is root and
their subordinate ids are the image's other ids (`userns`); the store is then the user's own
(`$XDG_DATA_HOME/layerbuild`), marked rootless (`store.USERXATTR`). Every command that opens a
store enters it first (`userns.enter`); the others (`login`, `logout`, `info`) need none.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import layerbuild.nsmap as nsmap
import layerbuild.userns as userns


def store_hint(root: Path) -> str:
    """What to add to "store ROOT is not usable: permission denied" for a user who is not
    root: whose the store is, and what to do; "" for root."""
    if not nsmap.is_rootless():
        return ""
    owner = _owner(root)
    whose = f"it is {owner}'s" if owner else "it is another user's"
    return (f" ({whose}: leave out --root for a store of your own, give --root DIR for "
            "another, or run layerbuild as root)")


def is_denied(exc: OSError, root: Path) -> bool:
    """Whether an error is this non-root user being denied something in the store `root`."""
    if not nsmap.is_rootless() or exc.errno not in (errno.EACCES, errno.EPERM):
        return False
    name = exc.filename
    if name is None:
        return False
    path = os.fsdecode(name) if isinstance(name, bytes) else str(name)
    try:
        return Path(path).absolute().is_relative_to(root.absolute())
    except ValueError:
        return False


def _owner(path: Path) -> str | None:
    """The name of who owns `path`, or its nearest existing parent, as the host names them
    (None: an id this user namespace does not map, someone else's)."""
    import pwd

    inside = nsmap.in_user_namespace()
    for candidate in (path, *path.absolute().parents):
        try:
            uid = os.stat(candidate).st_uid
        except OSError:
            continue
        if inside and uid == userns.overflow_uid():
            return None  # not mapped: shown as the overflow id, root's or another user's
        host = nsmap.host_id(uid) if inside else uid
        if host is None:
            return None
        try:
            return pwd.getpwuid(host).pw_name
        except KeyError:
            return str(host)
    return None
