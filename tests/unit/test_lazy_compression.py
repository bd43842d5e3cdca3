"""Layers a build makes are stored as plain tars and compressed when they first leave."""

from __future__ import annotations

import io
import lzma
import os
import tarfile
from pathlib import Path

import pytest

from layerbuild.digest import Digest
from layerbuild.image import OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD
from layerbuild.ingest import ingest_blob, ingest_dir
from layerbuild.layer import Compression, write_layer
from layerbuild.layerblob import layer_blob
from layerbuild.store import Store


def _tree(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    (root / "d" / "a").write_bytes(b"a" * 3000)
    os.link(root / "d" / "a", root / "d" / "b")  # two names, one content: both counted
    (root / "s").symlink_to("d/a")
    (root / "big").write_bytes(bytes(range(256)) * (3 << 12))  # more than one FEED_SIZE block
    # Every entry's time, the symlink's too: two trees made a second apart must tar the same.
    for path in (root / "d" / "a", root / "s", root / "big", root / "d", root):
        os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    return root


def _built(store: Store, tmp_path: Path) -> tuple[Digest, bytes]:
    """A layer stored from a dir as a build stores it, and what eager gzip would have made."""
    eager = io.BytesIO()
    write_layer(_tree(tmp_path / "copy"), eager, Compression.GZIP)
    with store.staging() as stage:
        ingested = ingest_dir(store, None, _tree(stage / "diff"), stage)
    return ingested.record.chain_id, eager.getvalue()


def test_a_built_layer_is_kept_as_its_tar_and_sized_in_the_same_walk(
        store: Store, tmp_path: Path) -> None:
    chain, _ = _built(store, tmp_path)
    layer = store.layer(chain)
    assert layer is not None
    assert [(b.media_type, b.digest, b.size) for b in layer.blobs] == [
        (OCI_LAYER, layer.diff_id, layer.tar_size)]
    assert Digest.of(layer.blob_path.read_bytes()) == layer.diff_id
    assert layer.size == 3000 * 2 + (3 << 20)  # Docker's size: every name's bytes


def test_the_first_gzip_is_made_then_kept_and_equals_an_eager_one(
        store: Store, tmp_path: Path) -> None:
    chain, eager = _built(store, tmp_path)
    layer = store.layer(chain)
    assert layer is not None
    first = layer_blob(store, layer, "gzip")
    assert first.descriptor.media_type == OCI_LAYER_GZIP
    with first.open() as f:
        assert f.read() == eager  # compressing later gives the bytes compressing at once gave
    again = store.layer(chain)
    assert again is not None and again.blobs[1] == first.descriptor
    made = store.blob_path(first.descriptor.digest).stat().st_mtime_ns
    assert layer_blob(store, again, "gzip").descriptor == first.descriptor
    assert store.blob_path(first.descriptor.digest).stat().st_mtime_ns == made  # not remade
    zstd = layer_blob(store, again, "zstd")
    assert zstd.descriptor.media_type == OCI_LAYER_ZSTD


def test_the_plain_tar_leaves_as_it_is_stored(store: Store, tmp_path: Path) -> None:
    chain, _ = _built(store, tmp_path)
    layer = store.layer(chain)
    assert layer is not None
    plain = layer_blob(store, layer, "none")
    assert plain.descriptor.digest == layer.diff_id
    with plain.open() as f:
        assert f.read() == layer.blob_path.read_bytes()


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue()


@pytest.mark.parametrize("pack", [lambda b: b, lzma.compress], ids=["tar", "xz"])
def test_a_blob_neither_gzip_nor_zstd_is_kept_as_the_tar_uncompressed(
        store: Store, pack: object) -> None:
    tar = _tar()
    blob = pack(tar)  # type: ignore[operator]
    ingested = ingest_blob(store, None, Digest.of(tar), io.BytesIO(blob), OCI_LAYER)
    layer = ingested.record
    assert (layer.media_type, layer.digest) == (OCI_LAYER, Digest.of(tar))
    assert layer.blob_path.read_bytes() == tar
    assert (layer.diff_dir / "f").read_bytes() == b"hello"
