"""Loading image archives into the store: our own, `docker save` (20.10 and 25+), OCI layouts.

Everything an archive claims is checked before anything is stored: config digests, that each
layer exists and that layers and diff_ids line up. Layer digests are checked while storing;
a failure releases the layers this load added, so the store is left as it was.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layerbuild.archive.sources import DirSource, Source, TarSource
from layerbuild.digest import Digest, chain_id, verify
from layerbuild.errors import FormatError
from layerbuild.image import (
    CONTAINERD_NAME,
    DOCKER_LAYER,
    INDEX_TYPES,
    MANIFEST_TYPES,
    REF_NAME,
    Descriptor,
    Image,
    Manifest,
    host_platform,
    load_json,
    parse_json_object,
)
from layerbuild.ingest import ingest_blob
from layerbuild.layer import open_decompressed, sniff
from layerbuild.reference import InvalidReference, Reference
from layerbuild.store import Store

_BLOB_PATH = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
_CONFIG_PATH = re.compile(r"^([0-9a-f]{64})\.json$")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LayerSpec:
    """A layer as an archive names it."""

    name: str
    media_type: str
    digest: Digest | None
    size: int | None


@dataclass(frozen=True)
class Loadable:
    """An image found in an archive, checked and ready to store."""

    image: Image
    layers: tuple[LayerSpec, ...]
    tags: tuple[Reference, ...]


def read_blob(source: Source, name: str, digest: Digest | None, what: str,
              size: int | None = None, limit: int = 16 << 20) -> bytes:
    """Read a small JSON blob, checking its digest and size when the archive states them."""
    if not source.exists(name):
        raise FormatError(f"{what}: the archive has no {name}")
    with source.open(name) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise FormatError(f"{what}: {name} is larger than {limit} bytes")
    if digest is not None:
        verify(digest, Digest.of(data), f"{what} {name}")
    if size is not None and size != len(data):
        raise FormatError(f"{what} {name}: {len(data)} bytes, expected {size}")
    return data


def _tags(names: list[str]) -> tuple[Reference, ...]:
    out = []
    for name in names:
        try:
            out.append(Reference.parse(name))
        except InvalidReference as exc:
            raise FormatError(f"archive names an invalid tag: {exc}") from None
    return tuple(out)


def _checked(source: Source, config: bytes, layers: list[LayerSpec],
             tags: tuple[Reference, ...]) -> Loadable:
    image = Image.from_config_bytes(config)
    if len(layers) != len(image.config.diff_ids):
        raise FormatError(f"image {image.id.short}: {len(layers)} layers but "
                          f"{len(image.config.diff_ids)} diff_ids in its config")
    for layer in layers:
        if not source.exists(layer.name):
            raise FormatError(f"image {image.id.short}: layer {layer.name} is missing")
    return Loadable(image, tuple(layers), tags)


def from_docker_manifest(source: Source) -> list[Loadable]:
    """Images listed in a `manifest.json` (docker save, and our own archives)."""
    entries = load_json(read_blob(source, "manifest.json", None, "manifest.json"),
                        "manifest.json")
    if not isinstance(entries, list):
        raise FormatError("manifest.json: expected a list")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise FormatError("manifest.json: an entry has no Config")
        name = entry["Config"]
        match = _BLOB_PATH.match(name) or _CONFIG_PATH.match(name)
        config = read_blob(source, name, Digest(match.group(1)) if match else None, "config")
        layers = []
        for path in entry.get("Layers") or []:
            blob = _BLOB_PATH.match(str(path))
            layers.append(LayerSpec(str(path), DOCKER_LAYER,
                                    Digest(blob.group(1)) if blob else None, None))
        out.append(_checked(source, config, layers, _tags(entry.get("RepoTags") or [])))
    return out


def _platform_ok(desc: Descriptor) -> bool:
    if not desc.platform:
        return True
    arch, _variant = host_platform()
    return desc.platform.get("os") == "linux" and desc.platform.get("architecture") == arch


def _descriptor_tags(desc: Descriptor) -> tuple[Reference, ...]:
    notes = desc.annotations or {}
    for key in (CONTAINERD_NAME, REF_NAME):
        value = notes.get(key, "")
        if ":" in value or "/" in value:
            try:
                return (Reference.parse(value),)
            except InvalidReference:
                continue
    return ()


def from_oci_index(source: Source, name: str = "index.json", digest: Digest | None = None,
                   depth: int = 0) -> list[Loadable]:
    """Images reachable from an OCI image index (nested indexes included)."""
    if depth > 4:
        raise FormatError("image index nests too deeply")
    index = parse_json_object(read_blob(source, name, digest, "image index"), name)
    out: list[Loadable] = []
    for raw in index.get("manifests") or []:
        desc = Descriptor.from_dict(raw)
        blob = f"blobs/sha256/{desc.digest.hex}"
        if desc.media_type in INDEX_TYPES:
            out.extend(from_oci_index(source, blob, desc.digest, depth + 1))
        elif desc.media_type in MANIFEST_TYPES and _platform_ok(desc):
            data = read_blob(source, blob, desc.digest, "manifest", desc.size)
            manifest = Manifest.from_bytes(data, desc.media_type)
            c = manifest.config
            config = read_blob(source, f"blobs/sha256/{c.digest.hex}", c.digest, "config", c.size)
            layers = [LayerSpec(f"blobs/sha256/{d.digest.hex}", d.media_type, d.digest, d.size)
                      for d in manifest.layers]
            out.append(_checked(source, config, layers, _descriptor_tags(desc)))
    return out


def find_images(source: Source) -> list[Loadable]:
    """Every image an archive holds, checked."""
    if source.exists("manifest.json"):
        images = from_docker_manifest(source)
    elif source.exists("index.json"):
        images = from_oci_index(source)
    else:
        raise FormatError("not an image archive: it has neither manifest.json nor index.json")
    if not images:
        raise FormatError("the archive holds no image for this platform")
    return images


def open_archive(path: str, stage: Path) -> Source:
    """A source for an archive path ("-" for stdin): a directory, a tar, or a compressed tar."""
    if path != "-" and Path(path).is_dir():
        return DirSource(Path(path))
    try:
        raw = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror}") from None
    with raw:
        head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
        if sniff(head) is None and path != "-":
            return TarSource(Path(path))
        copy = stage / "archive.tar"
        with open(copy, "wb") as out:
            try:
                shutil.copyfileobj(open_decompressed(raw), out, 1 << 20)  # type: ignore
            except (EOFError, OSError, ValueError) as exc:
                raise FormatError(f"{path}: truncated or corrupt archive ({exc})") from None
    return TarSource(copy)


def store_images(store: Store, source: Source, images: list[Loadable],
                 progress: Progress) -> list[Image]:
    """Store checked images: layers first ("Already exists" when stored), then configs."""
    added: set[Digest] = set()
    try:
        with store.staging() as lease:
            for item in images:
                parent = None
                for spec, diff_id in zip(item.layers, item.image.config.diff_ids, strict=True):
                    if store.layer(chain_id(parent, diff_id)):
                        progress(f"{diff_id.short}: Already exists")
                    else:
                        progress(f"{diff_id.short}: Loading layer")
                    with source.open(spec.name) as blob:
                        got = ingest_blob(store, parent, diff_id, blob,
                                          spec.media_type, spec.digest, spec.size, lease,
                                          what=f"layer {spec.name}")
                    if not got.existed:
                        added.add(got.record.chain_id)
                    parent = got.record.chain_id
                store.put_image(item.image, list(item.tags), lease)
    except BaseException:
        if added:
            store.release_layers(added)
        raise
    return [item.image for item in images]

