"""The on-disk store, laid out like Docker's so what users know of /var/lib/docker applies.

    image/overlay2/layerdb/sha256/<chain-id>/{diff,parent,cache-id,size,blobs.json}
    image/overlay2/imagedb/content/sha256/<image-id>      exact config bytes
    image/overlay2/repositories.json                      tags -> image IDs
    overlay2/<cache-id>/diff                              the layer's files (overlay form)
    blobs/sha256/<hex>                                    compressed layer blobs
    buildcache/                                           build cache entries
    tmp/                                                  staging, one locked dir per writer

Every change is staged under tmp/ and made visible by one rename under the store lock, so a
crash leaves the old state or the new one. Staging dirs of dead processes, overlay dirs and
blobs that no layer names are debris, removed when a store is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from layerbuild.digest import Digest, chain_id, chain_ids
from layerbuild.errors import FormatError, ImageNotFound, StoreError
from layerbuild.image import Descriptor, Image
from layerbuild.reference import InvalidReference, Reference

DEFAULT_ROOT = Path("/var/lib/layerbuild")


@dataclass(frozen=True)
class LayerRecord:
    """A layer in the store: its identity in the stack and where its files and blobs are."""

    chain_id: Digest
    diff_id: Digest
    parent: Digest | None
    cache_id: str
    size: int
    tar_size: int
    blobs: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageEntry:
    """An image with the tags that name it."""

    image: Image
    tags: tuple[str, ...]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes) -> None:
    """Write bytes to a new file and fsync it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _syncfs(path: Path) -> None:
    """Flush the whole filesystem holding `path` (one call instead of an fsync per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


class Store:
    """A layer and image store rooted at one directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.layerdb = self.root / "image/overlay2/layerdb/sha256"
        self.imagedb = self.root / "image/overlay2/imagedb/content/sha256"
        self.repositories = self.root / "image/overlay2/repositories.json"
        self.overlay = self.root / "overlay2"
        self.blobs = self.root / "blobs/sha256"
        self.buildcache = self.root / "buildcache"
        self.tmp = self.root / "tmp"
        self._local = threading.local()
        try:
            for d in (self.layerdb, self.imagedb, self.overlay, self.blobs, self.buildcache,
                      self.tmp):
                d.mkdir(parents=True, exist_ok=True)
            self.clean_debris()  # also proves the store writable: it creates the lock file
        except OSError as exc:
            raise StoreError(f"store {self.root} is not usable: {exc.strerror or exc}") from None

    # --- locking and staging -------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store-wide lock (re-entrant within a thread)."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private dir under tmp/, removed on exit; locked while in use."""
        path = self.tmp / f"{os.getpid()}-{secrets.token_hex(6)}"
        with self.lock():  # so that clean_debris never sees it before it is locked
            path.mkdir()
            fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            _rmtree(path)
            os.close(fd)

    def clean_debris(self) -> None:
        """Remove what a crashed writer left: dead staging dirs, unnamed overlay dirs, blobs."""
        with self.lock():
            orphans = self._leased(live=False)
            for entry in self.tmp.iterdir():
                if not entry.is_dir() or not _is_locked(entry / ".lock"):
                    _rmtree(entry)
            for half_written in [*self.imagedb.glob(".*"),
                                 *self.repositories.parent.glob(".repositories.json.*")]:
                half_written.unlink(missing_ok=True)
            records = self.layers()
            cache_ids = {r.cache_id for r in records}
            for entry in self.overlay.iterdir():
                if entry.name not in cache_ids:
                    _rmtree(entry)
            blob_names = {d.digest.hex for r in records for d in r.blobs}
            for entry in self.blobs.iterdir():
                if entry.name not in blob_names:
                    entry.unlink(missing_ok=True)
            self._drop_dangling_tags()
            if orphans:
                self.release_layers(orphans)

    # --- layers ---------------------------------------------------------------------------

    def layer(self, chain: Digest) -> LayerRecord | None:
        """The layer with this chain ID, or None."""
        path = self.layerdb / chain.hex
        try:
            meta = json.loads((path / "blobs.json").read_bytes())
            parent_file = path / "parent"
            parent = Digest.parse(parent_file.read_text()) if parent_file.exists() else None
            return LayerRecord(
                chain_id=chain,
                diff_id=Digest.parse((path / "diff").read_text()),
                parent=parent,
                cache_id=(path / "cache-id").read_text().strip(),
                size=int((path / "size").read_text()),
                tar_size=int(meta["tar_size"]),
                blobs=tuple(Descriptor.from_dict(d) for d in meta["blobs"]),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, FormatError) as exc:
            raise StoreError(f"layer {chain} in the store is damaged: {exc}") from None

    def layers(self) -> list[LayerRecord]:
        """Every layer in the store."""
        out = []
        for entry in sorted(self.layerdb.iterdir()):
            rec = self.layer(Digest(entry.name)) if len(entry.name) == 64 else None
            if rec is not None:
                out.append(rec)
        return out

    def diff_dir(self, record: LayerRecord) -> Path:
        """Where a layer's files are (usable as an overlay lower dir)."""
        return self.overlay / record.cache_id / "diff"

    def blob_path(self, digest: Digest) -> Path:
        """Where a blob with this digest is kept."""
        return self.blobs / digest.hex

    def commit_layer(self, parent: Digest | None, diff_id: Digest, diff: Path, size: int,
                     tar_size: int, blob: Descriptor, blob_file: Path | None,
                     lease: Path | None = None) -> LayerRecord:
        """Make a staged layer visible: its diff dir, its blob and its layerdb entry.

        `diff` and `blob_file` must be inside a staging dir; they are moved, not copied. If the
        same chain is already stored (e.g. committed by another process meanwhile), the stored
        one is returned and the staged files are left for the staging dir's removal.
        With `lease` (a staging dir), the layer is protected from garbage collection until
        that dir is gone, and released by the next start-up if its writer died.
        """
        chain = chain_id(parent, diff_id)
        existing = self.layer(chain)
        if existing is not None:
            return existing
        if parent is not None and self.layer(parent) is None:
            raise StoreError(f"parent layer {parent} is not in the store")
        cache_id = secrets.token_hex(32)
        stage = diff.parent / f"commit-{cache_id[:12]}"
        (stage / "layer").mkdir(parents=True)
        diff.rename(stage / "layer" / "diff")
        db = stage / "db"
        db.mkdir()
        write_file_durably(db / "diff", str(diff_id).encode())
        if parent is not None:
            write_file_durably(db / "parent", str(parent).encode())
        write_file_durably(db / "cache-id", cache_id.encode())
        write_file_durably(db / "size", str(size).encode())
        meta = {"tar_size": tar_size, "blobs": [blob.to_dict()]}
        write_file_durably(db / "blobs.json", json.dumps(meta).encode())
        _syncfs(stage)
        with self.lock():
            if lease is not None:
                self.hold(lease, chain)
            existing = self.layer(chain)
            if existing is not None:
                return existing
            if blob_file is not None and not self.blob_path(blob.digest).exists():
                blob_file.rename(self.blob_path(blob.digest))
            elif not self.blob_path(blob.digest).exists():
                raise StoreError(f"blob {blob.digest} for layer {diff_id} is missing")
            (stage / "layer").rename(self.overlay / cache_id)
            db.rename(self.layerdb / chain.hex)
            _fsync_dir(self.layerdb)
        return self.layer(chain)  # type: ignore[return-value]

    def hold(self, lease: Path, chain: Digest) -> None:
        """Record in a staging dir that its writer relies on layer `chain`."""
        with open(lease / "leases", "a") as f:
            f.write(f"{chain}\n")
            f.flush()
            os.fsync(f.fileno())

    def _leased(self, live: bool) -> set[Digest]:
        """Chains named by the leases of live (or of dead) staging dirs."""
        out: set[Digest] = set()
        for entry in self.tmp.iterdir():
            try:
                if _is_locked(entry / ".lock") == live:
                    text = (entry / "leases").read_text()
                    out.update(Digest.parse(line) for line in text.split())
            except (FileNotFoundError, NotADirectoryError):
                continue
        return out

    def add_layer_blob(self, record: LayerRecord, blob: Descriptor, blob_file: Path) -> None:
        """Remember one more blob (e.g. a zstd form) that decompresses to this layer."""
        if any(d.digest == blob.digest for d in record.blobs):
            return
        with self.lock():
            fresh = self.layer(record.chain_id)
            if fresh is None or any(d.digest == blob.digest for d in fresh.blobs):
                return
            if not self.blob_path(blob.digest).exists():
                blob_file.rename(self.blob_path(blob.digest))
            meta = {"tar_size": fresh.tar_size,
                    "blobs": [d.to_dict() for d in (*fresh.blobs, blob)]}
            target = self.layerdb / record.chain_id.hex / "blobs.json"
            tmp = target.with_name(f".blobs.json.{os.getpid()}")
            write_file_durably(tmp, json.dumps(meta).encode())
            tmp.rename(target)

    # --- images ---------------------------------------------------------------------------

    def _read_repositories(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.repositories.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StoreError(f"{self.repositories} is damaged: {exc}") from None
        repos = data.get("Repositories") or {}
        return {str(k): dict(v) for k, v in repos.items()}

    def _write_repositories(self, repos: dict[str, dict[str, str]]) -> None:
        repos = {k: v for k, v in sorted(repos.items()) if v}
        tmp = self.repositories.with_name(f".repositories.json.{os.getpid()}")
        write_file_durably(tmp, json.dumps({"Repositories": repos}, indent=2).encode())
        tmp.rename(self.repositories)
        _fsync_dir(self.repositories.parent)

    def tags(self) -> dict[str, Digest]:
        """Every tag (`name:tag`) and the image ID it names."""
        return {tag: Digest.parse(image_id)
                for per_repo in self._read_repositories().values()
                for tag, image_id in per_repo.items() if "@" not in tag}

    def has_image(self, image_id: Digest) -> bool:
        """Whether an image with this ID is stored."""
        return (self.imagedb / image_id.hex).exists()

    def image_by_id(self, image_id: Digest) -> Image:
        """The stored image with this ID."""
        try:
            return Image.from_config_bytes((self.imagedb / image_id.hex).read_bytes())
        except FileNotFoundError:
            raise ImageNotFound(f"no such image: {image_id}") from None

    def resolve(self, ref: str) -> Digest:
        """The image ID that `ref` names: a tag, a full ID, or a unique ID prefix."""
        hexpart = ref.removeprefix("sha256:")
        if hexpart and all(c in "0123456789abcdef" for c in hexpart) and (
                ref.startswith("sha256:") or len(hexpart) >= 4):
            matches = [p.name for p in self.imagedb.iterdir() if p.name.startswith(hexpart)]
            if len(matches) == 1:
                return Digest(matches[0])
            if len(matches) > 1:
                raise ImageNotFound(f"image ID prefix {ref!r} is ambiguous")
        try:
            name = Reference.parse(ref).familiar
        except InvalidReference:
            raise ImageNotFound(f"no such image: {ref}") from None
        found = self.tags().get(name)
        if found is None or not self.has_image(found):
            raise ImageNotFound(f"no such image: {ref}")
        return found

    def get_image(self, ref: str) -> Image:
        """The image that `ref` names."""
        return self.image_by_id(self.resolve(ref))

    def images(self) -> list[ImageEntry]:
        """Every stored image with its tags."""
        by_id: dict[Digest, list[str]] = {}
        for tag, image_id in self.tags().items():
            by_id.setdefault(image_id, []).append(tag)
        out = []
        for entry in sorted(self.imagedb.iterdir()):
            if len(entry.name) != 64 or entry.name.startswith("."):
                continue
            image_id = Digest(entry.name)
            out.append(ImageEntry(self.image_by_id(image_id),
                                  tuple(sorted(by_id.get(image_id, [])))))
        return out

    def put_image(self, image: Image, tags: list[Reference]) -> list[str]:
        """Store an image whose layers are all stored, and point `tags` at it.

        Returns the tags that were moved away from another image.
        """
        for chain in chain_ids(image.config.diff_ids):
            if self.layer(chain) is None:
                raise StoreError(f"image {image.id}: layer {chain} is not in the store")
        with self.lock():
            moved = self._set_tags(image.id, tags)
            target = self.imagedb / image.id.hex
            if not target.exists():
                tmp = self.imagedb / f".{image.id.hex}.{os.getpid()}"
                write_file_durably(tmp, image.config_bytes)
                tmp.rename(target)
                _fsync_dir(self.imagedb)
        return moved

    def _set_tags(self, image_id: Digest, tags: list[Reference]) -> list[str]:
        repos = self._read_repositories()
        moved = []
        for ref in tags:
            per_repo = repos.setdefault(ref.name, {})
            old = per_repo.get(ref.familiar)
            if old and old != str(image_id):
                moved.append(ref.familiar)
            per_repo[ref.familiar] = str(image_id)
        if tags:
            self._write_repositories(repos)
        return moved

    def tag(self, source: str, target: str) -> None:
        """Point tag `target` at the image `source` names."""
        image_id = self.resolve(source)
        with self.lock():
            self._set_tags(image_id, [Reference.parse(target)])

    def _drop_dangling_tags(self) -> None:
        repos = self._read_repositories()
        changed = False
        for per_repo in repos.values():
            for tag, image_id in list(per_repo.items()):
                try:
                    present = self.has_image(Digest.parse(image_id))
                except FormatError:
                    present = False
                if not present:
                    del per_repo[tag]
                    changed = True
        if changed:
            self._write_repositories(repos)

    def remove_image(self, ref: str, force: bool = False) -> tuple[list[str], Digest | None]:
        """Untag `ref`; delete the image once no tag names it. Returns (untagged, deleted id)."""
        with self.lock():
            image_id = self.resolve(ref)
            repos = self._read_repositories()
            names = sorted(t for per in repos.values() for t, i in per.items()
                           if i == str(image_id))
            if _familiar(ref) in names:
                untag = [_familiar(ref)]
            elif len(names) > 1 and not force:
                raise StoreError(f"image {image_id.short} is referenced by several tags "
                                 f"({', '.join(names)}): remove them by name or use --force")
            else:
                untag = names
            for per_repo in repos.values():
                for tag in untag:
                    per_repo.pop(tag, None)
            self._write_repositories(repos)
            if len(untag) < len(names):
                return untag, None
            chains = set(chain_ids(self.image_by_id(image_id).config.diff_ids))
            (self.imagedb / image_id.hex).unlink(missing_ok=True)
            _fsync_dir(self.imagedb)
            self.release_layers(chains)
            return untag, image_id

    # --- references and garbage collection -------------------------------------------------

    def cache_references(self) -> set[Digest]:
        """Chain IDs that build cache entries hold on to."""
        from layerbuild.cache.index import roots  # loaded when used: it loads the key code

        return roots(self.buildcache)

    def image_references(self) -> dict[Digest, int]:
        """How many stored images use each chain ID."""
        counts: dict[Digest, int] = {}
        for entry in self.images():
            for chain in chain_ids(entry.image.config.diff_ids):
                counts[chain] = counts.get(chain, 0) + 1
        return counts

    def release_layers(self, candidates: set[Digest] | None = None) -> list[LayerRecord]:
        """Delete layers (all, or only `candidates`) that nothing needs any more.

        A layer is needed by an image, a build cache entry, a live writer's lease, or a needed
        layer stacked on it.
        """
        with self.lock():
            keep = (set(self.image_references()) | self.cache_references()
                    | self._leased(live=True))
            records = {r.chain_id: r for r in self.layers()}
            needed: set[Digest] = set()
            for chain in keep:
                while chain is not None and chain not in needed and chain in records:
                    needed.add(chain)
                    chain = records[chain].parent  # type: ignore[assignment]
            doomed = [r for c, r in records.items() if c not in needed
                      and (candidates is None or c in candidates)]
            if not doomed:
                return []
            with self.staging() as trash:
                for rec in doomed:
                    (self.layerdb / rec.chain_id.hex).rename(trash / f"db-{rec.chain_id.hex}")
                _fsync_dir(self.layerdb)
                for rec in doomed:
                    with contextlib.suppress(FileNotFoundError):
                        (self.overlay / rec.cache_id).rename(trash / rec.cache_id)
                kept = {d.digest for c, r in records.items() if c in needed for d in r.blobs}
                for rec in doomed:
                    for blob in rec.blobs:
                        if blob.digest not in kept:
                            self.blob_path(blob.digest).unlink(missing_ok=True)
            return doomed

    def prune(self, all_cache: bool = False) -> list[LayerRecord]:
        """Remove build cache entries (all, or those whose layers are gone), then free layers.

        Dropping them all also drops the build records, so the next build runs every step.
        """
        from layerbuild.cache.index import drop_entries

        with self.lock():
            stored = None if all_cache else (lambda chain: self.layer(chain) is not None)
            drop_entries(self.buildcache, stored)
            self.clean_debris()
            return self.release_layers()


def _familiar(ref: str) -> str:
    try:
        return Reference.parse(ref).familiar
    except InvalidReference:
        return ref


def _is_locked(lock_file: Path) -> bool:
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _rmtree(path: Path) -> None:
    """Remove a tree or a file, even one that another process is removing too."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return

    def retry(_func: object, failed: str, exc_info: tuple[type, BaseException, object]) -> None:
        if isinstance(exc_info[1], FileNotFoundError):
            return
        # Layers may hold read-only dirs; a non-root owner must make them writable first.
        os.chmod(os.path.dirname(failed), 0o700)
        if os.path.isdir(failed) and not os.path.islink(failed):
            shutil.rmtree(failed, onerror=retry)
        else:
            os.unlink(failed)

    shutil.rmtree(path, onerror=retry)
