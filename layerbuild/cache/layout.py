"""A build cache in a folder (`type=local`): an OCI image layout, as CI cache actions keep.

    DIR/oci-layout            {"imageLayoutVersion": "1.0.0"}
    DIR/index.json            a manifest per cache name (its org.opencontainers.image.ref.name)
    DIR/blobs/sha256/<hex>    the cache config, the manifests, the layer blobs

Every blob is written under a temp name, checked against its digest, made durable and renamed
into place, so a blob is whole or absent; `index.json` is replaced the same way, under a lock
(`DIR/.lock`) that orders concurrent exports: each keeps the others' names, and the last
export of a name wins it. A folder shared by concurrent jobs thus always names whole blobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from layerbuild.digest import CHUNK, Digest, HashingWriter
from layerbuild.errors import FormatError, LayerbuildError
from layerbuild.fsutil import atomic_file, write_atomic
from layerbuild.image import OCI_MANIFEST, Descriptor, canonical_json, parse_json_object

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_LIMIT = 4 << 20


class CacheFolder:
    """One OCI layout folder holding build caches by name."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def blob_path(self, digest: Digest) -> Path:
        """Where a blob is (or would be)."""
        return self.root / "blobs" / "sha256" / digest.hex

    def has_blob(self, digest: Digest) -> bool:
        """Whether the folder has the blob."""
        return self.blob_path(digest).is_file()

    def open_blob(self, digest: Digest) -> BinaryIO:
        """A reader of a blob (its bytes are checked by whoever reads them)."""
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise LayerbuildError(f"{self.root}: blob {digest} is missing") from None

    def manifest(self, tag: str) -> tuple[Descriptor, bytes] | None:
        """The manifest named `tag` and its bytes (checked), or None if there is none."""
        try:
            data = (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LayerbuildError(f"{self.root}/index.json: {exc.strerror}") from None
        if len(data) > INDEX_LIMIT:
            raise FormatError(f"{self.root}/index.json: over {INDEX_LIMIT} bytes")
        index = parse_json_object(data, f"{self.root}/index.json")
        found = None
        for item in index.get("manifests") or []:
            if isinstance(item, dict) and (item.get("annotations") or {}).get(REF_NAME) == tag:
                found = Descriptor.from_dict(item)
        if found is None:
            return None
        return found, self.read_small(found, INDEX_LIMIT, "manifest")

    def read_small(self, desc: Descriptor, limit: int, what: str) -> bytes:
        """A small blob's bytes (a manifest, a config), checked against its size and digest."""
        if desc.size > limit:
            raise FormatError(f"{self.root}: {what} {desc.digest} is over {limit} bytes")
        with self.open_blob(desc.digest) as f:
            body = f.read(desc.size + 1)
        if len(body) != desc.size or Digest.of(body) != desc.digest:
            raise FormatError(f"{self.root}: {what} {desc.digest} does not match its digest")
        return body

    def put_blob(self, digest: Digest, write: Callable[[BinaryIO], None]) -> None:
        """Add a blob by `write`ing its bytes (checked against `digest`); kept if present."""
        path = self.blob_path(digest)
        if path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as out:
            hashed = HashingWriter(out)
            write(hashed)  # type: ignore[arg-type]
            if hashed.digest != digest:
                raise LayerbuildError(f"{self.root}: blob {digest} came out as {hashed.digest}")

    def put_bytes(self, data: bytes) -> Descriptor:
        """Add a small blob (a config, a manifest); its digest and size."""
        digest = Digest.of(data)
        self.put_blob(digest, lambda out: out.write(data))  # type: ignore[arg-type,return-value]
        return Descriptor("", digest, len(data))

    def copy_blob(self, digest: Digest, source: Callable[[], BinaryIO]) -> None:
        """Add a blob read from `source` (streamed, never held whole)."""
        def write(out: BinaryIO) -> None:
            with source() as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
        self.put_blob(digest, write)

    def name_manifest(self, tag: str, data: bytes) -> Descriptor:
        """Store a manifest and name it `tag` in index.json (replacing that name only)."""
        stored = self.put_bytes(data)
        desc = Descriptor(OCI_MANIFEST, stored.digest, stored.size, {REF_NAME: tag})
        with self._locked():
            if not (self.root / "oci-layout").exists():
                write_atomic(self.root / "oci-layout", LAYOUT)
            try:
                index = parse_json_object((self.root / "index.json").read_bytes(),
                                          f"{self.root}/index.json")
            except FileNotFoundError:
                index = {}
            kept = [item for item in index.get("manifests") or []
                    if isinstance(item, dict)
                    and (item.get("annotations") or {}).get(REF_NAME) != tag]
            write_atomic(self.root / "index.json", canonical_json(
                {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [*kept, desc.to_dict()]}))
        return desc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

