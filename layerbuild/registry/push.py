"""Pushing a stored image: blobs the registry lacks, then the manifest, last.

Per layer, up to `jobs` at a time: `HEAD` first ("Layer already exists"); else a mount from
another repository of the same registry that is known to hold it ("Mounted from …"); else an
upload, in one PUT for a small blob and in chunks for a large one. The blob is the stored one
in the asked compression, made once and kept (a second push does not compress again). The
config goes up like a layer; the manifest names only blobs that are there, so a failed or
killed push leaves nothing in the registry that a tag names.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

from layerbuild.digest import Digest
from layerbuild.errors import RegistryError
from layerbuild.events import Events, Transfer
from layerbuild.image import OCI_CONFIG, OCI_MANIFEST, Descriptor, Image, manifest_bytes
from layerbuild.layerblob import LayerBlob, layer_blob
from layerbuild.reference import Reference
from layerbuild.registry.client import Repository
from layerbuild.registry.hosts import RegistryHosts
from layerbuild.registry.transport import Transport
from layerbuild.store import Store

JOBS = 3
"""Blobs sent at once (Docker's max-concurrent-uploads is 5; 3 keeps 2 cores busy)."""
CHUNK = 32 << 20
"""Blobs up to this size go in one PUT; larger ones in PATCHes of this size."""


@dataclass(frozen=True)
class Pushed:
    """What a push made: the manifest's digest and size, under the pushed reference."""

    reference: Reference
    digest: Digest
    size: int


def push(store: Store, image: Image, ref: Reference, transport: Transport,
         hosts: RegistryHosts, compression: str = "gzip", events: Events | None = None,
         jobs: int = JOBS, chunk: int = CHUNK) -> Pushed:
    """Push `image` to `ref` (a tag, or by digest when `ref` has none) and record the
    RepoDigest."""
    with store.staging() as lease:
        layers = store.hold_image(image, lease)
        blobs = [(layer.diff_id, layer_blob(store, layer, compression)) for layer in layers]
        config = Descriptor(OCI_CONFIG, image.id, len(image.config_bytes))
        digest, size = push_manifest(store, ref, transport, hosts, config, image.config_bytes,
                                     blobs, events, jobs, chunk)
    store.add_repo_digest(image, ref.with_digest(digest))
    return Pushed(ref, digest, size)


def push_manifest(store: Store, ref: Reference, transport: Transport, hosts: RegistryHosts,
                  config: Descriptor, config_bytes: bytes,
                  blobs: Sequence[tuple[Digest | None, LayerBlob]],
                  events: Events | None = None, jobs: int = JOBS, chunk: int = CHUNK,
                  ) -> tuple[Digest, int]:
    """Push the blobs the registry lacks (each with its diff_id, when it is a stored layer's),
    the config, then an OCI manifest of them under `ref`; the manifest's digest and size."""
    events = events or Events()
    repo = Repository(transport, hosts, ref, push=True)
    for _, blob in blobs:
        events.emit(Transfer(blob.descriptor.digest.short, "Preparing"))

    def one(item: tuple[Digest | None, LayerBlob]) -> None:
        _send(store, repo, ref, item[0], item[1], events, chunk)

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="push") as pool:
        for _ in pool.map(one, blobs):
            pass
    config_blob = LayerBlob(config, lambda: io.BytesIO(config_bytes))
    _send(store, repo, ref, None, config_blob, Events(), chunk)
    data = manifest_bytes(config, [blob.descriptor for _, blob in blobs])
    digest = repo.put_manifest(str(ref.tag) if ref.tag else str(Digest.of(data)), data,
                               OCI_MANIFEST, ref.familiar)
    return digest, len(data)


def _send(store: Store, repo: Repository, ref: Reference, diff_id: Digest | None,
          blob: LayerBlob, events: Events, chunk: int) -> None:
    desc = blob.descriptor
    short = desc.digest.short
    what = f"{ref.name} blob {short}"
    if repo.has_blob(desc.digest, what):
        events.emit(Transfer(short, "Layer already exists", desc.size, desc.size))
        _remember(store, diff_id, desc.digest, ref)
        return
    location: str | None = None
    mounted_from = None
    for source_digest, source in (store.distribution.sources(diff_id) if diff_id else []):
        domain, _, path = source.partition("/")
        if source_digest != desc.digest or domain != ref.domain or path == ref.path:
            continue
        location = repo.start_upload(what, mount=desc.digest, source=path)
        if location is None:
            mounted_from = path
        break
    if mounted_from is not None:
        events.emit(Transfer(short, f"Mounted from {mounted_from}", desc.size, desc.size))
        _remember(store, diff_id, desc.digest, ref)
        return
    if location is None:
        location = repo.start_upload(what)
    if location is None:
        raise RegistryError(f"{what}: the registry took an upload it was not sent")
    opener = _opener(blob)
    repo.upload(location, desc.size, opener, desc.digest, what, chunk,
                lambda n: events.emit(Transfer(short, "Pushing", n, desc.size)))
    events.emit(Transfer(short, "Pushed", desc.size, desc.size))
    _remember(store, diff_id, desc.digest, ref)


def _remember(store: Store, diff_id: Digest | None, digest: Digest, ref: Reference) -> None:
    if diff_id is not None:
        store.distribution.add(diff_id, digest, ref.repository)


def _opener(blob: LayerBlob) -> Callable[[int, int], IO[bytes]]:
    def open_part(offset: int, length: int) -> IO[bytes]:
        raw = blob.open()
        if offset:
            raw.seek(offset, os.SEEK_SET)
        return _Part(raw, length)  # type: ignore[return-value]
    return open_part


class _Part:
    """`length` bytes of an open file, read from where it is, closed with it."""

    def __init__(self, raw: IO[bytes], length: int) -> None:
        self._raw = raw
        self._left = length

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n < 0 else min(n, self._left)
        data = self._raw.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._raw.close()
