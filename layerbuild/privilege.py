"""What needs root, said in one line, until layerbuild runs rootless.

Layers keep their files' owners and device nodes (overlay whiteouts are 0/0 devices), and RUN
and COPY steps run in overlay mounts in new namespaces: unpacking or building a layer needs
root. Reading a store needs only access to it, so `images`, `inspect`, `save` and the like
work for anyone on a store of their own; the default store is root's.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from layerbuild.errors import LayerbuildError

ROOTLESS = "rootless use is not supported yet"

_UNPACKS = "layers are unpacked with their files' owners and device nodes"
NEEDS_ROOT = {
    "build": "RUN and COPY steps run in overlay mounts and namespaces, and layers keep their "
             "files' owners",
    "import": "the root filesystem is unpacked with its files' owners and device nodes",
    "load": _UNPACKS,
    "pull": _UNPACKS,
}
"""The commands that need root, and why."""


class NeedsRoot(LayerbuildError):
    """A command that needs root, run without it."""


def check_root(command: str, dry_run: bool = False) -> None:
    """Refuse, in one line, a command that needs root when this process is not root (a dry
    run of a build needs none: it runs nothing and stores nothing)."""
    why = NEEDS_ROOT.get(command)
    if why is None or os.geteuid() == 0 or (command == "build" and dry_run):
        return
    raise NeedsRoot(f"`layerbuild {command}` needs root: {why} ({ROOTLESS}; run it as root)")


def store_hint(root: Path) -> str:
    """What to add to "store ROOT is not usable: permission denied" for a user who is not
    root: whose the store is, and what to do; "" for root."""
    if os.geteuid() == 0:
        return ""
    owner = _owner(root)
    whose = f"it is {owner}'s" if owner else "this user cannot reach it"
    return (f" ({whose}: run layerbuild as root, or give --root DIR for a store of your own; "
            f"{ROOTLESS})")


def is_denied(exc: OSError, root: Path) -> bool:
    """Whether an error is this non-root user being denied something in the store `root`."""
    if os.geteuid() == 0 or exc.errno not in (errno.EACCES, errno.EPERM):
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
    """The name of who owns `path`, or its nearest existing parent."""
    import pwd

    for candidate in (path, *path.absolute().parents):
        try:
            uid = os.stat(candidate).st_uid
        except OSError:
            continue
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)
    return None
