"""Checking every invariant of an image as written: digests, sizes, diff_ids, history.

Used by the tests on everything layerbuild writes or reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import BinaryIO

from layerbuild.archive.sources import Source
from layerbuild.digest import Digest, HashingReader, digest_stream, verify
from layerbuild.errors import FormatError
from layerbuild.image import (
    INDEX_TYPES,
    LAYER_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    Image,
    Manifest,
    load_json,
    parse_json_object,
)
from layerbuild.layer import open_decompressed

BlobOpener = Callable[[Digest], BinaryIO]


def validate_image(manifest: Manifest, open_blob: BlobOpener) -> Image:
    """Check a manifest's config and layers against their digests, sizes and diff_ids."""
    with open_blob(manifest.config.digest) as stream:
        data = stream.read()
    verify(manifest.config.digest, Digest.of(data), "config")
    if len(data) != manifest.config.size:
        raise FormatError(f"config: {len(data)} bytes, descriptor says {manifest.config.size}")
    image = Image.from_config_bytes(data)
    diff_ids = image.config.diff_ids
    if len(manifest.layers) != len(diff_ids):
        raise FormatError(f"{len(manifest.layers)} layers but {len(diff_ids)} diff_ids")
    built = [h for h in image.config.history if not h.empty_layer]
    if image.config.history and len(built) != len(diff_ids):
        raise FormatError(f"{len(built)} non-empty history entries but {len(diff_ids)} layers")
    for desc, diff_id in zip(manifest.layers, diff_ids, strict=True):
        if desc.media_type not in LAYER_TYPES:
            raise FormatError(f"layer {desc.digest}: media type {desc.media_type!r}")
        validate_layer(open_blob(desc.digest), desc.digest, desc.size, diff_id)
    return image


def validate_layer(stream: BinaryIO, digest: Digest | None, size: int | None,
                   diff_id: Digest) -> None:
    """Check one layer blob: its digest and size, and that it decompresses to `diff_id`."""
    with stream:
        raw = HashingReader(stream)
        tar_digest, _ = digest_stream(open_decompressed(raw))  # type: ignore[arg-type]
        raw.drain()
    if digest is not None:
        verify(digest, raw.digest, "layer blob")
    if size is not None and size != raw.size:
        raise FormatError(f"layer {digest}: {raw.size} bytes, descriptor says {size}")
    verify(diff_id, tar_digest, f"layer {digest} (uncompressed)")


def validate_archive(source: Source) -> list[Image]:
    """Check every image of an archive's OCI index and manifest.json; each image once."""
    images: list[Image] = []

    def open_blob(digest: Digest) -> BinaryIO:
        return source.open(f"blobs/sha256/{digest.hex}")

    if source.exists("index.json"):
        images.extend(_validate_index(source, "index.json", None, open_blob))
    if source.exists("manifest.json"):
        images.extend(_validate_docker(source))
    if not images:
        raise FormatError("archive holds no image")
    return list({image.id: image for image in images}.values())


def _validate_index(source: Source, name: str, digest: Digest | None,
                    open_blob: BlobOpener) -> list[Image]:
    with source.open(name) as stream:
        data = stream.read()
    if digest is not None:
        verify(digest, Digest.of(data), name)
    index = parse_json_object(data, name)
    if index.get("schemaVersion") != 2:
        raise FormatError(f"{name}: schemaVersion must be 2")
    out = []
    for raw in index.get("manifests") or []:
        desc = Descriptor.from_dict(raw)
        blob = f"blobs/sha256/{desc.digest.hex}"
        if desc.media_type in INDEX_TYPES:
            out.extend(_validate_index(source, blob, desc.digest, open_blob))
            continue
        if desc.media_type not in MANIFEST_TYPES:
            raise FormatError(f"{name}: unknown manifest media type {desc.media_type!r}")
        with source.open(blob) as stream:
            data = stream.read()
        verify(desc.digest, Digest.of(data), "manifest")
        if len(data) != desc.size:
            raise FormatError(f"manifest {desc.digest}: size {len(data)} != {desc.size}")
        out.append(validate_image(Manifest.from_bytes(data, desc.media_type), open_blob))
    return out


_HEX_PATH = re.compile(r"([0-9a-f]{64})(?:\.json)?$")


def _validate_docker(source: Source) -> list[Image]:
    with source.open("manifest.json") as stream:
        entries = load_json(stream.read(), "manifest.json")
    out = []
    for entry in entries:
        with source.open(entry["Config"]) as stream:
            data = stream.read()
        named = _HEX_PATH.search(entry["Config"])
        if named:
            verify(Digest(named.group(1)), Digest.of(data), entry["Config"])
        image = Image.from_config_bytes(data)
        layers = entry.get("Layers") or []
        if len(layers) != len(image.config.diff_ids):
            raise FormatError(f"manifest.json: {len(layers)} layers but "
                              f"{len(image.config.diff_ids)} diff_ids")
        for path, diff_id in zip(layers, image.config.diff_ids, strict=True):
            named = _HEX_PATH.search(path) if path.startswith("blobs/") else None
            validate_layer(source.open(path), Digest(named.group(1)) if named else None, None,
                           diff_id)
        out.append(image)
    return out
