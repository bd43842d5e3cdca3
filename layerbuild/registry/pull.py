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

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from layerbuild.digest import Digest, chain_id
from layerbuild.errors import FormatError, LayerbuildError, RegistryError
from layerbuild.events import Events, Transfer
from layerbuild.image import (
    INDEX_TYPES,
    Descriptor,
    Image,
    Manifest,
    layer_compression,
    parse_json_object,
)
from layerbuild.ingest import Staged, commit_staged, stage_blob
from layerbuild.reference import Reference
from layerbuild.registry.client import Repository
from layerbuild.registry.hosts import RegistryHosts
from layerbuild.registry.platforms import Platform, choose, listed
from layerbuild.registry.transport import Transport
from layerbuild.store import Store

JOBS = 3
"""Layers fetched at once (Docker's max-concurrent-downloads)."""
PROGRESS_STEP = 1 << 20
"""Bytes between two "Downloading" reports of a layer."""


class Cancelled(LayerbuildError):
    """Another layer of the same pull failed; this one stopped."""


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
    if not todo:
        return
    failed = threading.Event()
    lock = threading.Lock()

    def stage(i: int, into: Path) -> Staged:
        desc = found.manifest.layers[i]
        short = desc.digest.short
        what = f"{repo.ref.name} layer {short}"
        try:
            if failed.is_set():
                raise Cancelled("cancelled")
            with repo.open_blob(desc.digest, desc.size, what) as reader:
                counted = _Counting(reader, lambda n: events.emit(
                    Transfer(short, "Downloading", n, desc.size)), failed)
                staged = stage_blob(into, counted, diff_ids[i], desc.digest,  # type: ignore
                                    desc.size, what)
        except BaseException:
            failed.set()  # the other layers stop at their next read
            raise
        events.emit(Transfer(short, "Download complete", desc.size, desc.size))
        return staged

    # Workers only stage; this thread commits in order, so a worker whose layer is staged
    # before its parent is committed goes on to the next layer instead of waiting its turn.
    with contextlib.ExitStack() as stages, ThreadPoolExecutor(
            max_workers=max(1, jobs), thread_name_prefix="pull") as pool:
        futures: dict[int, Future[Staged]] = {
            i: pool.submit(stage, i, stages.enter_context(store.staging())) for i in todo}
        error: BaseException | None = None
        for i in todo:
            try:
                staged = futures[i].result()
                if error is None:
                    _commit(store, chains[i - 1] if i else None, staged, lease, added, lock)
                    size = found.manifest.layers[i].size
                    events.emit(Transfer(found.manifest.layers[i].digest.short,
                                         "Pull complete", size, size))
            except BaseException as exc:  # the first failure is the one to report
                failed.set()
                if error is None or isinstance(error, Cancelled):
                    error = exc
        if error is not None:
            raise error


def _commit(store: Store, parent: Digest | None, staged: Staged, lease: Path,
            added: set[Digest], lock: threading.Lock) -> None:
    got = commit_staged(store, parent, staged, lease)
    if not got.existed:
        with lock:
            added.add(got.record.chain_id)


class _Counting:
    """A reader that reports how many bytes went through it (every `every` bytes, and at the
    end), and stops when told to."""

    def __init__(self, raw: object, report: Callable[[int], None],
                 stop: threading.Event, every: int = PROGRESS_STEP) -> None:
        self._raw = raw
        self._report = report
        self._stop = stop
        self._every = every
        self._told = 0
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if self._stop.is_set():
            raise Cancelled("cancelled")
        data: bytes = self._raw.read(n)  # type: ignore[attr-defined]
        self.count += len(data)
        if self.count - self._told >= self._every or (not data and self.count > self._told):
            self._told = self.count
            self._report(self.count)
        return data
