"""Whiteout names and overlayfs xattrs, shared by export (overlay -> OCI) and extract."""

from __future__ import annotations

PREFIX = ".wh."
"""`dir/.wh.NAME` in a layer tar deletes NAME from the layers below."""
META_PREFIX = ".wh..wh."
"""Names under this prefix are metadata (aufs's `.wh..wh.plnk`, ...), never files."""
OPAQUE = ".wh..wh..opq"
"""`dir/.wh..wh..opq` hides everything the layers below have under `dir/`."""

OPAQUE_XATTR = "trusted.overlay.opaque"
"""Set to `y` on an opaque dir of an overlay upper or lower dir."""
_OVERLAY_NAMESPACES = ("trusted.overlay.", "user.overlay.")
_NOT_A_DIFF = ("redirect", "metacopy")


def is_overlay_xattr(name: str) -> bool:
    """True for overlayfs's private xattrs, which never go into a layer tar."""
    return name.startswith(_OVERLAY_NAMESPACES)


def overlay_value(xattrs: dict[str, bytes], key: str) -> bytes | None:
    """The value of overlayfs's `key` xattr in either namespace (trusted or userxattr mounts)."""
    for namespace in _OVERLAY_NAMESPACES:
        if namespace + key in xattrs:
            return xattrs[namespace + key]
    return None


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
