"""Garbage collection: which layers are needed, releasing the rest, pruning the build cache.

A layer is needed by a stored image, a build cache entry (`cache.roots` says which), a live
writer's lease, or a needed layer stacked on it. The store reads no cache file itself.
"""

from __future__ import annotations

from pathlib import Path

from layerbuild.cache import roots as cache
from layerbuild.digest import Digest, chain_ids
from layerbuild.store.images import ImageDB
from layerbuild.store.layers import Layer, LayerDB
from layerbuild.store.staging import StagingArea


def image_references(images: ImageDB) -> dict[Digest, int]:
    """How many stored images use each chain ID."""
    counts: dict[Digest, int] = {}
    for entry in images.entries():
        for chain in chain_ids(entry.image.config.diff_ids):
            counts[chain] = counts.get(chain, 0) + 1
    return counts


def needed_chains(roots: set[Digest], stored: dict[Digest, Layer]) -> set[Digest]:
    """The stored chains that `roots` name, and every layer under them."""
    needed: set[Digest] = set()
    for root in roots:
        chain: Digest | None = root
        while chain is not None and chain not in needed and chain in stored:
            needed.add(chain)
            chain = stored[chain].parent
    return needed


def release_layers(layers: LayerDB, images: ImageDB, area: StagingArea, buildcache: Path,
                   candidates: set[Digest] | None = None) -> list[Layer]:
    """Delete layers (all, or only `candidates`) that nothing needs any more."""
    with area.lock():
        roots = set(image_references(images)) | cache.roots(buildcache) | area.leased(live=True)
        stored = {layer.chain_id: layer for layer in layers.all()}
        needed = needed_chains(roots, stored)
        doomed = [layer for c, layer in stored.items() if c not in needed
                  and (candidates is None or c in candidates)]
        if not doomed:
            return []
        kept_blobs = {d.digest for c, layer in stored.items() if c in needed for d in layer.blobs}
        with area.staging() as trash:
            layers.discard(doomed, trash, kept_blobs)
        return doomed


def drop_cache_entries(buildcache: Path, layers: LayerDB, all_cache: bool) -> None:
    """Remove build cache entries: all of them (and the build records), or those that cannot
    be read or name a layer that is gone (hold the lock)."""
    cache.drop_entries(buildcache, None if all_cache else lambda c: layers.get(c) is not None)
