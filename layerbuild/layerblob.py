"""A stored layer as it leaves the store (a save, a push, a cache export): its blob in the
compression asked for, made from its tar on first use and kept (`Store.add_layer_blob`).

Apart from `ingest`, so that what only reads layers out (a `save`) loads none of the code that
unpacks or writes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerbuild.digest import CHUNK, Digest, HashingWriter
from layerbuild.errors import StoreError
from layerbuild.image import Descriptor, layer_media_type
from layerbuild.layer.compression import Compression, compress_writer, open_decompressed
from layerbuild.store import Layer, Store


@dataclass(frozen=True)
class LayerBlob:
    """A layer as it leaves the store: its descriptor and how to open its bytes."""

    descriptor: Descriptor
    open: Callable[[], BinaryIO]


def layer_blob(store: Store, layer: Layer, compression: str) -> LayerBlob:
    """The layer's blob in the asked compression ("none", "gzip", "zstd"), made (and kept)
    from its tar the first time it is asked for."""
    _check_blob(layer.blob_path, layer.digest, layer)
    media = layer_media_type(compression)
    found = next((b for b in layer.blobs if b.media_type == media), None)
    if found is not None:
        _check_blob(store.blob_path(found.digest), found.digest, layer)
        return _stored_blob(store, found)
    if compression == "none":
        desc = Descriptor(media, layer.diff_id, layer.tar_size)
        return LayerBlob(desc, lambda: _open_tar(layer))
    with store.staging() as stage:
        out_path = stage / "blob"
        with open(out_path, "wb") as out:
            hashed = HashingWriter(out)  # type: ignore[arg-type]
            with compress_writer(Compression(compression), hashed) as comp:  # type: ignore
                tar = _open_tar(layer)
                try:
                    while chunk := tar.read(CHUNK):
                        comp.write(chunk)
                finally:
                    tar.close()
            out.flush()
            os.fsync(out.fileno())
        desc = Descriptor(media, hashed.digest, hashed.size)
        store.add_layer_blob(layer, desc, out_path)
    return _stored_blob(store, desc)


def _stored_blob(store: Store, desc: Descriptor) -> LayerBlob:
    path = store.blob_path(desc.digest)
    return LayerBlob(desc, lambda: open(path, "rb"))


def _check_blob(path: Path, digest: Digest, layer: Layer) -> None:
    if not path.exists():
        raise StoreError(f"blob {digest} of layer {layer.diff_id} is missing from the store")


def _open_tar(layer: Layer) -> BinaryIO:
    return open_decompressed(layer.open())
