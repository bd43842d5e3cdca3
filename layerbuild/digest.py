"""Content digests: the `Digest` value, hashing while streaming, and chain IDs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from layerbuild.errors import DigestMismatch, FormatError

_HEX = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


@dataclass(frozen=True, order=True)
class Digest:
    """A `sha256:<hex>` content digest.

    >>> Digest.of(b"").hex[:12]
    'e3b0c44298fc'
    """

    hex: str

    def __post_init__(self) -> None:
        if not _HEX.match(self.hex):
            raise FormatError(f"not a sha256 hex digest: {self.hex!r}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse `sha256:<hex>`; any other algorithm or shape is a FormatError."""
        algo, sep, hexpart = text.strip().partition(":")
        if not sep or algo != "sha256":
            raise FormatError(f"unsupported digest {text!r} (only sha256 is supported)")
        return cls(hexpart)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """Digest of a byte string."""
        return cls(hashlib.sha256(data).hexdigest())

    @property
    def short(self) -> str:
        """The 12-hex-digit form Docker prints."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"sha256:{self.hex}"


class HashingReader:
    """Wraps a binary stream, hashing and counting every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end so the digest covers the whole stream."""
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> Digest:
        return Digest(self._hash.hexdigest())


class HashingWriter:
    """Wraps a binary sink, hashing and counting every byte written through it."""

    def __init__(self, raw: BinaryIO | None = None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        if self._raw is not None:
            self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        if self._raw is not None:
            self._raw.flush()

    @property
    def digest(self) -> Digest:
        return Digest(self._hash.hexdigest())


def iter_chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """Yield a stream's bytes in chunks until it ends."""
    while chunk := stream.read(size):
        yield chunk


def digest_stream(stream: BinaryIO) -> tuple[Digest, int]:
    """Digest and size of everything left in a stream."""
    reader = HashingReader(stream)
    reader.drain()
    return reader.digest, reader.size


def verify(expected: Digest, actual: Digest, what: str) -> None:
    """Raise DigestMismatch naming `what` when the two digests differ."""
    if expected != actual:
        raise DigestMismatch(f"{what}: content is {actual}, expected {expected}")


def chain_id(parent: Digest | None, diff_id: Digest) -> Digest:
    """Chain ID of a layer on top of a stack whose chain ID is `parent`."""
    if parent is None:
        return diff_id
    return Digest.of(f"{parent} {diff_id}".encode())


def chain_ids(diff_ids: Iterable[Digest]) -> list[Digest]:
    """Chain IDs of a stack of layers, base first."""
    out: list[Digest] = []
    parent: Digest | None = None
    for diff in diff_ids:
        parent = chain_id(parent, diff)
        out.append(parent)
    return out


EMPTY_LAYER_DIFF_ID = Digest("5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef")
