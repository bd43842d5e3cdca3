"""A step's USER and HOME, looked up in its mounted image's /etc/passwd and /etc/group."""

from __future__ import annotations

from layerbuild.sandbox.inroot import read_file
from layerbuild.users import Ids, home_dir, step_ids

LIMIT = 1 << 20
"""The largest passwd or group file read."""


def _text(root_fd: int, path: str) -> str | None:
    data = read_file(root_fd, path, LIMIT)
    return data.decode("utf-8", "replace") if data is not None else None


def lookup(root_fd: int, user: str | None, ids: Ids) -> tuple[Ids, str]:
    """The ids USER `user` runs with in the image at `root_fd` (`ids` when `user` is None),
    and the home directory of their uid there (for HOME). UnknownUser for a name the image
    lacks; both files are read whatever the user, so one that cannot be read (not a regular
    file, too large) fails a root step too."""
    passwd = _text(root_fd, "/etc/passwd")
    group = _text(root_fd, "/etc/group")
    if user is not None:
        ids = step_ids(user, passwd, group)
    return ids, home_dir(ids[0], passwd)
