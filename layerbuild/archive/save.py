"""Writing images out as one tar: an OCI image layout plus Docker's `manifest.json`.

That pair is what `docker load` (any version), skopeo (`oci-archive:`), podman and umoci read.
Everything in the archive is worked out first; then bytes are streamed, each blob once.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from layerbuild.digest import Digest
from layerbuild.errors import StoreError
from layerbuild.fsutil import atomic_file
from layerbuild.image import (
    CONTAINERD_NAME,
    OCI_CONFIG,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    Image,
    canonical_json,
    index_bytes,
    manifest_bytes,
)
from layerbuild.layerblob import layer_blob
from layerbuild.reference import InvalidReference, Reference
from layerbuild.store import Store

Opener = Callable[[], BinaryIO]


@dataclass(frozen=True)
class ArchivePlan:
    """What an archive will hold: small files by content, blobs by opener; `shared` names
    the images whose index.json entries carry the same `ref.name` (their tag)."""

    files: dict[str, bytes]
    blobs: dict[Digest, tuple[int, Opener]]
    shared: dict[str, list[str]] = field(default_factory=dict)


def _bytes_opener(data: bytes) -> Opener:
    return lambda: io.BytesIO(data)


def plan_archive(store: Store, refs: list[str], compression: str = "none") -> ArchivePlan:
    """Work out every file and blob of an archive of the images `refs` name."""
    order: list[Digest] = []
    tags: dict[Digest, list[Reference]] = {}
    for ref in refs:
        image_id = store.resolve(ref)
        if image_id not in tags:
            order.append(image_id)
            tags[image_id] = []
        tag = _tag_of(ref, store)
        if tag is not None and tag not in tags[image_id]:
            tags[image_id].append(tag)
    blobs: dict[Digest, tuple[int, Opener]] = {}
    index: list[Descriptor] = []
    docker: list[dict[str, object]] = []
    for image_id in order:
        image = store.image_by_id(image_id)
        layers = []
        for layer in store.image_layers(image):
            try:
                blob = layer_blob(store, layer, compression)
            except StoreError as exc:
                raise StoreError(f"image {image_id.short}: {exc}") from None
            layers.append(blob.descriptor)
            blobs.setdefault(blob.descriptor.digest, (blob.descriptor.size, blob.open))
        config = Descriptor(OCI_CONFIG, image.id, len(image.config_bytes))
        blobs.setdefault(image.id, (config.size, _bytes_opener(image.config_bytes)))
        manifest = manifest_bytes(config, layers)
        mdesc = Descriptor(OCI_MANIFEST, Digest.of(manifest), len(manifest))
        blobs.setdefault(mdesc.digest, (mdesc.size, _bytes_opener(manifest)))
        index.extend(_index_entries(mdesc, tags[image_id]))
        docker.append({"Config": f"blobs/sha256/{image.id.hex}",
                       "RepoTags": [t.familiar for t in tags[image_id]] or None,
                       "Layers": [f"blobs/sha256/{d.digest.hex}" for d in layers]})
    files = {"oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
             "index.json": index_bytes(index),
             "manifest.json": json.dumps(docker, separators=(",", ":")).encode()}
    return ArchivePlan(files, blobs, _shared_ref_names(index))


def _tag_of(ref: str, store: Store) -> Reference | None:
    """The tag a ref names, or None when it names an image by ID."""
    try:
        parsed = Reference.parse(ref)
    except InvalidReference:
        return None
    return parsed if parsed.familiar in store.tags() else None


def _index_entries(manifest: Descriptor, tags: list[Reference]) -> list[Descriptor]:
    """The index.json entries of one image: one per tag, annotated as `docker save` of Docker
    25+ (and containerd's export) annotates them: `ref.name` is the tag alone, the containerd
    name the full reference."""
    if not tags:
        return [manifest]
    return [Descriptor(manifest.media_type, manifest.digest, manifest.size,
                       {CONTAINERD_NAME: t.full_name, REF_NAME: t.tag or "latest"}) for t in tags]


def _shared_ref_names(index: list[Descriptor]) -> dict[str, list[str]]:
    """The `ref.name` values that more than one entry carries, with the names carrying them:
    a reader that picks an image by `ref.name` alone (skopeo's `oci-archive:FILE:TAG`,
    umoci) takes the first of them."""
    names: dict[str, list[str]] = {}
    for entry in index:
        annotations = entry.annotations or {}
        if REF_NAME in annotations:
            names.setdefault(annotations[REF_NAME], []).append(annotations[CONTAINERD_NAME])
    return {ref: found for ref, found in names.items() if len(found) > 1}


def shared_ref_notes(plan: ArchivePlan, output: str) -> list[str]:
    """One line per tag that several images of the archive share, saying how a reader that
    goes by tag alone sees them and how to name each."""
    where = "FILE" if output == "-" else output
    notes = []
    for ref, names in plan.shared.items():
        shown = ", ".join(Reference.parse(n).familiar for n in names)
        first = Reference.parse(names[0]).familiar
        notes.append(f"{shown} share the OCI ref.name {ref!r} (the tag, as docker save writes "
                     f"it): oci-archive:{where}:{ref} takes the first; "
                     f"docker-archive:{where}:{first} names each")
    return notes


def _info(name: str, size: int = 0, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


def write_archive(plan: ArchivePlan, sink: BinaryIO) -> None:
    """Stream an archive plan into a sink as one tar, the small index files first."""
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in plan.files.items():
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
        tar.addfile(_info("blobs", is_dir=True))
        tar.addfile(_info("blobs/sha256", is_dir=True))
        for digest, (size, opener) in plan.blobs.items():
            with opener() as stream:
                tar.addfile(_info(f"blobs/sha256/{digest.hex}", size), stream)


def save(store: Store, refs: list[str], output: str, compression: str = "none",
         notice: Callable[[str], None] | None = None) -> None:
    """Save images to a file (written whole, then renamed into place) or "-" for stdout;
    `notice` hears of tags that several of the images share (`shared_ref_notes`).

    The file is the user's, not the store's: as `docker save -o` (and `build -o`), it is not
    fsynced, which for a large archive would wait for all of it to reach the disk."""
    plan = plan_archive(store, refs, compression)
    if notice is not None:
        for note in shared_ref_notes(plan, output):
            notice(note)
    if output == "-":
        write_archive(plan, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    try:
        with atomic_file(Path(output), durable=False) as out:
            write_archive(plan, out)
    except OSError as exc:
        if exc.filename is None:  # a write: the archive's, not a blob's
            exc.filename = output
        exc.add_note("writing the archive")
        raise


def images_in(plan: ArchivePlan) -> list[Image]:
    """The images an archive plan holds (for tests and reports)."""
    entries = json.loads(plan.files["manifest.json"])
    out = []
    for entry in entries:
        digest = Digest(entry["Config"].rsplit("/", 1)[1])
        with plan.blobs[digest][1]() as stream:
            out.append(Image.from_config_bytes(stream.read()))
    return out
