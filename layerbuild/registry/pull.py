"""Pulling an image into the store: resolve, choose a platform, fetch, verify, commit.

    manifest (tag or digest; an index picks the platform's entry) → config (verified) →
    layers, up to `jobs` at a time, each streamed straight from the socket through its
    digest check, kept compressed and unpacked in one pass → committed in order → config →
    tag and RepoDigest

A layer the store has ("Already exists") is never fetched. Nothing is visible before it is
whole and verified: a layer is staged, checked (blob digest, size, diff_id) and committed by
one rename; the image's config and tags come last. A pull that fails or is killed leaves the
layers it committed leased to its staging dir, released by the next debris cleaning, so the
store is as it was; the next pull fetches again what was not committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layerbuild.digest import Digest, chain_id
from layerbuild.errors import FormatError, RegistryError
from layerbuild.events import Events, Transfer
from layerbuild.fetching import JOBS, Fetch, fetch_layers
from layerbuild.image import (
    INDEX_TYPES,
    Descriptor,
    Image,
    Manifest,
    layer_compression,
    parse_json_object,
)
from layerbuild.reference import Reference
from layerbuild.registry.client import BlobReader, Repository
from layerbuild.registry.hosts import RegistryHosts
from layerbuild.registry.platforms import Platform, choose, listed
from layerbuild.registry.transport import Transport
from layerbuild.store import Store


@dataclass(frozen=True)
class Pulled:
    """What a pull stored: the image, the digest it was pulled by, and whether it is new."""

    image: Image
    reference: Reference
    digest: Digest
    fresh: bool


@dataclass(frozen=True)
class Resolved:
    """An image as the registry describes it, before any layer is fetched."""

    manifest: Manifest
    digest: Digest
    """The digest of what the reference names (the index, for a multi-platform image)."""
    image: Image


def resolve(repo: Repository, ref: Reference, platform: Platform | None = None,
            notice: Callable[[str], None] | None = None) -> Resolved:
    """Fetch the manifest `ref` names (choosing the platform's entry of an index) and its
    config, checked."""
    what = ref.familiar
    want = platform or Platform.host()
    top = repo.manifest(str(ref.digest) if ref.digest else str(ref.tag), what)
    raw = parse_json_object(top.data, f"{what} manifest")
    kind = str(raw.get("mediaType") or top.media_type or "")
    fetched = top
    if kind in INDEX_TYPES or ("manifests" in raw and "layers" not in raw):
        entries = [Descriptor.from_dict(d) for d in raw.get("manifests") or []
                   if isinstance(d, dict)]
        entry = choose(entries, want)
        if entry is None:
            offered = ", ".join(listed(entries)) or "none"
            raise RegistryError(f"{what}: no image for {want} (the image has: {offered})")
        fetched = repo.manifest(str(entry.digest), what)
        if entry.size != len(fetched.data):
            raise FormatError(f"{what}: the manifest for {want} is {len(fetched.data)} bytes, "
                              f"its index says {entry.size}")
        kind = entry.media_type
    manifest = Manifest.from_bytes(fetched.data, kind or fetched.media_type or None)
    for layer in manifest.layers:
        layer_compression(layer.media_type)  # an unknown type fails before any download
    config = repo.read_small_blob(manifest.config.digest, manifest.config.size,
                                  f"{what} config")
    image = Image.from_config_bytes(config)
    if len(manifest.layers) != len(image.config.diff_ids):
        raise FormatError(f"{what}: the manifest has {len(manifest.layers)} layers but the "
                          f"config {len(image.config.diff_ids)} diff_ids")
    got = Platform.of(image.config.os or "linux", image.config.architecture or "",
                      image.config.variant)
    if not want.matches(got) and got.architecture:
        if platform is not None:
            raise RegistryError(f"{what}: the image is for {got}, not the asked {want}")
        if notice is not None:
            notice(f"{what}: the image is for {got}, this machine is {want}")
    return Resolved(manifest, top.digest, image)


def pull(store: Store, ref: Reference, transport: Transport, hosts: RegistryHosts,
         platform: Platform | None = None, events: Events | None = None,
         jobs: int = JOBS, names: bool = True) -> Pulled:
    """Pull `ref` into the store and name it (its tag, and its RepoDigest; with `names`
    False, neither: a base of another platform must not take the host's image's name)."""
    events = events or Events()
    repo = Repository(transport, hosts, ref)
    found = resolve(repo, ref, platform, notice=events.note)
    image = found.image
    tags = [ref.with_tag(ref.tag)] if ref.tag is not None else []
    tags.append(ref.with_digest(found.digest))
    fresh = not store.has_image(image.id)
    added: set[Digest] = set()
    try:
        with store.staging() as lease:
            _fetch_layers(store, repo, found, lease, events, jobs, added)
            store.put_image(image, tags if names else [], lease)
    except BaseException:
        if added:
            store.release_layers(added)
        raise
    for desc, diff_id in zip(found.manifest.layers, image.config.diff_ids, strict=True):
        store.distribution.add(diff_id, desc.digest, ref.repository)
    return Pulled(image, ref, found.digest, fresh)


def _fetch_layers(store: Store, repo: Repository, found: Resolved, lease: Path,
                  events: Events, jobs: int, added: set[Digest]) -> None:
    diff_ids = found.image.config.diff_ids
    chains: list[Digest] = []
    parent: Digest | None = None
    for diff_id in diff_ids:
        parent = chain_id(parent, diff_id)
        chains.append(parent)
    todo = []
    for i, desc in enumerate(found.manifest.layers):
        existing = store.layer(chains[i])
        if existing is not None:
            store.hold(lease, existing.chain_id)
            events.emit(Transfer(desc.digest.short, "Already exists"))
        else:
            todo.append(i)
            events.emit(Transfer(desc.digest.short, "Pulling fs layer", 0, desc.size))
    fetches = []
    for i in todo:
        desc = found.manifest.layers[i]
        what = f"{repo.ref.name} layer {desc.digest.short}"
        fetches.append(Fetch(chains[i - 1] if i else None, diff_ids[i], desc,
                             blob_opener(repo, desc, what), what))
    fetch_layers(store, fetches, lease, events, added, jobs)


def blob_opener(repo: Repository, desc: Descriptor, what: str) -> Callable[[], BlobReader]:
    """How a fetch opens a blob of the repository."""
    return lambda: repo.open_blob(desc.digest, desc.size, what)
