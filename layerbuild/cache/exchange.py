"""The shared build cache's format (pure): step keys mapped to their history and layers.

A cache another machine can import is one JSON document, the *cache config*::

    {"version": 1,
     "layers": [{"diff_id": "sha256:…", "blob": DESCRIPTOR | absent}, …],
     "records": [{"key": KEY, "history": {…}, "stack": [i, …], "linked": false}, …]}

A record is one step's result: its history entry and, for a step that made a layer, `stack`,
the indices (into `layers`) of every layer the step's result stands on, base first, its own
last (empty for a step that only changes the config). A layer's `blob` is where its bytes are
(compressed, as pushed); a layer without one came with a base image, which every key that
stands on it names, so an importer has it already.

Exported to a registry or a folder (OCI layout), the config is the `config` blob of an OCI image
manifest whose `layers` are the blobs; inline, it is a field of the image's own config (`INLINE`)
whose layers are that image's (their blobs are the manifest's). An imported record is trusted
only with the digests it names: a layer is checked against its blob digest and its diff_id
when it is fetched, and a step whose layers below are not the importing build's own is a miss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layerbuild.digest import Digest, chain_id
from layerbuild.errors import FormatError
from layerbuild.image import Descriptor, History, canonical_json, layer_compression, load_json

VERSION = 1
CACHE_CONFIG = "application/vnd.layerbuild.cache.config.v1+json"
"""The media type of a cache config blob."""
INLINE = "layerbuild.cache.v1"
"""The image config field holding an inline cache (its records, its layers' diff_ids)."""
MAX_CONFIG = 16 << 20
"""Largest cache config read."""


@dataclass(frozen=True)
class CacheLayer:
    """A layer a record stands on: its diff_id and, unless a base image brings it, its blob."""

    diff_id: Digest
    blob: Descriptor | None = None


@dataclass(frozen=True)
class CacheRecord:
    """One step's result: `stack` indexes the config's layers, base first, the step's last."""

    key: str
    history: History
    stack: tuple[int, ...] = ()
    linked: bool = False

    @property
    def made_layer(self) -> bool:
        """Whether the step made a layer (else it changed the config only)."""
        return bool(self.stack)


@dataclass(frozen=True)
class CacheConfig:
    """Records and the layers they name; see the module for the JSON form."""

    layers: tuple[CacheLayer, ...] = ()
    records: tuple[CacheRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        layers = []
        for layer in self.layers:
            entry: dict[str, Any] = {"diff_id": str(layer.diff_id)}
            if layer.blob is not None:
                entry["blob"] = layer.blob.to_dict()
            layers.append(entry)
        records = []
        for record in self.records:
            item: dict[str, Any] = {"key": record.key, "history": record.history.to_dict()}
            if record.stack:
                item["stack"] = list(record.stack)
            if record.linked:
                item["linked"] = True
            records.append(item)
        return {"version": VERSION, "layers": layers, "records": records}

    def to_bytes(self) -> bytes:
        """Canonical bytes (the same records give the same blob anywhere)."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], what: str) -> CacheConfig:
        """Read and check a config: every index in range, every digest well formed, every
        blob a layer; FormatError naming `what` otherwise."""
        if raw.get("version") != VERSION:
            raise FormatError(f"{what}: cache version {raw.get('version')!r}, expected "
                              f"{VERSION}")
        try:
            layers = tuple(_layer(item) for item in _list(raw, "layers"))
            records = tuple(_record(item, len(layers)) for item in _list(raw, "records"))
        except (KeyError, TypeError, ValueError, FormatError) as exc:
            raise FormatError(f"{what}: malformed cache config ({exc})") from None
        return cls(layers, records)

    @classmethod
    def from_bytes(cls, data: bytes, what: str) -> CacheConfig:
        """Parse a cache config blob (depth-checked, as any untrusted JSON)."""
        raw = load_json(data, what)
        if not isinstance(raw, dict):
            raise FormatError(f"{what}: a cache config must be a JSON object")
        return cls.from_dict(raw, what)

    def blobs(self) -> list[Descriptor]:
        """The blobs of the layers, each once, in the order of `layers`."""
        seen: set[Digest] = set()
        out = []
        for layer in self.layers:
            if layer.blob is not None and layer.blob.digest not in seen:
                seen.add(layer.blob.digest)
                out.append(layer.blob)
        return out

    def with_blobs(self, blobs: Sequence[Descriptor | None]) -> CacheConfig:
        """The same records, each layer's blob the one at its index (an inline cache's come
        from its image's manifest)."""
        if len(blobs) != len(self.layers):
            raise FormatError(f"the cache names {len(self.layers)} layers, the image has "
                              f"{len(blobs)}")
        return CacheConfig(tuple(CacheLayer(layer.diff_id, blob if blob is not None
                                            else layer.blob)
                                 for layer, blob in zip(self.layers, blobs, strict=True)),
                           self.records)

    def without_layer(self, diff_id: Digest) -> CacheConfig:
        """The config less every record standing on the layer `diff_id` (found bad)."""
        bad = {i for i, layer in enumerate(self.layers) if layer.diff_id == diff_id}
        return CacheConfig(self.layers, tuple(r for r in self.records
                                              if not bad.intersection(r.stack)))

    def stack_chain(self, record: CacheRecord) -> Digest | None:
        """The chain ID of the layers below the record's own (None: it stands on none)."""
        top: Digest | None = None
        for index in record.stack[:-1]:
            top = chain_id(top, self.layers[index].diff_id)
        return top


def _list(raw: Mapping[str, Any], name: str) -> list[Any]:
    value = raw.get(name, [])
    if not isinstance(value, list):
        raise FormatError(f"{name} must be a list")
    return value


def _layer(item: Any) -> CacheLayer:
    if not isinstance(item, dict):
        raise FormatError("a layer must be an object")
    blob = None
    if item.get("blob") is not None:
        if not isinstance(item["blob"], dict):
            raise FormatError("a layer's blob must be a descriptor")
        blob = Descriptor.from_dict(item["blob"])
        layer_compression(blob.media_type)  # a layer, or FormatError
    return CacheLayer(Digest.parse(str(item["diff_id"])), blob)


def _record(item: Any, layers: int) -> CacheRecord:
    if not isinstance(item, dict) or not isinstance(item.get("history"), dict):
        raise FormatError("a record must be an object with a history")
    key = item["key"]
    if not isinstance(key, str) or len(key) != 64 or any(c not in "0123456789abcdef"
                                                         for c in key):
        raise FormatError(f"bad key {key!r}")
    stack = item.get("stack", [])
    if not isinstance(stack, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layers for i in stack):
        raise FormatError(f"record {key[:12]}: a layer index out of range")
    return CacheRecord(key, History.from_dict(item["history"]), tuple(stack),
                       bool(item.get("linked", False)))


@dataclass(frozen=True)
class StepResult:
    """What a build learnt of one step, for export: `stack` is the diff_ids of the layers its
    result stands on (base first, its own last; empty for a config-only step)."""

    key: str
    history: History
    stack: tuple[Digest, ...] = ()
    linked: bool = False


def assemble(steps: Iterable[StepResult], blobs: Mapping[Digest, Descriptor]) -> CacheConfig:
    """The cache config of `steps` (each key once, the first kept); a layer's blob is the one
    `blobs` has for its diff_id (none: a base image's layer)."""
    index: dict[tuple[Digest, Digest | None], int] = {}
    layers: list[CacheLayer] = []
    records: list[CacheRecord] = []
    keys: set[str] = set()
    for step in steps:
        if step.key in keys:
            continue
        keys.add(step.key)
        stack = []
        for diff_id in step.stack:
            blob = blobs.get(diff_id)
            slot = (diff_id, blob.digest if blob is not None else None)
            if slot not in index:
                index[slot] = len(layers)
                layers.append(CacheLayer(diff_id, blob))
            stack.append(index[slot])
        records.append(CacheRecord(step.key, step.history, tuple(stack), step.linked))
    return CacheConfig(tuple(layers), tuple(records))
