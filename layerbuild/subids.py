"""Subordinate id ranges (`/etc/subuid`, `/etc/subgid`) and the user namespace map made of them
(pure).

A line is `USER:START:COUNT`, USER a name or a numeric uid: the ids START…START+COUNT-1 of
the host are that user's to map. A rootless layerbuild maps the user's own id to 0 and their
ranges, one after another, to 1, 2, …: an image's files owned by 1000 are the host's
`START+999`, and a layer's tar holds 1000 again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_ID = 0xFFFFFFFE
"""The largest id a user namespace maps (4294967295 is "no id")."""


@dataclass(frozen=True)
class IdRange:
    """`count` host ids from `start`."""

    start: int
    count: int


@dataclass(frozen=True)
class Extent:
    """One line of a uid_map/gid_map: `count` ids from `inside` are the host's from `outside`."""

    inside: int
    outside: int
    count: int

    def args(self) -> list[str]:
        """The three words newuidmap/newgidmap take for it."""
        return [str(self.inside), str(self.outside), str(self.count)]


def ranges(text: str, user: str, uid: int) -> list[IdRange]:
    """The ranges `text` (a subuid or subgid file) gives the user named `user` with id `uid`,
    in file order; malformed lines are skipped, as shadow's tools do."""
    found: list[IdRange] = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0 and start + count - 1 <= MAX_ID:
            found.append(IdRange(start, count))
    return found


def id_map(own: int, subordinate: Iterable[IdRange]) -> list[Extent]:
    """The map of a rootless namespace: `own` (the user's id) to 0, then each range in turn
    from 1 up (a range holding `own` is used less that id, which is mapped already)."""
    extents = [Extent(0, own, 1)]
    inside = 1
    for item in subordinate:
        for start, count in _without(item, own):
            if inside + count - 1 > MAX_ID:
                count = MAX_ID - inside + 1
            if count <= 0:
                return extents
            extents.append(Extent(inside, start, count))
            inside += count
    return extents


def mapped(extents: Iterable[Extent]) -> int:
    """How many ids the map gives (0…N-1 when the extents follow each other, as `id_map`'s)."""
    return sum(e.count for e in extents)


def _without(item: IdRange, own: int) -> list[tuple[int, int]]:
    end = item.start + item.count
    if not item.start <= own < end:
        return [(item.start, item.count)]
    return [(s, c) for s, c in ((item.start, own - item.start), (own + 1, end - own - 1))
            if c > 0]

