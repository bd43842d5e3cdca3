"""The on-disk store, laid out like Docker's so what users know of /var/lib/docker applies.

    image/overlay2/layerdb/sha256/<chain-id>/{diff,parent,cache-id,size,blobs.json}
    image/overlay2/imagedb/content/sha256/<image-id>      exact config bytes
    image/overlay2/repositories.json                      tags -> image IDs
    overlay2/<cache-id>/diff                              the layer's files (overlay form)
    blobs/sha256/<hex>                                    compressed layer blobs
    buildcache/                                           build cache entries
    tmp/                                                  staging, one locked dir per writer
    userxattr                                             in a rootless store only

A rootless store (made in a user namespace, `userns`) marks overlay whiteouts and opaque dirs
with `user.overlay.*` xattrs and is mounted with `userxattr`; a root one uses
`trusted.overlay.*`. Neither kind of process can use the other's store, so a store says which
it is (the `userxattr` file) and the wrong kind of process is refused on opening it.

Every change is staged under tmp/ and made visible by one rename under the store lock, so a
crash leaves the old state or the new one. What a crashed writer leaves (staging dirs of dead
processes, half-written files, overlay dirs and blobs that no layer names) is debris, removed
by `Store.clean_debris()`. Opening a store (the command line, `api.open_store`) calls
`Store.tidy()`, which cleans only when there can be debris: a staging dir whose writer is
gone, or a change under the store lock whose holder died or failed before it finished.

`Store` is the facade: each concept lives in its own module (staging, blobs, layers, images,
gc) and the methods here delegate to them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from layerbuild.cache.roots import roots as cache_roots
from layerbuild.digest import Digest, chain_ids
from layerbuild.errors import StoreError
from layerbuild.fsutil import rmtree, temp_writer, write_atomic
from layerbuild.image import Descriptor, Image
from layerbuild.nsmap import in_user_namespace, is_rootless
from layerbuild.reference import Reference
from layerbuild.store import gc, private
from layerbuild.store.blobs import Blobs
from layerbuild.store.distribution import Distribution
from layerbuild.store.images import ImageDB, ImageEntry
from layerbuild.store.layers import Layer, LayerDB
from layerbuild.store.staging import StagingArea, half_written, is_alive

__all__ = ["DEFAULT_ROOT", "ImageEntry", "Layer", "Store", "default_root"]

DEFAULT_ROOT = Path("/var/lib/layerbuild")
"""Root's store."""
USERXATTR = "userxattr"
"""The file that marks a rootless store."""


def default_root() -> Path:
    """The store used when none is named: $LAYERBUILD_ROOT; else root's `DEFAULT_ROOT`, or
    for anyone else (rootless) `$XDG_DATA_HOME/layerbuild` (`~/.local/share/layerbuild`)."""
    named = os.environ.get("LAYERBUILD_ROOT")
    if named:
        return Path(named)
    if not is_rootless():
        return DEFAULT_ROOT
    data = os.environ.get("XDG_DATA_HOME")
    if not data or not os.path.isabs(data):
        data = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "layerbuild"


class Store:
    """A layer and image store rooted at one directory.

    Opening one creates its layout when missing (every dir private, see `store.private`) and
    makes the dirs of an older store that other users can reach private, saying so through
    `notice`; it cleans nothing, and on a store that exists it writes nothing else, so a
    read-only store can be opened and read.
    """

    def __init__(self, root: Path | str, notice: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.layerdb = self.root / "image/overlay2/layerdb/sha256"
        self.imagedb = self.root / "image/overlay2/imagedb/content/sha256"
        self.repositories = self.root / "image/overlay2/repositories.json"
        self.overlay = self.root / "overlay2"
        self.blobs = self.root / "blobs/sha256"
        self.buildcache = self.root / "buildcache"
        self.tmp = self.root / "tmp"
        self.notice = notice or _ignore
        self._failures = 0
        """Failures `clean_debris` reported (a clean with any leaves the debris mark)."""
        self._area = StagingArea(self.root, self.tmp)
        self._blobs = Blobs(self.blobs)
        self._layers = LayerDB(self.layerdb, self.overlay, self._blobs, self._area)
        self._images = ImageDB(self.imagedb, self.repositories)
        self.distribution = Distribution(
            self.root / "image/overlay2/distribution/v2metadata-by-diffid/sha256")
        with self._usable():
            inside = in_user_namespace()
            marker = self.root / USERXATTR
            if inside and not self.layerdb.is_dir() and not marker.exists():
                # A new store made rootless is marked before anything is in it: a crash
                # between the two can leave no unmarked rootless store.
                private.make_dirs(self.root)
                write_atomic(marker, b"rootless store: overlay xattrs are user.overlay.*\n")
            for d in (self.layerdb, self.imagedb, self.overlay, self.blobs, self.buildcache,
                      self.tmp):
                private.make_dirs(d)
            self._make_private()
            self.rootless = self._kind(inside, marker.exists())

    def _kind(self, inside: bool, rootless: bool) -> bool:
        """`rootless` (whether the store is marked so), or StoreError when this process
        (`inside` a user namespace or not) is of the other kind."""
        if rootless and not inside:
            raise StoreError(f"store {self.root} is a rootless one (made in a user namespace, "
                             "its overlay dirs use user.overlay.* xattrs): use it as the user "
                             "who made it, with the layerbuild command")
        if inside and not rootless:
            raise StoreError(f"store {self.root} was made by root (its overlay dirs use "
                             "trusted.overlay.* xattrs, which a rootless layerbuild cannot "
                             "use): leave out --root for a store of your own, or give a new "
                             "dir")
        return rootless

    def _make_private(self) -> None:
        """Tighten the dirs of a store made when they were not private, with one notice.

        Staging dirs an older version made are left as they are: they last as long as their
        writer, and tmp/ made private puts them out of reach already."""
        dirs = [self.root, self.root / "image", self.overlay, self.blobs.parent,
                self.buildcache, self.tmp]
        try:
            changed = private.tighten(dirs)
        except OSError as exc:
            self.notice(f"store {self.root} can be reached by other users and cannot be made "
                        f"private: {exc.strerror or exc}")
            return
        if changed:
            names = ", ".join(str(d.relative_to(self.root)) if d != self.root else "its root"
                              for d in changed)
            self.notice(f"store {self.root} could be reached by other users: made {names} "
                        f"private (mode 0700)")

    def writable(self) -> bool:
        """Whether this process can change the store (not so on a read-only mount)."""
        return os.access(self.root, os.W_OK) and os.access(self.tmp, os.W_OK)

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

    def tidy(self) -> None:
        """`clean_debris` if a writer may have left any: a staging dir whose writer is gone,
        or a change under the store lock that its holder did not finish (see `store.staging`).
        Every writer stages under tmp/ or changes the store under the lock, so otherwise
        there is none, and this costs a look at tmp/, not a pass over every layer and cache
        entry. Never fails, as `clean_debris`."""
        if not self.writable():
            return
        with self._best_effort("the store lock"), self.lock():
            if self._area.unfinished or self._area.dead():
                self.clean_debris()

    def clean_debris(self) -> None:
        """Remove what crashed writers left: dead staging dirs (releasing the layers they
        leased), half-written files, unnamed overlay dirs and blobs, dangling tags.

        It never fails: what it cannot remove is reported through `notice`, and a store this
        process cannot write is left as it is, quietly.
        """
        if not self.writable():
            return
        before = self._failures
        with self._best_effort("the store lock"), self.lock():
            orphans: set[Digest] = set()
            unfinished: set[Digest] = set()
            dead: list[Path] = []
            with self._best_effort("leases of dead writers"):
                orphans = self._area.leased(live=False)
                unfinished = self._area.pending(live=False) - self._area.pending(live=True)
            with self._best_effort(str(self.tmp)):
                dead = self._area.dead()
            for entry in dead:
                with self._best_effort(str(entry)):
                    rmtree(entry)
            with self._best_effort("half-written files"):
                for path in self._half_written():
                    path.unlink(missing_ok=True)
            with self._best_effort("unnamed layer files and blobs"):
                layers = self.layers()
                self._layers.remove_unnamed_dirs(layers)
                self._blobs.remove_unnamed({d.digest.hex for layer in layers
                                            for d in layer.blobs})
            with self._best_effort("images of dead writers"):
                named = {str(i) for per in self._images.read_repositories().values()
                         for i in per.values()}
                for image_id in unfinished:
                    if str(image_id) not in named:
                        self._images.delete(image_id)
            with self._best_effort("dangling tags"):
                self._images.drop_dangling_tags()
            if orphans:
                with self._best_effort("layers of dead writers"):
                    self.release_layers(orphans)
            if self._failures == before:  # all it found is gone: no mark to keep
                self._area.unfinished = False

    def _half_written(self) -> list[Path]:
        """Temp files of killed writers: of store metadata (written under the lock, so all
        are debris), and of cache entries and build records (written without it, so only
        those whose writer is gone)."""
        cache_dirs = [self.buildcache, *(d for d in self.buildcache.iterdir() if d.is_dir())]
        return [*half_written(self.imagedb, "."),
                *half_written(self.repositories.parent, ".repositories.json."),
                *self._layers.half_written_blob_lists(),
                *(p for d in cache_dirs for p in d.iterdir() if _of_dead_writer(p))]

    @contextlib.contextmanager
    def _best_effort(self, what: str) -> Iterator[None]:
        """Report a failure to clean `what` as a notice and go on."""
        try:
            yield
        except Exception as exc:  # cleaning is best effort: whatever trips it must not fail
            self._failures += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self.notice(f"could not clean debris in {self.root} ({what}): {reason}")

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
        """Every stored image with its tags; one whose config is damaged is left out and
        named through `notice`."""
        return self._images.entries(damaged=lambda exc: self.notice(str(exc)))

    def put_image(self, image: Image, tags: list[Reference],
                  lease: Path | None = None) -> list[str]:
        """Store an image whose layers are all stored, and point `tags` at it.

        The config is durable before any tag names it, so a crash in between leaves each tag
        at its old image. With `lease` (the writer's staging dir), a config written by a
        writer that dies before its tags is debris: the next cleaning removes it, so the
        store is as it was. Returns the tags that were moved away from another image.
        """
        with self.lock():
            self.image_layers(image)
            if lease is not None and not self._images.has(image.id):
                self._area.pend(lease, image.id)
            self._images.put(image)
            moved = self._images.set_tags(image.id, tags)
        return moved

    def add_repo_digest(self, image: Image, pinned: Reference) -> None:
        """Record that the registry has the (stored) image as `name@sha256:…`."""
        with self.lock():
            self._images.set_tags(image.id, [pinned])

    def repo_digests(self, image_id: Digest) -> list[str]:
        """The image's RepoDigests, as `inspect` shows them."""
        return self._images.repo_digests(image_id)

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


def _ignore(_message: str) -> None:
    """The default `notice`: say nothing."""


def _of_dead_writer(path: Path) -> bool:
    """Whether `path` is a temp file whose writing process is gone."""
    pid = temp_writer(path.name)
    return pid is not None and not is_alive(pid) and not path.is_dir()
