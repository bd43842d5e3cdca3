"""Image values: descriptors, configs, history, manifests; canonical JSON for each.

All values are frozen. "Modifying" an image config returns a new one (`dataclasses.replace`).
Configs read from elsewhere keep their exact bytes, because the image ID is the digest of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from layerbuild.digest import Digest
from layerbuild.errors import FormatError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
LAYER_TYPES = frozenset({OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER,
                         DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN})
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys: the bytes layerbuild writes for configs and manifests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


MAX_JSON_DEPTH = 200
"""How deeply arrays and objects of a manifest, index or config may nest. Real ones nest a
few levels; the parser, and code that walks the values, recurse once per level."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_NESTING = re.compile(rb"[\[\]{}]")


def load_json(data: bytes, what: str) -> Any:
    """Parse untrusted JSON bytes, or raise FormatError naming `what` (also when they nest
    deeper than MAX_JSON_DEPTH)."""
    if _depth(data) > MAX_JSON_DEPTH:
        raise FormatError(f"{what}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"{what}: not valid JSON ({exc})") from None


def _depth(data: bytes) -> int:
    """The deepest nesting of brackets outside strings (a linear scan; not a validation)."""
    depth = deepest = 0
    for m in _JSON_NESTING.finditer(_JSON_STRING.sub(b"", data)):
        if m.group() in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse bytes that must hold a JSON object, or raise FormatError naming `what`."""
    value = load_json(data, what)
    if not isinstance(value, dict):
        raise FormatError(f"{what}: expected a JSON object")
    return value


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest and size (plus optional annotations)."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] | None = None
    platform: Mapping[str, str] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        """Read a descriptor from its JSON form."""
        try:
            size = int(data["size"])
            if size < 0:
                raise ValueError("negative size")
            return cls(str(data.get("mediaType", "")), Digest.parse(str(data["digest"])), size,
                       data.get("annotations"), data.get("platform"))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed descriptor {dict(data)!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The descriptor's JSON form."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out


@dataclass(frozen=True)
class History:
    """One history entry: which instruction made a layer (or an empty one)."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Read a history entry from its JSON form."""
        return cls(data.get("created"), data.get("created_by"), data.get("author"),
                   data.get("comment"), bool(data.get("empty_layer", False)))

    def to_dict(self) -> dict[str, Any]:
        """The entry's JSON form, omitting empty fields as Docker does."""
        out: dict[str, Any] = {}
        for key, value in (("created", self.created), ("created_by", self.created_by),
                           ("author", self.author), ("comment", self.comment)):
            if value is not None:
                out[key] = value
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@dataclass(frozen=True)
class ImageConfig:
    """An image config: platform, runtime `config` section, rootfs diff_ids and history.

    `config` holds the runtime section (User, Env, Cmd, Healthcheck, OnBuild, Shell, …) as
    Docker's JSON keys; `extra` keeps top-level fields layerbuild does not model, so reading
    and writing a config loses nothing.
    """

    architecture: str
    os: str
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    created: str | None = None
    author: str | None = None
    variant: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageConfig:
        """Parse a config blob; a malformed one raises FormatError."""
        raw = parse_json_object(data, "image config")
        rootfs = raw.get("rootfs")
        if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
            raise FormatError("image config: rootfs.type must be \"layers\"")
        diff_ids = rootfs.get("diff_ids") or []
        history = raw.get("history") or []
        if not isinstance(diff_ids, list) or not isinstance(history, list):
            raise FormatError("image config: diff_ids and history must be lists")
        known = {"architecture", "os", "rootfs", "history", "config", "created", "author",
                 "variant"}
        return cls(
            architecture=str(raw.get("architecture", "")),
            os=str(raw.get("os", "")),
            diff_ids=tuple(Digest.parse(str(d)) for d in diff_ids),
            history=tuple(History.from_dict(h) for h in history if isinstance(h, dict)),
            config=dict(raw.get("config") or {}),
            created=raw.get("created"),
            author=raw.get("author"),
            variant=raw.get("variant"),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The config's JSON form."""
        out: dict[str, Any] = dict(self.extra)
        out.update({"architecture": self.architecture, "os": self.os,
                    "config": dict(self.config),
                    "rootfs": {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]},
                    "history": [h.to_dict() for h in self.history]})
        for key, value in (("created", self.created), ("author", self.author),
                           ("variant", self.variant)):
            if value is not None:
                out[key] = value
        return out

    def to_bytes(self) -> bytes:
        """Canonical bytes of the config; their digest is the image ID."""
        return canonical_json(self.to_dict())

    def with_layer(self, diff_id: Digest, history: History) -> ImageConfig:
        """A new config with one more layer on top and its history entry."""
        return replace(self, diff_ids=(*self.diff_ids, diff_id),
                       history=(*self.history, replace(history, empty_layer=False)))

    def with_history(self, history: History) -> ImageConfig:
        """A new config with one more empty-layer history entry."""
        return replace(self, history=(*self.history, replace(history, empty_layer=True)))

    def with_config(self, **changes: Any) -> ImageConfig:
        """A new config whose runtime section has the given keys set (None removes a key)."""
        section = dict(self.config)
        for key, value in changes.items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
        return replace(self, config=section)


@dataclass(frozen=True)
class Image:
    """A stored image: its config bytes (exact) and the parsed config."""

    config_bytes: bytes
    config: ImageConfig

    @classmethod
    def from_config_bytes(cls, data: bytes) -> Image:
        """An image from exact config bytes."""
        return cls(data, ImageConfig.from_bytes(data))

    @classmethod
    def from_config(cls, config: ImageConfig) -> Image:
        """An image from a config value, serialised canonically."""
        return cls(config.to_bytes(), config)

    @property
    def id(self) -> Digest:
        """Docker's image ID: the digest of the config bytes."""
        return Digest.of(self.config_bytes)


def host_platform() -> tuple[str, str | None]:
    """The host's (OCI architecture, variant), e.g. ("amd64", None) or ("arm64", "v8")."""
    import platform  # here: most commands never ask, and it costs ~1.5 ms to import

    machine = platform.machine().lower()
    table: dict[str, tuple[str, str | None]] = {
        "x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
        "i686": ("386", None), "i386": ("386", None), "ppc64le": ("ppc64le", None),
        "s390x": ("s390x", None), "riscv64": ("riscv64", None),
    }
    return table.get(machine, (machine, None))


def empty_config(created: str | None = None) -> ImageConfig:
    """The config of an image with no layers (`FROM scratch`), for the host's platform."""
    arch, variant = host_platform()
    return ImageConfig(architecture=arch, os="linux", variant=variant, created=created,
                       config={})


def manifest_bytes(config: Descriptor, layers: list[Descriptor],
                   annotations: Mapping[str, str] | None = None) -> bytes:
    """Canonical bytes of an OCI image manifest."""
    value: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                             "config": config.to_dict(), "layers": [d.to_dict() for d in layers]}
    if annotations:
        value["annotations"] = dict(annotations)
    return canonical_json(value)


def index_bytes(manifests: list[Descriptor]) -> bytes:
    """Canonical bytes of an OCI image index."""
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": [d.to_dict() for d in manifests]})


@dataclass(frozen=True)
class Manifest:
    """A parsed image manifest (OCI or Docker v2)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Manifest:
        """Parse a manifest; unknown media types and malformed fields raise FormatError."""
        raw = parse_json_object(data, "manifest")
        kind = str(raw.get("mediaType") or media_type or OCI_MANIFEST)
        if kind not in MANIFEST_TYPES:
            raise FormatError(f"manifest: unsupported media type {kind!r}")
        if raw.get("schemaVersion") != 2:
            raise FormatError("manifest: schemaVersion must be 2")
        try:
            layers = tuple(Descriptor.from_dict(d) for d in raw.get("layers") or [])
            return cls(kind, Descriptor.from_dict(raw["config"]), layers)
        except (KeyError, TypeError) as exc:
            raise FormatError(f"manifest: missing {exc}") from None


def layer_compression(media_type: str) -> str:
    """"gzip", "zstd" or "none" for a layer media type; FormatError for a non-layer type."""
    if media_type not in LAYER_TYPES:
        raise FormatError(f"unsupported layer media type {media_type!r}")
    if media_type.endswith("zstd"):
        return "zstd"
    return "gzip" if media_type.endswith("gzip") else "none"


def layer_media_type(compression: str) -> str:
    """The OCI layer media type for "none", "gzip" or "zstd"."""
    return {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}[compression]


def rfc3339(epoch: int | None = None) -> str:
    """A UTC timestamp as Docker writes it; `epoch` (SOURCE_DATE_EPOCH) or now."""
    import datetime as _dt  # loaded by the code that makes or reads times only

    if epoch is not None:
        return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timestamp(created: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (any precision), or None if it is not one.

    >>> timestamp("1970-01-01T00:01:00.123456789Z")
    60.123456
    """
    import datetime as _dt

    head, dot, rest = created.partition(".")
    if dot:  # Python reads at most microseconds
        digits = len(rest) - len(rest.lstrip("0123456789"))
        head = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        when = _dt.datetime.fromisoformat(head)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()
