"""``RUN --mount=...`` values: comma-separated ``key=value`` fields, as BuildKit reads them.

Supported types: ``bind`` (the default), ``cache``, ``tmpfs`` and ``secret``. Path-like
fields (target, source, id, from, env) keep their text as written, to be expanded at build
time; the typed fields (type, sharing, mode, uid, gid, size, readonly, required) must be
literal, and ``from`` must be literal too (BuildKit refuses variables there as well).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from typing import Literal

from layerbuild.buildfile.flags import FlagError, parse_size

__all__ = ["Mount", "MountType", "parse_mount"]

MountType = Literal["bind", "cache", "tmpfs", "secret"]

_TYPES: tuple[MountType, ...] = ("bind", "cache", "tmpfs", "secret")
_SHARING = ("shared", "private", "locked")
_TEXT_KEYS = {
    "target": "target", "dst": "target", "destination": "target",
    "source": "source", "src": "source", "from": "from_", "id": "id", "env": "env",
}
_BOOL_KEYS = {"readonly": True, "ro": True, "readwrite": False, "rw": False}
_TYPED_KEYS = ("type", "sharing", "mode", "uid", "gid", "size", "required", *_BOOL_KEYS)


@dataclass(frozen=True)
class Mount:
    """One ``--mount`` of a RUN step.

    ``from_`` names a stage or image to take ``source`` from (bind, cache); ``id`` names a
    cache or secret; ``mode``/``uid``/``gid`` apply to cache and secret mounts; ``size`` (bytes)
    to tmpfs; ``required`` to secrets. ``readonly`` defaults to true for bind and secret mounts.
    """

    type: MountType
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    id: str | None = None
    sharing: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    readonly: bool = False
    required: bool = False
    size: int | None = None
    env: str | None = None


def parse_mount(value: str) -> Mount:
    """Parse one ``--mount`` value. Raises FlagError with the offending field."""
    fields = _fields(value)
    mount_type = _mount_type(fields)
    found: dict[str, object] = {"type": mount_type}
    for field in fields:
        key, has_value, text = field.partition("=")
        key = key.strip().lower()
        if key == "type":
            continue
        if not has_value:
            _bare(found, key, mount_type, field)
            continue
        if key in _TYPED_KEYS and "$" in text:
            raise FlagError(f"mount option {key} does not take variables: {field}")
        if key in _TEXT_KEYS:
            if key == "from" and "$" in text:
                raise FlagError("mount option from does not take variables; "
                                "name a stage instead")
            found[_TEXT_KEYS[key]] = text
        else:
            found.update(_typed(key, text, mount_type, field))
    return _checked(Mount(**found), "readonly" in found)  # type: ignore[arg-type]


def _fields(value: str) -> list[str]:
    if value.count('"') % 2:
        raise FlagError(f"invalid mount {value!r}: unbalanced double quote")
    try:
        rows = list(csv.reader([value], skipinitialspace=False, strict=True))
    except csv.Error as err:
        raise FlagError(f"invalid mount {value!r}: {err}") from None
    fields = [field for field in rows[0] if field] if rows else []
    if not fields:
        raise FlagError("empty --mount value")
    return fields


def _mount_type(fields: list[str]) -> MountType:
    for field in fields:
        key, _, text = field.partition("=")
        if key.strip().lower() == "type":
            lowered = text.lower()
            for known in _TYPES:
                if lowered == known:
                    return known
            raise FlagError(f"unsupported mount type {text!r} (use one of {', '.join(_TYPES)})")
    return "bind"


def _bare(found: dict[str, object], key: str, mount_type: str, field: str) -> None:
    if key in _BOOL_KEYS:
        found["readonly"] = _BOOL_KEYS[key]
    elif key == "required":
        found.update(_typed(key, "true", mount_type, field))
    else:
        raise FlagError(f"invalid mount field {field!r}: it must be a key=value pair")


def _typed(key: str, text: str, mount_type: str, field: str) -> dict[str, object]:
    if key in _BOOL_KEYS:
        flag = _bool(key, text)
        return {"readonly": flag if _BOOL_KEYS[key] else not flag}
    if key == "required":
        if mount_type != "secret":
            raise FlagError(f"unexpected key 'required' for mount type '{mount_type}'")
        return {"required": _bool(key, text)}
    if key == "sharing":
        if text.lower() not in _SHARING:
            raise FlagError(f"unsupported sharing value {text!r} (use shared, private, locked)")
        return {"sharing": text.lower()}
    if key in ("mode", "uid", "gid"):
        try:
            number = int(text, 8 if key == "mode" else 10)
        except ValueError:
            raise FlagError(f"invalid value {text!r} for {key}") from None
        if not 0 <= number < 2**32:
            raise FlagError(f"invalid value {text!r} for {key}")
        return {key: number}
    if key == "size":
        return {"size": parse_size(text)}
    known = ", ".join(sorted({*_TEXT_KEYS, *_TYPED_KEYS}))
    raise FlagError(f"unexpected key {key!r} in {field!r} (known: {known})")


def _bool(key: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise FlagError(f"invalid value for {key}: {text}")


def _checked(mount: Mount, readonly_given: bool) -> Mount:
    kind = mount.type
    if not readonly_given:
        mount = replace(mount, readonly=kind in ("bind", "secret"))
    file_info = kind in ("cache", "secret")
    for key in ("mode", "uid", "gid"):
        if getattr(mount, key) is not None and not file_info:
            raise FlagError(f"{key} not allowed for {kind!r} type mounts")
    if mount.sharing is not None and kind != "cache":
        raise FlagError(f"sharing not allowed for {kind!r} type mounts")
    if mount.size is not None and kind != "tmpfs":
        raise FlagError(f"size not allowed for {kind!r} type mounts")
    if mount.env is not None and kind != "secret":
        raise FlagError(f"env not allowed for {kind!r} type mounts")
    if kind == "secret":
        if mount.from_ is not None:
            raise FlagError("secret mount should not have a from")
        if mount.source is not None and mount.id is not None:
            raise FlagError("both source and id can't be set on a secret mount")
        if not (mount.source or mount.target or mount.id or mount.env):
            raise FlagError("invalid secret mount: one of id, source, target or env is required")
    elif not mount.target:
        raise FlagError(f"{kind} mount requires a target")
    if kind == "tmpfs" and (mount.source is not None or mount.from_ is not None):
        raise FlagError("tmpfs mount takes no source or from")
    return mount
