"""A blob whose bytes are not the ones its digest names fails on its digest, whatever the
broken bytes make of the tar; a blob that is what its digest says but no tar fails as one."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from layerbuild.digest import Digest
from layerbuild.errors import DigestMismatch, FormatError
from layerbuild.ingest import stage_blob


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = os.urandom(200_000)
        info = tarfile.TarInfo("f")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


TAR = _tar()
BLOB = gzip.compress(TAR, mtime=0)


def _flip(data: bytes, start: int, end: int) -> bytes:
    return data[:start] + bytes(b ^ 0xFF for b in data[start:end]) + data[end:]


@pytest.mark.parametrize("broken", [
    _flip(BLOB, 0, len(BLOB)),  # not even gzip any more: read as a (bad) tar
    _flip(BLOB, 1000, 1100),  # bad deflate data
    BLOB[:-8] + b"\0" * 8,  # a bad gzip trailer
], ids=["all", "middle", "trailer"])
def test_bytes_not_the_blobs_fail_on_its_digest(tmp_path: Path, broken: bytes) -> None:
    with pytest.raises(DigestMismatch, match=f"^app layer 1a2b blob: content is sha256:.*"
                                             f"expected {Digest.of(BLOB)}$"):
        stage_blob(tmp_path, io.BytesIO(broken), Digest.of(TAR), Digest.of(BLOB), len(BLOB),
                   "app layer 1a2b")


def test_a_blob_that_is_no_tar_fails_as_one(tmp_path: Path) -> None:
    junk = gzip.compress(b"\x01" * 4096, mtime=0)
    with pytest.raises(FormatError) as info:
        stage_blob(tmp_path, io.BytesIO(junk), Digest.of(b"\x01" * 4096), Digest.of(junk),
                   len(junk), "app layer 1a2b")
    assert not isinstance(info.value, DigestMismatch)
    assert str(info.value).startswith("app layer 1a2b")
