"""`--cache-to` and `--cache-from` values (pure), read as BuildKit reads them.

    type=registry,ref=REG/REPO:TAG[,mode=min|max][,compression=gzip|zstd]
    type=local,dest=DIR[,tag=T][,mode=…][,compression=…]      (--cache-from: src=DIR)
    type=inline                                               (--cache-to only)
    REG/REPO:TAG                                              (--cache-from: type=registry)

`mode=min` (the default, as BuildKit's) exports the steps of the final image; `max` every
stage's steps too.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerbuild.errors import LayerbuildError
from layerbuild.reference import InvalidReference, Reference
from layerbuild.request import flag_fields

TYPES = ("registry", "local", "inline")
MODES = ("min", "max")
COMPRESSIONS = ("gzip", "zstd")
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class CacheSpec:
    """One cache to export to or import from."""

    type: str
    ref: str = ""
    """For registry: the reference, its tag defaulting to `latest`."""
    path: str = ""
    """For local: the folder (an OCI layout)."""
    tag: str = DEFAULT_TAG
    """For local: the name of the cache in the folder."""
    mode: str = "min"
    compression: str = "gzip"

    def describe(self) -> str:
        """How a step that came from this cache says where: `REG/REPO:TAG`, `DIR:TAG`."""
        if self.type == "local":
            return f"{self.path}:{self.tag}"
        return self.ref


def parse_cache_spec(text: str, exporting: bool) -> CacheSpec:
    """Parse one `--cache-to` (`exporting`) or `--cache-from` value."""
    flag = "--cache-to" if exporting else "--cache-from"
    if "=" not in text:
        if exporting:
            raise LayerbuildError(f"{flag} {text}: expected type=registry,ref=REF, "
                                  "type=local,dest=DIR or type=inline")
        return CacheSpec("registry", _ref(text, flag, text))
    given = flag_fields(text, flag)
    kind = given.pop("type", "registry" if "ref" in given else "")
    if kind not in TYPES:
        raise LayerbuildError(f"{flag} {text}: unknown type {kind!r} (one of "
                              f"{', '.join(TYPES)})")
    mode = given.pop("mode", "min")
    compression = given.pop("compression", "gzip")
    if mode not in MODES:
        raise LayerbuildError(f"{flag} {text}: mode must be min or max")
    if compression not in COMPRESSIONS:
        raise LayerbuildError(f"{flag} {text}: compression must be gzip or zstd")
    given.pop("ignore-error", None)
    given.pop("oci-mediatypes", None)  # always OCI
    if kind == "registry":
        ref = given.pop("ref", "")
        if not ref:
            raise LayerbuildError(f"{flag} {text}: ref= is required")
        spec = CacheSpec("registry", _ref(ref, flag, text), mode=mode,
                         compression=compression)
    elif kind == "local":
        where = "dest" if exporting else "src"
        path = given.pop(where, "")
        if not path:
            raise LayerbuildError(f"{flag} {text}: {where}= is required")
        tag = given.pop("tag", DEFAULT_TAG) or DEFAULT_TAG
        spec = CacheSpec("local", path=path, tag=tag, mode=mode, compression=compression)
    else:
        if not exporting:
            raise LayerbuildError(f"{flag} {text}: an inline cache is imported from its "
                                  "image: give --cache-from REF")
        spec = CacheSpec("inline")
    if given:
        raise LayerbuildError(f"{flag} {text}: unknown field {sorted(given)[0]}=")
    return spec


def _ref(ref: str, flag: str, text: str) -> str:
    try:
        parsed = Reference.parse(ref, digests=True)
    except InvalidReference as exc:
        raise LayerbuildError(f"{flag} {text}: {exc}") from None
    return parsed.familiar  # a tag defaults to latest
