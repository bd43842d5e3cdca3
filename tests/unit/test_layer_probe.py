"""Which files ADD unpacks: tar archives, plain or compressed, told by their content (BuildKit's
`isArchivePath`: the file decompresses by its magic bytes and its first tar header reads)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from pathlib import Path

import pytest
import zstandard

from layerbuild.layer import is_tar_archive
from layerbuild.layer.probe import PROBE_LIMIT, is_tar_stream


def tar_of(members: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def v7_tar() -> bytes:
    """A tar of the 7th Edition format: no `ustar` magic, only a good checksum (BuildKit, with
    Go's tar reader, unpacks it)."""
    raw = bytearray(tar_of({"v7/file": b"v7\n"}, tarfile.USTAR_FORMAT))
    raw[257:329] = bytes(72)  # magic, version, user and group names
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    return bytes(raw)


def directory_tar() -> bytes:
    info = tarfile.TarInfo("d")
    info.type = tarfile.DIRTYPE
    return info.tobuf() + bytes(1024)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


TAR = tar_of({"dir/file": b"inside\n"})
COMPRESSORS = {"plain": lambda d: d, "gzip": gzip.compress, "bzip2": bz2.compress,
               "xz": lzma.compress, "zstd": zstd}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_a_tar_is_an_archive_however_it_is_compressed(kind: str) -> None:
    assert is_tar_stream(io.BytesIO(COMPRESSORS[kind](TAR)))


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_text_is_no_archive(kind: str) -> None:
    assert not is_tar_stream(io.BytesIO(COMPRESSORS[kind](b"hello, not a tar\n" * 40)))


@pytest.mark.parametrize(("name", "data"), [
    ("empty file", b""),
    ("empty gzip", gzip.compress(b"")),
    ("end blocks only", bytes(1024)),
    ("gzipped end blocks", gzip.compress(bytes(10240))),
    ("short header", TAR[:300]),
    ("bad checksum", b"x" + TAR[1:]),
    ("a zero block, then a header", bytes(512) + TAR),
    ("truncated gzip of text", gzip.compress(b"text " * 1000)[:40]),
    ("bare gzip magic", b"\x1f\x8b"),
])
def test_what_is_no_archive(name: str, data: bytes) -> None:
    assert not is_tar_stream(io.BytesIO(data)), name


@pytest.mark.parametrize(("name", "data"), [
    ("v7 tar", v7_tar()),
    ("pax header first", tar_of({"long/" + "n" * 200: b"x"})),
    ("gnu long name", tar_of({"long/" + "n" * 200: b"x"}, tarfile.GNU_FORMAT)),
    ("only a directory", directory_tar()),
    ("a first header whose data is cut short", gzip.compress(TAR[:520])),
])
def test_what_is_an_archive(name: str, data: bytes) -> None:
    assert is_tar_stream(io.BytesIO(data)), name


def test_the_probe_reads_a_bounded_prefix() -> None:
    """An extended header larger than the probe reads is no archive, and the probe stops at
    its limit (a decompression bomb costs at most PROBE_LIMIT bytes)."""
    pax = b"a" * (PROBE_LIMIT * 2)
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, len(pax)
    data = header.tobuf(tarfile.USTAR_FORMAT) + pax + tarfile.TarInfo("f").tobuf() + bytes(1024)

    class Counting(io.BytesIO):
        taken = 0

        def read(self, size: int | None = -1) -> bytes:
            out = super().read(size)
            Counting.taken += len(out)
            return out

    assert not is_tar_stream(Counting(data))
    assert Counting.taken <= PROBE_LIMIT + (1 << 20)  # what the buffers read ahead


def test_a_file_is_probed_by_content_not_name(tmp_path: Path) -> None:
    (tmp_path / "archive.tar.gz").write_bytes(gzip.compress(b"text\n"))
    (tmp_path / "no-extension").write_bytes(lzma.compress(TAR))
    assert not is_tar_archive(tmp_path / "archive.tar.gz")
    assert is_tar_archive(tmp_path / "no-extension")
