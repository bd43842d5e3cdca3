"""Compression: pinned, deterministic writers and a sniffing reader that works on pipes."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import threading
from pathlib import Path

import pytest
import zstandard

from layerbuild.errors import FormatError
from layerbuild.layer import Compression, compress_writer, open_decompressed
from layerbuild.layer import compression as comp

BIG = b"".join(b"line %d: some words to compress, and some more\n" % i for i in range(40_000))
BIG += os.urandom(300_000) + bytes(200_000)  # > 2 feed blocks: exercises re-blocking
DATA = BIG[:150_000] + BIG[-50_000:]


class Pipe(io.RawIOBase):
    """A non-seekable stream handing out at most `step` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("not seekable")

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self._step, len(self._data))
        buf[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def compress(kind: Compression, data: bytes, step: int = 1 << 20) -> bytes:
    out = io.BytesIO()
    with compress_writer(kind, out) as w:
        for i in range(0, len(data), step):
            w.write(data[i : i + step])
    return out.getvalue()


def test_compression_values() -> None:
    assert [c.value for c in Compression] == ["none", "gzip", "zstd"]
    assert Compression("gzip") is Compression.GZIP
    assert isinstance(Compression.ZSTD, str)


def test_pinned_settings() -> None:
    # Changing any of these changes the digest of every gzip/zstd layer written from then on.
    assert (comp.GZIP_LEVEL, comp.ZSTD_LEVEL, comp.ZSTD_THREADS) == (1, 3, -1)
    assert comp.FEED_SIZE == 1 << 20


def test_gzip_header_has_no_time_and_no_name() -> None:
    blob = compress(Compression.GZIP, BIG)
    assert blob[:10] == bytes.fromhex("1f8b08000000000000ff")
    flags, mtime = blob[3], int.from_bytes(blob[4:8], "little")
    assert flags == 0 and mtime == 0  # no FNAME, no FEXTRA, no time
    assert gzip.decompress(blob) == BIG  # readable by an independent implementation


def test_gzip_sink_with_a_name_still_writes_none(tmp_path: Path) -> None:
    path = tmp_path / "layer.tar.gz"
    with open(path, "wb") as f, compress_writer(Compression.GZIP, f) as w:
        w.write(b"x")
    assert path.read_bytes()[:10] == comp.GZIP_HEADER  # FLG 0: no FNAME from the file's name


@pytest.mark.parametrize("kind", list(Compression))
def test_output_is_deterministic_and_independent_of_write_sizes(kind: Compression) -> None:
    digests = {hashlib.sha256(compress(kind, BIG, step)).hexdigest()
               for step in (511, 4096, 1 << 20, 3 << 20, len(BIG))}
    assert len(digests) == 1


def test_zstd_bytes_do_not_depend_on_the_worker_count() -> None:
    # Why ZSTD_THREADS may be -1: multi-threaded zstd is deterministic for any count >= 1.
    outs = set()
    for threads in (1, 2, 4):
        c = zstandard.ZstdCompressor(level=comp.ZSTD_LEVEL, threads=threads,
                                     write_checksum=False, write_content_size=False)
        out = io.BytesIO()
        with c.stream_writer(out, closefd=False) as w:
            w.write(BIG)
        outs.add(out.getvalue())
    assert len(outs) == 1


def test_none_is_the_identity() -> None:
    assert compress(Compression.NONE, BIG, 4096) == BIG


def test_sink_is_left_open() -> None:
    out = io.BytesIO()
    with compress_writer(Compression.ZSTD, out) as w:
        w.write(b"abc")
    assert not out.closed
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out.getvalue()) == b"abc"


SAMPLES = {
    "gzip": gzip.compress(DATA, mtime=0),
    "gzip-multi-member": gzip.compress(DATA[:1000], mtime=0) + gzip.compress(DATA[1000:], mtime=0),
    "zstd": zstandard.ZstdCompressor().compress(DATA),
    "zstd-frames": (zstandard.ZstdCompressor().compress(DATA[:5000])
                    + zstandard.ZstdCompressor().compress(DATA[5000:])),
    "xz": lzma.compress(DATA),
    "bzip2": bz2.compress(DATA),
    "plain": DATA,
    "ours-gzip": compress(Compression.GZIP, DATA),
    "ours-zstd": compress(Compression.ZSTD, DATA),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sniffed_from_a_non_seekable_stream(name: str) -> None:
    reader = open_decompressed(Pipe(SAMPLES[name]))  # type: ignore[arg-type]
    assert reader.read() == DATA


@pytest.mark.parametrize("name", ["gzip", "zstd-frames", "xz", "plain"])
def test_sniffed_from_a_real_pipe(name: str) -> None:
    rfd, wfd = os.pipe()

    def feed() -> None:
        with os.fdopen(wfd, "wb") as w:
            w.write(SAMPLES[name])

    t = threading.Thread(target=feed)
    t.start()
    with os.fdopen(rfd, "rb", buffering=0) as r:
        got = open_decompressed(r)  # type: ignore[arg-type]
        assert hashlib.sha256(got.read()).digest() == hashlib.sha256(DATA).digest()
    t.join()


@pytest.mark.parametrize("data", [b"", b"\x1f", b"BZ"])
def test_short_streams_are_plain(data: bytes) -> None:
    assert open_decompressed(Pipe(data)).read() == data  # type: ignore[arg-type]


@pytest.mark.parametrize("blob", [
    b"\x1f\x8b\x08\x00" + b"garbage!" * 100,
    SAMPLES["gzip"][:-100],
    b"\x28\xb5\x2f\xfd" + b"garbage!" * 100,
    SAMPLES["xz"][:200],
    b"BZh9" + b"garbage!" * 100,
], ids=["gzip-garbage", "gzip-truncated", "zstd-garbage", "xz-truncated", "bzip2-garbage"])
def test_corrupt_input_is_a_format_error(blob: bytes) -> None:
    with pytest.raises(FormatError):
        open_decompressed(Pipe(blob, step=4096)).read()  # type: ignore[arg-type]


def test_an_io_error_of_the_source_stays_an_io_error() -> None:
    class Failing(Pipe):
        def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
            if len(self._data) < len(SAMPLES["gzip"]) - 100:
                raise OSError(5, "Input/output error")
            return super().readinto(buf)

    with pytest.raises(OSError) as err:
        open_decompressed(Failing(SAMPLES["gzip"], step=64)).read()  # type: ignore[arg-type]
    assert not isinstance(err.value, FormatError)
    assert err.value.errno == 5
