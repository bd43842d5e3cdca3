"""Whiteout names and overlayfs xattrs, shared by export (overlay -> OCI) and extract.

The one place that knows what a whiteout is, in a tar (`.wh.NAME`) and in an overlay dir.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping

from layerbuild.nsmap import in_user_namespace

PREFIX = ".wh."
"""`dir/.wh.NAME` in a layer tar deletes NAME from the layers below."""
META_PREFIX = ".wh..wh."
"""Names under this prefix are metadata (aufs's `.wh..wh.plnk`, ...), never files."""
OPAQUE = ".wh..wh..opq"
"""`dir/.wh..wh..opq` hides everything the layers below have under `dir/`."""

_OVERLAY_NAMESPACES = ("trusted.overlay.", "user.overlay.")
_NOT_A_DIFF = ("redirect", "metacopy")


def opaque_xattr() -> str:
    """The xattr set to `y` on an opaque dir of an overlay upper or lower dir: overlayfs's
    `trusted.overlay.opaque`, or in a user namespace (mounts with `userxattr`, a rootless
    store) `user.overlay.opaque`."""
    return ("user" if in_user_namespace() else "trusted") + ".overlay.opaque"


def is_overlay_xattr(name: str) -> bool:
    """True for overlayfs's private xattrs, which never go into a layer tar."""
    return name.startswith(_OVERLAY_NAMESPACES)


def overlay_value(xattrs: dict[str, bytes], key: str) -> bytes | None:
    """The value of overlayfs's `key` xattr in either namespace (trusted or userxattr mounts)."""
    for namespace in _OVERLAY_NAMESPACES:
        if namespace + key in xattrs:
            return xattrs[namespace + key]
    return None


def read_xattrs(path: bytes | str) -> dict[str, bytes]:
    """Every xattr of a path, not following a symlink (none on a filesystem without them)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.ENOTSUP:  # a filesystem without xattrs has none to keep
            return {}
        raise
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names}


def is_whiteout(st: os.stat_result, xattrs: Callable[[], Mapping[str, bytes]]) -> bool:
    """True for an overlay dir entry that deletes its name from the layers below.

    overlayfs writes a 0/0 character device; where mknod is not allowed (a user namespace,
    `userxattr`) an empty file marked `overlay.whiteout`. `xattrs` is asked only for that form.
    """
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return (stat.S_ISREG(st.st_mode) and st.st_size == 0
            and overlay_value(dict(xattrs()), "whiteout") is not None)


def is_opaque(xattrs: dict[str, bytes]) -> bool:
    """True for a dir overlayfs marks opaque (it hides everything below it)."""
    return overlay_value(xattrs, "opaque") == b"y"


def not_a_diff(xattrs: dict[str, bytes]) -> str | None:
    """The overlay feature (redirect, metacopy) that makes an upper dir unfaithful, if any."""
    for key in _NOT_A_DIFF:
        if overlay_value(xattrs, key) is not None:
            return key
    return None


def whited_out(base: str) -> str:
    """The name a `.wh.NAME` entry deletes, or "" for a metadata name like `.wh..wh..opq`."""
    if base.startswith(META_PREFIX):
        return ""
    return base[len(PREFIX) :]
