"""Build caches shared between machines: imported by `--cache-from`, exported by `--cache-to`.

An imported cache is only its cache config (a manifest and one small blob, fetched when the
build starts): a step whose key it has is a hit, and the layer is fetched when something needs
its files (a later step that runs, another stage's COPY --from, the image at the end), so a
hit followed by hits downloads nothing until the end. Where a cache cannot be read (missing,
unreachable, malformed) the build says so and goes on without it, as BuildKit does.

Sources: a registry (`type=registry`, a cache manifest, or an image with an inline cache), a
folder (`type=local`, an OCI layout). Export writes the records of the build's steps (`min`:
the final image's; `max`: every stage's) and the blobs of the layers they made, skipping blobs
the target has; an inline cache goes into the image config (see the engine).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from layerbuild.cache.exchange import (
    CACHE_CONFIG,
    INLINE,
    MAX_CONFIG,
    CacheConfig,
    CacheLayer,
    CacheRecord,
    StepResult,
    assemble,
)
from layerbuild.cache.layout import CacheFolder
from layerbuild.cache.options import CacheSpec
from layerbuild.digest import Digest
from layerbuild.errors import FormatError, LayerbuildError
from layerbuild.events import Events
from layerbuild.image import Descriptor, Manifest, layer_media_type, manifest_bytes
from layerbuild.layerblob import LayerBlob, layer_blob
from layerbuild.reference import Reference
from layerbuild.store import Store

if TYPE_CHECKING:  # types only: a build without --cache-* loads no registry code
    from layerbuild.registry import Registry

Opener = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass
class Source:
    """An imported cache: where it came from (as steps report it), its config, and how to
    open one of its blobs."""

    name: str
    config: CacheConfig
    opener: Callable[[Descriptor], Opener]
    by_key: dict[str, CacheRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index()

    def index(self) -> None:
        """Look records up by key (the first of a key wins)."""
        self.by_key = {}
        for record in self.config.records:
            self.by_key.setdefault(record.key, record)


class Imported:
    """The caches a build imports, looked up in the order given."""

    def __init__(self, sources: Sequence[Source] = ()) -> None:
        self.sources = list(sources)

    def candidates(self, key: str) -> Iterator[tuple[CacheRecord, Source]]:
        """The records of `key`, each with its cache, in the order of the caches."""
        for source in self.sources:
            if (record := source.by_key.get(key)) is not None:
                yield record, source

    def drop_layer(self, source: Source, diff_id: Digest) -> None:
        """Forget the records of `source` that stand on a layer found bad."""
        source.config = source.config.without_layer(diff_id)
        source.index()


def load_sources(specs: Sequence[CacheSpec], registry: Callable[[], Registry],
                 warn: Callable[[str], None], platform: str | None = None) -> Imported:
    """Read each `--cache-from` cache's config (no layer is fetched); one that cannot be read
    is left out with a warning."""
    sources = []
    for spec in specs:
        try:
            if spec.type == "local":
                source = _local_source(spec)
            else:
                source = _registry_source(spec, registry(), platform)
        except LayerbuildError as exc:
            warn(f"warning: --cache-from {spec.describe()}: {exc}; building without it")
            continue
        if source is None:
            warn(f"warning: --cache-from {spec.describe()}: no cache there; building "
                 "without it")
            continue
        sources.append(source)
    return Imported(sources)


def _local_source(spec: CacheSpec) -> Source | None:
    folder = CacheFolder(spec.path)
    found = folder.manifest(spec.tag)
    if found is None:
        return None
    what = f"{spec.describe()} cache"
    manifest = Manifest.from_bytes(found[1])
    if manifest.config.media_type != CACHE_CONFIG:
        raise FormatError(f"{what}: {manifest.config.media_type} is no build cache")
    data = folder.read_small(manifest.config, MAX_CONFIG, "cache config")
    config = CacheConfig.from_bytes(data, what)

    def opener(desc: Descriptor) -> Opener:
        return lambda: folder.open_blob(desc.digest)
    return Source(spec.describe(), config, opener)


def _registry_source(spec: CacheSpec, session: Registry, platform: str | None,
                     ) -> Source | None:
    from layerbuild.image import parse_json_object
    from layerbuild.registry.client import Repository
    from layerbuild.registry.errors import NotFound
    from layerbuild.registry.platforms import Platform
    from layerbuild.registry.pull import blob_opener, resolve

    ref = Reference.parse(spec.ref, digests=True)
    repo = Repository(session.transport, session.hosts, ref)
    what = f"{ref.familiar} cache"
    try:
        top = repo.manifest(str(ref.digest) if ref.digest else str(ref.tag), ref.familiar)
    except NotFound:
        return None
    raw = parse_json_object(top.data, f"{ref.familiar} manifest")
    declared = raw.get("config")
    if isinstance(declared, dict) and declared.get("mediaType") == CACHE_CONFIG:
        manifest = Manifest.from_bytes(top.data, top.media_type or None)
        data = repo.read_small_blob(manifest.config.digest, manifest.config.size,
                                    f"{what} config", limit=MAX_CONFIG)
        config = CacheConfig.from_bytes(data, what)
    else:  # an image: its inline cache, if it has one
        found = resolve(repo, ref, Platform.parse(platform) if platform else None)
        inline = found.image.config.extra.get(INLINE)
        if not isinstance(inline, dict):
            return None
        config = CacheConfig.from_dict(inline, what)
        if [layer.diff_id for layer in config.layers] != list(found.image.config.diff_ids):
            raise FormatError(f"{what}: the inline cache names other layers than its image")
        config = config.with_blobs(found.manifest.layers)

    def opener(desc: Descriptor) -> Opener:
        return blob_opener(repo, desc, f"{ref.familiar} layer {desc.digest.short}")
    return Source(spec.describe(), config, opener)


@dataclass(frozen=True)
class Exportable:
    """What an export needs of the build: its steps, where each layer it made is, how to
    bring in a layer still only in an imported cache, and that layer's blob there."""

    steps: Sequence[StepResult]
    made: Mapping[Digest, Digest]
    """The chain ID of a stored (or to be fetched) layer of each diff_id the build made."""
    ready: Callable[[Digest], None]
    """Fetch the layer of this chain ID if it is only in an imported cache."""
    imported_blob: Callable[[Digest], Descriptor | None]
    """The imported blob of a layer not fetched (by chain ID), or None."""


def export_cache(store: Store, spec: CacheSpec, build: Exportable,
                 registry: Callable[[], Registry], events: Events) -> None:
    """Write the build's cache where `spec` says."""
    events.note(f"exporting cache to {spec.describe()}")
    media = layer_media_type(spec.compression)
    wanted = {d for step in build.steps for d in step.stack if d in build.made}
    folder = CacheFolder(spec.path) if spec.type == "local" else None
    has: Callable[[Digest], bool]
    if folder is not None:
        has = folder.has_blob
    else:
        from layerbuild.registry.client import Repository

        session = registry()
        ref = Reference.parse(spec.ref, digests=True)
        target = Repository(session.transport, session.hosts, ref, push=True)
        has = lambda digest: target.has_blob(digest, f"{ref.familiar} blob")  # noqa: E731
    blobs: dict[Digest, Descriptor] = {}
    sent: list[tuple[Digest | None, LayerBlob]] = []
    for diff_id in sorted(wanted, key=lambda d: _first_use(build.steps, d)):
        chain = build.made[diff_id]
        known = build.imported_blob(chain)
        if known is not None and known.media_type == media and has(known.digest):
            blob = LayerBlob(known, _not_fetched(known))  # the target has it: nothing to move
        else:
            build.ready(chain)
            layer = store.layer(chain)
            if layer is None:
                raise LayerbuildError(f"layer {chain} went from the store during the build")
            blob = layer_blob(store, layer, spec.compression)
        blobs[diff_id] = blob.descriptor
        sent.append((diff_id, blob))
    config = assemble(build.steps, blobs)
    data = config.to_bytes()
    config_desc = Descriptor(CACHE_CONFIG, Digest.of(data), len(data))
    if folder is not None:
        for _, blob in sent:
            folder.copy_blob(blob.descriptor.digest, blob.open)
        folder.put_bytes(data)
        folder.name_manifest(spec.tag, manifest_bytes(config_desc,
                                                      [b.descriptor for _, b in sent]))
        return
    from layerbuild.registry.push import push_manifest

    push_manifest(store, ref, session.transport, session.hosts, config_desc, data, sent,
                  events)


def inline_cache(steps: Sequence[StepResult], diff_ids: Sequence[Digest]) -> dict[str, Any]:
    """The inline cache of the image of layers `diff_ids` made by `steps`: its layers are the
    image's own (their blobs, the manifest's), and each step's stack a part of them from the
    base up."""
    layers = tuple(CacheLayer(d) for d in diff_ids)
    records = []
    for step in steps:
        if tuple(diff_ids[:len(step.stack)]) != step.stack:
            continue  # not on the image's layers (cannot be, for the final image's steps)
        records.append(CacheRecord(step.key, step.history, tuple(range(len(step.stack))),
                                   step.linked))
    return CacheConfig(layers, tuple(records)).to_dict()


def _first_use(steps: Sequence[StepResult], diff_id: Digest) -> int:
    return next(i for i, step in enumerate(steps) if diff_id in step.stack)


def _not_fetched(desc: Descriptor) -> Callable[[], BinaryIO]:
    def refuse() -> BinaryIO:
        raise LayerbuildError(f"blob {desc.digest} was expected at the cache's target")
    return refuse
