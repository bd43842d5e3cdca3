from __future__ import annotations

import json

import pytest

from layerbuild.digest import Digest
from layerbuild.errors import FormatError
from layerbuild.image import (
    OCI_LAYER_GZIP,
    Descriptor,
    History,
    Image,
    ImageConfig,
    Manifest,
    canonical_json,
    empty_config,
    layer_compression,
    manifest_bytes,
)

DOCKER_CONFIG = json.dumps({
    "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Healthcheck": {"Test": ["NONE"]},
               "OnBuild": ["RUN true"], "Shell": ["/bin/sh", "-c"]},
    "container_config": {"Cmd": ["x"]}, "docker_version": "20.10",
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
    "history": [{"created_by": "ADD x /", "created": "2024-01-01T00:00:00Z"},
                {"created_by": "CMD sh", "empty_layer": True}],
}, indent=3).encode()


def test_config_keeps_exact_bytes_and_id() -> None:
    image = Image.from_config_bytes(DOCKER_CONFIG)
    assert image.id == Digest.of(DOCKER_CONFIG)
    assert image.config.config["Shell"] == ["/bin/sh", "-c"]
    assert image.config.extra["docker_version"] == "20.10"
    assert image.config.history[1].empty_layer


def test_round_trip_loses_nothing() -> None:
    config = ImageConfig.from_bytes(DOCKER_CONFIG)
    again = ImageConfig.from_bytes(config.to_bytes())
    assert again == config
    assert json.loads(config.to_bytes()) == json.loads(DOCKER_CONFIG)


def test_modifying_returns_new_values() -> None:
    base = empty_config("2024-01-01T00:00:00Z")
    diff = Digest.of(b"layer")
    one = base.with_layer(diff, History(created_by="COPY a /"))
    two = one.with_history(History(created_by="ENV A=1")).with_config(Env=["A=1"])
    assert base.diff_ids == () and one.diff_ids == (diff,)
    assert [h.empty_layer for h in two.history] == [False, True]
    assert two.config == {"Env": ["A=1"]}
    assert two.with_config(Env=None).config == {}
    assert Image.from_config(two).id == Digest.of(canonical_json(two.to_dict()))


@pytest.mark.parametrize("bad", [b"[]", b"{", b'{"rootfs": {"type": "x"}}',
                                 b'{"rootfs": {"type": "layers", "diff_ids": ["md5:1"]}}'])
def test_bad_configs(bad: bytes) -> None:
    with pytest.raises(FormatError):
        ImageConfig.from_bytes(bad)


def test_manifest_round_trip() -> None:
    config = Descriptor("application/vnd.oci.image.config.v1+json", Digest.of(b"c"), 1)
    layer = Descriptor(OCI_LAYER_GZIP, Digest.of(b"l"), 1)
    data = manifest_bytes(config, [layer])
    parsed = Manifest.from_bytes(data)
    assert parsed.config == config and parsed.layers == (layer,)
    assert layer_compression(parsed.layers[0].media_type) == "gzip"
    with pytest.raises(FormatError):
        Manifest.from_bytes(b'{"schemaVersion": 2, "mediaType": "text/plain"}')
    with pytest.raises(FormatError):
        Descriptor.from_dict({"digest": "sha256:" + "0" * 64, "size": -1})
