"""USER and --chown resolution from an image's /etc/passwd and /etc/group text (pure).

The builder resolves `--chown`; the sandbox resolves a step's USER once it has the image
mounted (so a RUN reads the two files in its own child). Ids are plain tuples: the sandbox's
child imports this module, and `dataclasses` would cost it ~7 ms.
"""

from __future__ import annotations

from layerbuild.errors import LayerbuildError

Ids = tuple[int, int, tuple[int, ...]]
"""uid, gid and supplementary groups of a process."""


class UnknownUser(LayerbuildError):
    """A USER or --chown name that the image's passwd/group files do not define."""


def _table(text: str | None, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        parts = line.split(":")
        if len(parts) >= fields and not line.startswith("#"):
            rows.append(parts)
    return rows


def step_ids(spec: str, passwd: str | None, group: str | None) -> Ids:
    """The ids a step runs with under USER `spec` ("" or root: 0:0 without a lookup).

    >>> step_ids("", None, None)
    (0, 0, ())
    """
    if not spec or spec in ("0", "root", "0:0"):
        return 0, 0, ()
    return resolve_user(spec, passwd, group)


def resolve_user(spec: str, passwd: str | None, group: str | None) -> Ids:
    """Numeric ids for `user[:group]` as Docker resolves USER (names looked up in the image).

    >>> resolve_user("1000", None, None)
    (1000, 0, ())
    """
    user, _, grp = spec.partition(":")
    users = _table(passwd, 7)
    groups = _table(group, 4)
    if user.isdigit():
        uid = int(user)
        entry = next((u for u in users if u[2] == user), None)
    else:
        entry = next((u for u in users if u[0] == user), None)
        if entry is None:
            raise UnknownUser(f"unable to find user {user}: no matching entries in passwd file")
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if grp:
        gid = resolve_group(grp, group)
    name = entry[0] if entry is not None else None
    extra = tuple(sorted({int(g[2]) for g in groups if g[2].isdigit() and name
                          and name in g[3].split(",") and int(g[2]) != gid}))
    return uid, gid, extra if not grp else ()


def home_dir(uid: int, passwd: str | None) -> str:
    """The home directory of a uid in the image's passwd text, "/" without one (what runc
    gives a step's HOME when the environment has none).

    >>> home_dir(1000, "user:x:1000:1000::/home/user:/bin/sh")
    '/home/user'
    """
    entry = next((u for u in _table(passwd, 7) if u[2] == str(uid)), None)
    return entry[5] if entry is not None and entry[5] else "/"


def resolve_group(spec: str, group: str | None) -> int:
    """A numeric gid for a group name or number."""
    if spec.isdigit():
        return int(spec)
    entry = next((g for g in _table(group, 4) if g[0] == spec), None)
    if entry is None:
        raise UnknownUser(f"unable to find group {spec}: no matching entries in group file")
    return int(entry[2])


def resolve_chown(spec: str, passwd: str | None, group: str | None) -> tuple[int, int]:
    """uid and gid for COPY/ADD `--chown=user[:group]` (a lone user gives gid = uid's group
    for names, and gid = uid for numbers, as BuildKit does)."""
    user, _, grp = spec.partition(":")
    if user.isdigit():
        uid = int(user)
        gid = int(user)
    else:
        uid, gid, _groups = resolve_user(user, passwd, group)
    if grp:
        gid = resolve_group(grp, group)
    return uid, gid
