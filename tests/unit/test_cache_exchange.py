"""The shared cache's format and its flags: round trips, checks of untrusted configs, and
`--cache-to` / `--cache-from` as BuildKit reads them."""

from __future__ import annotations

import pytest

from layerbuild.cache.exchange import CacheConfig, CacheLayer, CacheRecord, StepResult, assemble
from layerbuild.cache.options import parse_cache_spec
from layerbuild.digest import Digest, chain_id
from layerbuild.errors import FormatError, LayerbuildError
from layerbuild.image import OCI_LAYER_GZIP, Descriptor, History

BASE, MINE = Digest.of(b"base"), Digest.of(b"mine")
BLOB = Descriptor(OCI_LAYER_GZIP, Digest.of(b"blob"), 4)
KEY = "ab" * 32


def test_assemble_names_each_layer_once_and_only_made_layers_get_blobs() -> None:
    steps = [StepResult(KEY, History(created_by="RUN a"), (BASE, MINE)),
             StepResult("cd" * 32, History(created_by="CMD x")),
             StepResult(KEY, History(created_by="again")),  # a key once: the first kept
             ]
    config = assemble(steps, {MINE: BLOB})
    assert config.layers == (CacheLayer(BASE), CacheLayer(MINE, BLOB))
    assert [r.stack for r in config.records] == [(0, 1), ()]
    assert config.blobs() == [BLOB]
    again = CacheConfig.from_bytes(config.to_bytes(), "cache")
    assert again == config
    assert again.stack_chain(again.records[0]) == chain_id(None, BASE)


@pytest.mark.parametrize("raw", [
    {"version": 2, "layers": [], "records": []},
    {"version": 1, "layers": [], "records": [{"key": KEY, "history": {}, "stack": [0]}]},
    {"version": 1, "layers": [], "records": [{"key": "short", "history": {}}]},
    {"version": 1, "layers": [{"diff_id": "nope"}], "records": []},
    {"version": 1, "layers": [{"diff_id": str(BASE), "blob": {
        "mediaType": "text/plain", "digest": str(BASE), "size": 1}}], "records": []},
    {"version": 1, "layers": [], "records": [{"key": KEY, "history": {}, "stack": [True]}]},
])
def test_a_malformed_cache_config_is_refused(raw: dict[str, object]) -> None:
    with pytest.raises(FormatError):
        CacheConfig.from_dict(raw, "cache")


def test_records_on_a_bad_layer_are_dropped() -> None:
    config = CacheConfig((CacheLayer(BASE), CacheLayer(MINE, BLOB)),
                         (CacheRecord(KEY, History(), (0, 1)), CacheRecord("cd" * 32, History()),
                          CacheRecord("ef" * 32, History(), (0,))))
    assert [r.key for r in config.without_layer(MINE).records] == ["cd" * 32, "ef" * 32]


def test_cache_specs() -> None:
    spec = parse_cache_spec("type=registry,ref=reg:5000/app/cache,mode=max,compression=zstd",
                            True)
    assert (spec.ref, spec.mode, spec.compression) == ("reg:5000/app/cache:latest", "max",
                                                       "zstd")
    assert parse_cache_spec("reg:5000/app:v1", False).ref == "reg:5000/app:v1"
    local = parse_cache_spec("type=local,src=/ci/cache", False)
    assert (local.path, local.tag, local.describe()) == ("/ci/cache", "latest",
                                                         "/ci/cache:latest")
    assert parse_cache_spec("type=inline", True).type == "inline"
    for bad, exporting in [("type=local,src=/x", True), ("type=inline", False),
                           ("type=registry", True), ("type=s3,bucket=x", True),
                           ("type=registry,ref=a,mode=all", True), ("reg/app", True),
                           ("type=registry,ref=a,colour=red", False)]:
        with pytest.raises(LayerbuildError):
            parse_cache_spec(bad, exporting)
