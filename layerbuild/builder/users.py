"""USER resolution from an image's /etc/passwd and /etc/group text (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from layerbuild.errors import LayerbuildError


class UnknownUser(LayerbuildError):
    """A USER or --chown name that the image's passwd/group files do not define."""


@dataclass(frozen=True)
class Ids:
    """Numeric identity of a process or file owner."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def spec(self) -> str:
        """`uid:gid[:g1,g2]` as the sandbox takes it."""
        extra = ",".join(str(g) for g in self.groups)
        return f"{self.uid}:{self.gid}" + (f":{extra}" if extra else "")


def _table(text: str | None, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        parts = line.split(":")
        if len(parts) >= fields and not line.startswith("#"):
            rows.append(parts)
    return rows


def resolve_user(spec: str, passwd: str | None, group: str | None) -> Ids:
    """Numeric ids for `user[:group]` as Docker resolves USER (names looked up in the image).

    >>> resolve_user("1000", None, None)
    Ids(uid=1000, gid=0, groups=())
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
    return Ids(uid, gid, extra if not grp else ())


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
        ids = resolve_user(user, passwd, group)
        uid, gid = ids.uid, ids.gid
    if grp:
        gid = resolve_group(grp, group)
    return uid, gid
