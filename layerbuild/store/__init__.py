"""The on-disk store, laid out like Docker's so what users know of /var/lib/docker applies.

    image/overlay2/layerdb/sha256/<chain-id>/{diff,parent,cache-id,size,blobs.json}
    image/overlay2/imagedb/content/sha256/<image-id>      exact config bytes
    image/overlay2/repositories.json                      tags -> image IDs
    overlay2/<cache-id>/diff                              the layer's files (overlay form)
    blobs/sha256/<hex>                                    compressed layer blobs
    buildcache/                                           build cache entries
    tmp/                                                  staging, one locked dir per writer

Every change is staged under tmp/ and made visible by one rename under the store lock, so a
crash leaves the old state or the new one. What a crashed writer leaves (staging dirs of dead
processes, half-written files, overlay dirs and blobs that no layer names) is debris, removed
by `Store.clean_debris()`, which the command line calls whenever it opens a store.

`Store` is the facade: each concept lives in its own module (staging, blobs, layers, images,
gc) and the methods here delegate to them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from layerbuild.cache.roots import roots as cache_roots
from layerbuild.digest import Digest, chain_ids
from layerbuild.errors import StoreError
from layerbuild.image import Descriptor, Image
from layerbuild.reference import Reference
from layerbuild.store import gc
from layerbuild.store.blobs import Blobs
from layerbuild.store.images import ImageDB, ImageEntry
from layerbuild.store.layers import Layer, LayerDB
from layerbuild.store.staging import StagingArea, half_written

__all__ = ["DEFAULT_ROOT", "ImageEntry", "Layer", "Store"]

DEFAULT_ROOT = Path("/var/lib/layerbuild")


class Store:
    """A layer and image store rooted at one directory.

    Opening one only creates its layout (and lock file) when missing; it cleans nothing.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.layerdb = self.root / "image/overlay2/layerdb/sha256"
        self.imagedb = self.root / "image/overlay2/imagedb/content/sha256"
        self.repositories = self.root / "image/overlay2/repositories.json"
        self.overlay = self.root / "overlay2"
        self.blobs = self.root / "blobs/sha256"
        self.buildcache = self.root / "buildcache"
        self.tmp = self.root / "tmp"
        self._area = StagingArea(self.root, self.tmp)
        self._blobs = Blobs(self.blobs)
        self._layers = LayerDB(self.layerdb, self.overlay, self._blobs, self._area)
        self._images = ImageDB(self.imagedb, self.repositories)
        with self._usable():
            for d in (self.layerdb, self.imagedb, self.overlay, self.blobs, self.buildcache,
                      self.tmp):
                d.mkdir(parents=True, exist_ok=True)
            self._area.create_lock_file()  # proves the store writable

    @contextlib.contextmanager
    def _usable(self) -> Iterator[None]:
        """Report a filesystem failure of the store's own dirs as an unusable store."""
        try:
            yield
        except OSError as exc:
            raise StoreError(f"store {self.root} is not usable: {exc.strerror or exc}") from None

    # --- locking, staging and debris ------------------------------------------------------

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store-wide lock (re-entrant within a thread)."""
        return self._area.lock()

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A fresh private dir under tmp/, removed on exit; locked while in use."""
        return self._area.staging()

    def hold(self, lease: Path, chain: Digest) -> None:
        """Record in a staging dir that its writer relies on layer `chain`."""
        self._area.hold(lease, chain)

    def hold_image(self, image: Image, lease: Path) -> list[Layer]:
        """An image's layers (bottom first, as `image_layers`), held for the writer of staging
        dir `lease`: until that dir is gone, removing the image removes its name and config
        but leaves the layers (for a later prune)."""
        with self.lock():  # nothing is released between finding the layers and holding them
            layers = self.image_layers(image)
            if layers:  # the gc keeps every layer under a held one
                self.hold(lease, layers[-1].chain_id)
        return layers

    def clean_debris(self) -> None:
        """Remove what crashed writers left: dead staging dirs (releasing the layers they
        leased), half-written files, unnamed overlay dirs and blobs, dangling tags."""
        with self._usable(), self.lock():
            orphans = self._area.leased(live=False)
            self._area.remove_dead()
            for path in [*half_written(self.imagedb, "."),
                         *half_written(self.repositories.parent, ".repositories.json."),
                         *self._layers.half_written_blob_lists()]:
                path.unlink(missing_ok=True)
            layers = self.layers()
            self._layers.remove_unnamed_dirs(layers)
            self._blobs.remove_unnamed({d.digest.hex for layer in layers for d in layer.blobs})
            self._images.drop_dangling_tags()
            if orphans:
                self.release_layers(orphans)

    # --- layers ---------------------------------------------------------------------------

    def layer(self, chain: Digest) -> Layer | None:
        """The layer with this chain ID, or None."""
        return self._layers.get(chain)

    def layers(self) -> list[Layer]:
        """Every layer in the store."""
        return self._layers.all()

    def image_layers(self, image: Image) -> list[Layer]:
        """An image's layers, bottom first; a StoreError names the image and a missing chain."""
        return self._layers.of_image(image)

    def stack(self, top: Digest | None) -> list[Layer]:
        """The layers of the stack under chain ID `top`, top first (none for None)."""
        return self._layers.stack(top)

    def diff_dir(self, layer: Layer) -> Path:
        """Where a layer's files are (usable as an overlay lower dir): `layer.diff_dir`."""
        return layer.diff_dir

    def blob_path(self, digest: Digest) -> Path:
        """Where a blob with this digest is kept."""
        return self._blobs.path(digest)

    def commit_layer(self, parent: Digest | None, diff_id: Digest, diff: Path, size: int,
                     tar_size: int, blob: Descriptor, blob_file: Path | None,
                     lease: Path | None = None) -> Layer:
        """Make a staged layer visible: its diff dir, its blob and its layerdb entry.

        `diff` and `blob_file` must be inside a staging dir; they are moved, not copied. If the
        same chain is already stored (e.g. committed by another process meanwhile), the stored
        one is returned and the staged files are left for the staging dir's removal.
        With `lease` (a staging dir), the layer is protected from garbage collection until
        that dir is gone, and released by the next debris cleaning if its writer died.
        """
        return self._layers.commit(parent, diff_id, diff, size, tar_size, blob, blob_file,
                                   lease)

    def add_layer_blob(self, layer: Layer, blob: Descriptor, blob_file: Path) -> None:
        """Remember one more blob (e.g. a zstd form) that decompresses to this layer."""
        self._layers.add_blob(layer, blob, blob_file)

    # --- images ---------------------------------------------------------------------------

    def tags(self) -> dict[str, Digest]:
        """Every tag (`name:tag`) and the image ID it names."""
        return self._images.tags()

    def has_image(self, image_id: Digest) -> bool:
        """Whether an image with this ID is stored."""
        return self._images.has(image_id)

    def image_by_id(self, image_id: Digest) -> Image:
        """The stored image with this ID."""
        return self._images.by_id(image_id)

    def resolve(self, ref: str) -> Digest:
        """The image ID that `ref` names: a tag, a full ID, or a unique ID prefix."""
        return self._images.resolve(ref)

    def get_image(self, ref: str) -> Image:
        """The image that `ref` names."""
        return self.image_by_id(self.resolve(ref))

    def images(self) -> list[ImageEntry]:
        """Every stored image with its tags."""
        return self._images.entries()

    def put_image(self, image: Image, tags: list[Reference]) -> list[str]:
        """Store an image whose layers are all stored, and point `tags` at it.

        The config is durable before any tag names it, so a crash in between leaves each tag
        at its old image. Returns the tags that were moved away from another image.
        """
        with self.lock():
            self.image_layers(image)
            self._images.put(image)
            moved = self._images.set_tags(image.id, tags)
        return moved

    def tag(self, source: str, target: str) -> None:
        """Point tag `target` at the image `source` names."""
        ref = Reference.parse(target)
        with self.lock():  # so that the image cannot be removed before it is tagged
            self._images.set_tags(self.resolve(source), [ref])

    def remove_image(self, ref: str, force: bool = False) -> tuple[list[str], Digest | None]:
        """Untag `ref`; delete the image once no tag names it. Returns (untagged, deleted id).

        The name goes first, then the config, then the layers: a crash in between leaves no
        tag naming a missing image, only layers for a later prune.
        """
        with self.lock():
            image_id = self.resolve(ref)
            untagged, unnamed = self._images.untag(image_id, ref, force)
            if not unnamed:
                return untagged, None
            chains = set(chain_ids(self.image_by_id(image_id).config.diff_ids))
            self._images.delete(image_id)
            self.release_layers(chains)
            return untagged, image_id

    # --- references and garbage collection -------------------------------------------------

    def cache_references(self) -> set[Digest]:
        """Chain IDs that build cache entries hold on to."""
        return cache_roots(self.buildcache)

    def image_references(self) -> dict[Digest, int]:
        """How many stored images use each chain ID."""
        return gc.image_references(self._images)

    def release_layers(self, candidates: set[Digest] | None = None) -> list[Layer]:
        """Delete layers (all, or only `candidates`) that nothing needs any more.

        A layer is needed by an image, a build cache entry, a live writer's lease, or a needed
        layer stacked on it.
        """
        return gc.release_layers(self._layers, self._images, self._area, self.buildcache,
                                 candidates)

    def prune(self, all_cache: bool = False) -> list[Layer]:
        """Remove build cache entries (all, or those whose layers are gone), clean debris, then
        free layers.

        Dropping them all also drops the build records, so the next build runs every step.
        """
        with self.lock():
            gc.drop_cache_entries(self.buildcache, self._layers, all_cache)
            self.clean_debris()
            return self.release_layers()
