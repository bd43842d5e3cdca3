"""What the builder hands the sandbox: a step's filesystem, its process, its mounts, its copies."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from layerbuild.errors import StepFailed
from layerbuild.sandbox.entries import entry_paths

MOUNT_KINDS = ("bind", "cache", "tmpfs", "secret")
# default: a private network namespace served by slirp4netns; host: the host's; none: only lo
NETWORKS = ("default", "private", "host", "none")
"""RUN's networks: "private" is a namespace of its own with slirp4netns, "default" is that for
root and the host's rootless."""


@dataclass(frozen=True)
class Mount:
    """A RUN --mount, already resolved to host paths by the caller."""

    kind: str
    target: str
    source: Path | None
    readonly: bool = True
    size: int | None = None
    mode: int | None = None
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class PreviousLayer:
    """The layer the last build of a COPY step made, for a copy that differs in a few files.

    `changed` are the source paths (each ended by a NUL, as `CopyItem.entries`) whose content
    is not what went into `layer` or that are new. The copy may hard-link any other source's
    file from `layer` instead of copying it, when the layer's file there has the metadata the
    copy would give it: the layer is the same as a copy without it, file for file. `epoch`
    is the build's SOURCE_DATE_EPOCH, to which the layer's mtimes were clamped.
    """

    layer: Path
    changed: str = ""
    epoch: int | None = None


@dataclass(frozen=True)
class StepRoot:
    """The filesystem a step sees: layer diff dirs (top first), a fresh upper and its workdir."""

    lowers: tuple[Path, ...]
    upper: Path
    work: Path


@dataclass(frozen=True)
class RunSpec:
    """The process of a RUN step and everything it runs with.

    `user` is numeric (`uid:gid[:g1,g2]`). With `image_user`, a USER value (`user[:group]`,
    names or numbers; "" for root), the ids are looked up instead in the /etc/passwd and
    /etc/group of the image the step sees, once it is mounted (UnknownUser for a name it
    lacks). With `home_at`, `HOME=` the running uid's home directory there ("/" without
    one) is inserted at that index of `env`, for an environment that sets no HOME.
    """

    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = "0:0"
    network: str = "default"
    hostname: str = "buildkitsandbox"
    mounts: tuple[Mount, ...] = ()
    timeout: float | None = None
    seccomp: bool = True  # Docker's default seccomp profile; False runs the step unconfined
    image_user: str | None = None
    home_at: int | None = None


@dataclass(frozen=True)
class CopyItem:
    """One file tree to write into the image.

    `source` is relative to the source root; `dest` is absolute in the image. A directory
    source copies its contents into `dest`, or, with `recursive=False`, only the directory
    entry itself (for callers that walk the tree themselves). A non-directory goes inside
    `dest` when `dest` ends with `/`, or is an existing directory and `into_existing_dir`.
    `uid`/`gid` None keep the source's owner; `mode` None keeps its mode. Directories made
    on the way take the source's times, or `made_time` (seconds) when it is given: for
    sources whose own times mean nothing, such as a scratch dir. Files that are hard links
    of each other in the source stay hard links when items of the same `link_group` copy
    them (BuildKit keeps the links inside one source path, never across two paths).

    `entries`, for a directory `source` copied with `recursive=False`, are paths below it
    (relative to it, parents first, each ended by a NUL) that are then copied one by one, each
    as an item of its own (`recursive=False`, `entry_mode` as its mode, the other fields this
    item's) to the same path below `dest`: the tree as the caller walked it (ignored entries
    left out), one string rather than an item, or even a string, per entry.
    """

    source: str
    dest: str
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    recursive: bool = True
    into_existing_dir: bool = True
    made_time: int | None = None
    link_group: int = 0
    entries: str = ""
    entry_mode: int | None = None

    def each(self) -> Iterator[CopyItem]:
        """This item (without its entries) and, one by one, an item per entry (see the
        class)."""
        yield replace(self, entries="", entry_mode=None)
        base = "" if self.source == "." else self.source + "/"
        for inner in entry_paths(self.entries):
            yield CopyItem(base + inner, posixpath.join(self.dest, inner), self.uid, self.gid,
                           self.entry_mode, False, self.into_existing_dir, self.made_time,
                           self.link_group)


def parse_user(user: str) -> tuple[int, int, tuple[int, ...]]:
    """`uid:gid[:g1,g2]` as numbers.

    >>> parse_user("1000:100:10,20")
    (1000, 100, (10, 20))
    """
    parts = user.split(":")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0]), ()
        groups = tuple(int(g) for g in parts[2].split(",") if g) if len(parts) > 2 else ()
        if len(parts) > 3:
            raise ValueError(user)
        return int(parts[0]), int(parts[1]), groups
    except ValueError:
        raise StepFailed(f"user {user!r} is not numeric uid:gid[:groups]") from None


def _absolute(path: str, what: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise StepFailed(f"{what} {path!r} is not an absolute path inside the image")
    return path


def encode_root(root: StepRoot) -> dict[str, Any]:
    """A step root as plain JSON values."""
    return {"lowers": [str(p) for p in root.lowers], "upper": str(root.upper),
            "work": str(root.work)}


def encode_mount(m: Mount) -> dict[str, Any]:
    """A RUN --mount as plain JSON values, checked."""
    if m.kind not in MOUNT_KINDS:
        raise StepFailed(f"unknown mount type {m.kind!r}")
    if m.kind != "tmpfs" and m.source is None:
        raise StepFailed(f"--mount type={m.kind} target={m.target}: no source")
    return {"kind": m.kind, "target": _absolute(m.target, "mount target"),
            "source": str(m.source) if m.source is not None else None,
            "readonly": m.readonly, "size": m.size, "mode": m.mode, "uid": m.uid,
            "gid": m.gid}


def encode_run(spec: RunSpec) -> dict[str, Any]:
    """A step's process as plain JSON values, checked."""
    if not spec.argv:
        raise StepFailed("nothing to run: empty command")
    if spec.network not in NETWORKS:
        raise StepFailed(f"network {spec.network!r} is not one of {', '.join(NETWORKS)}")
    uid, gid, groups = parse_user(spec.user)
    if spec.home_at is not None and not 0 <= spec.home_at <= len(spec.env):
        raise StepFailed(f"HOME's place {spec.home_at} is outside the environment")
    return {"argv": list(spec.argv), "env": list(spec.env),
            "cwd": _absolute(spec.cwd, "working directory"), "uid": uid, "gid": gid,
            "groups": list(groups), "network": spec.network, "hostname": spec.hostname,
            "mounts": [encode_mount(m) for m in spec.mounts], "image_user": spec.image_user,
            "home_at": spec.home_at}


def encode_items(items: list[CopyItem]) -> list[dict[str, Any]]:
    """Copy items as plain JSON values; an item's `entries` stay one string (the sandbox's
    `child.each_item` makes an item of each)."""
    out = []
    for i in items:
        item: dict[str, Any] = {
            "source": i.source, "dest": _absolute(i.dest, "destination"), "uid": i.uid,
            "gid": i.gid, "mode": i.mode, "recursive": i.recursive,
            "into_existing_dir": i.into_existing_dir, "made_time": i.made_time,
            "link_group": i.link_group}
        if i.entries:
            if i.recursive:
                raise StepFailed(f"{i.source}: entries of a recursive copy")
            paths = "\0" + i.entries
            if not paths.endswith("\0") or "\0\0" in paths or "\0/" in paths:
                raise StepFailed(f"entries of {i.source}: not paths below it, each ended by NUL")
            item["entries"], item["entry_mode"] = i.entries, i.entry_mode
        out.append(item)
    return out
