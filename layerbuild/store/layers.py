"""Layers in the store: the `Layer` value, reading layerdb entries, committing new ones.

    image/overlay2/layerdb/sha256/<chain-id>/{diff,parent,cache-id,size,blobs.json}
    overlay2/<cache-id>/diff                    the layer's files (overlay form)
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerbuild.digest import Digest, chain_id, chain_ids
from layerbuild.errors import FormatError, StoreError
from layerbuild.fsutil import fsync_dir, rmtree, write_atomic
from layerbuild.image import Descriptor, Image
from layerbuild.store.blobs import Blobs
from layerbuild.store.private import make_dirs
from layerbuild.store.staging import StagingArea


@dataclass(frozen=True)
class Layer:
    """A stored layer: its place in a stack, its files, and its blobs (the original first)."""

    chain_id: Digest
    diff_id: Digest
    parent: Digest | None
    cache_id: str
    size: int
    tar_size: int
    blobs: tuple[Descriptor, ...]
    diff_dir: Path
    """Where its files are (usable as an overlay lower dir)."""
    blob_path: Path
    """Where its original blob is kept."""

    @property
    def digest(self) -> Digest:
        """The digest of its original blob."""
        return self.blobs[0].digest

    @property
    def media_type(self) -> str:
        """The media type of its original blob."""
        return self.blobs[0].media_type

    def open(self) -> BinaryIO:
        """A reader of its original blob, as stored (compressed)."""
        return open(self.blob_path, "rb")


class LayerDB:
    """The layerdb entries and overlay dirs of a store."""

    def __init__(self, layerdb: Path, overlay: Path, blobs: Blobs, area: StagingArea) -> None:
        self.layerdb = layerdb
        self.overlay = overlay
        self.blobs = blobs
        self.area = area

    def get(self, chain: Digest) -> Layer | None:
        """The layer with this chain ID, or None."""
        try:
            return self._read(chain)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, IndexError, FormatError) as exc:
            raise StoreError(f"layer {chain} in the store is damaged: {exc}") from None

    def _read(self, chain: Digest) -> Layer:
        path = self.layerdb / chain.hex
        meta = json.loads((path / "blobs.json").read_bytes())
        parent_file = path / "parent"
        parent = Digest.parse(parent_file.read_text()) if parent_file.exists() else None
        cache_id = (path / "cache-id").read_text().strip()
        blobs = tuple(Descriptor.from_dict(d) for d in meta["blobs"])
        return Layer(chain_id=chain, diff_id=Digest.parse((path / "diff").read_text()),
                     parent=parent, cache_id=cache_id, size=int((path / "size").read_text()),
                     tar_size=int(meta["tar_size"]), blobs=blobs,
                     diff_dir=self.overlay / cache_id / "diff",
                     blob_path=self.blobs.path(blobs[0].digest))

    def all(self) -> list[Layer]:
        """Every layer in the store."""
        out = []
        for entry in sorted(self.layerdb.iterdir()):
            layer = self.get(Digest(entry.name)) if len(entry.name) == 64 else None
            if layer is not None:
                out.append(layer)
        return out

    def stack(self, top: Digest | None) -> list[Layer]:
        """The layers of the stack under chain `top`, top first."""
        out = []
        while top is not None:
            layer = self.get(top)
            if layer is None:
                raise StoreError(f"layer {top} is missing from the store")
            out.append(layer)
            top = layer.parent
        return out

    def of_image(self, image: Image) -> list[Layer]:
        """The layers of an image, bottom first."""
        out = []
        for chain in chain_ids(image.config.diff_ids):
            layer = self.get(chain)
            if layer is None:
                raise StoreError(f"image {image.id}: layer {chain} is not in the store")
            out.append(layer)
        return out

    def commit(self, parent: Digest | None, diff_id: Digest, diff: Path, size: int,
               tar_size: int, blob: Descriptor, blob_file: Path | None,
               lease: Path | None = None) -> Layer:
        """Make a staged layer visible (see `Store.commit_layer`)."""
        chain = chain_id(parent, diff_id)
        existing = self.get(chain)
        if existing is not None:
            return existing
        if parent is not None and self.get(parent) is None:
            raise StoreError(f"parent layer {parent} is not in the store")
        stage, cache_id = _stage_commit(parent, diff_id, diff, size,
                                        {"tar_size": tar_size, "blobs": [blob.to_dict()]})
        with self.area.lock():
            if lease is not None:
                self.area.hold(lease, chain)
            existing = self.get(chain)
            if existing is not None:
                return existing
            if blob_file is not None:
                self.blobs.adopt(blob.digest, blob_file)
            elif not self.blobs.has(blob.digest):
                raise StoreError(f"blob {blob.digest} for layer {diff_id} is missing")
            (stage / "layer").rename(self.overlay / cache_id)
            (stage / "db").rename(self.layerdb / chain.hex)
            fsync_dir(self.layerdb)
        return self.get(chain)  # type: ignore[return-value]

    def add_blob(self, layer: Layer, blob: Descriptor, blob_file: Path) -> None:
        """Remember one more blob (e.g. a zstd form) that decompresses to this layer."""
        if any(d.digest == blob.digest for d in layer.blobs):
            return
        with self.area.lock():
            fresh = self.get(layer.chain_id)
            if fresh is None or any(d.digest == blob.digest for d in fresh.blobs):
                return
            self.blobs.adopt(blob.digest, blob_file)
            meta = {"tar_size": fresh.tar_size,
                    "blobs": [d.to_dict() for d in (*fresh.blobs, blob)]}
            write_atomic(self.layerdb / layer.chain_id.hex / "blobs.json",
                         json.dumps(meta).encode())

    def discard(self, doomed: list[Layer], trash: Path, kept_blobs: set[Digest]) -> None:
        """Move layers' entries and files into a staging dir (hold the lock); drop their blobs
        unless a layer that stays uses them too."""
        for layer in doomed:
            (self.layerdb / layer.chain_id.hex).rename(trash / f"db-{layer.chain_id.hex}")
        fsync_dir(self.layerdb)
        for layer in doomed:
            with contextlib.suppress(FileNotFoundError):
                (self.overlay / layer.cache_id).rename(trash / layer.cache_id)
        for layer in doomed:
            for blob in layer.blobs:
                if blob.digest not in kept_blobs:
                    self.blobs.remove(blob.digest)

    def remove_unnamed_dirs(self, layers: list[Layer]) -> None:
        """Delete overlay dirs that no layer names (hold the lock)."""
        cache_ids = {layer.cache_id for layer in layers}
        for entry in self.overlay.iterdir():
            if entry.name not in cache_ids:
                rmtree(entry)

    def half_written_blob_lists(self) -> list[Path]:
        """Temp files of blobs.json rewrites that a killed writer left."""
        return list(self.layerdb.glob("*/.blobs.json.*"))


def _stage_commit(parent: Digest | None, diff_id: Digest, diff: Path, size: int,
                  meta: dict[str, object]) -> tuple[Path, str]:
    """Beside `diff`, a dir holding `layer/diff` (moved there) and the layerdb entry `db/`,
    made durable with one syncfs; returns it and the new cache ID."""
    cache_id = os.urandom(32).hex()  # secrets.token_hex(32), without its import
    stage = diff.parent / f"commit-{cache_id[:12]}"
    make_dirs(stage / "layer")  # overlay2/<cache-id>, once renamed into place
    diff.rename(stage / "layer" / "diff")
    _write_entry(stage / "db", parent, diff_id, cache_id, size, meta)
    _syncfs(stage)
    return stage, cache_id


def _write_entry(db: Path, parent: Digest | None, diff_id: Digest, cache_id: str, size: int,
                 meta: dict[str, object]) -> None:
    """Write a layerdb entry into a new dir; it becomes visible by the dir's rename."""
    db.mkdir()
    files = {"diff": str(diff_id), "cache-id": cache_id, "size": str(size),
             "blobs.json": json.dumps(meta)}
    if parent is not None:
        files["parent"] = str(parent)
    for name, text in files.items():
        # Not fsynced one by one: one syncfs makes the whole staged commit durable.
        write_atomic(db / name, text.encode(), durable=False)


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
