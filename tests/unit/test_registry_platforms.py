"""Platforms: parsing and normalising as containerd's `platforms` package does (aliases,
arm64/v8 written plain `arm64`, arm meaning v7, armel v6), and choosing an index entry by its
matcher rules for arm (arm/v8 also runs v7, v6 and v5; the newest that runs is preferred)."""

from __future__ import annotations

import pytest

from layerbuild.digest import Digest
from layerbuild.image import OCI_MANIFEST, Descriptor
from layerbuild.registry.platforms import InvalidPlatform, Platform, choose, listed


@pytest.mark.parametrize(("text", "normal"), [
    ("linux/amd64", "linux/amd64"),
    ("amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/x86-64", "linux/amd64"),
    ("Linux/AMD64", "linux/amd64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64", "linux/arm64"),
    ("linux/arm64/8", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm64/v9", "linux/arm64/v9"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/arm/6", "linux/arm/v6"),
    ("linux/arm/v5", "linux/arm/v5"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/armel", "linux/arm/v6"),
    ("linux/i386", "linux/386"),
    ("linux/i686", "linux/386"),
    ("linux/s390x", "linux/s390x"),
    ("windows/amd64", "windows/amd64"),
    (" linux/riscv64 ", "linux/riscv64"),
])
def test_parse_and_normalise(text: str, normal: str) -> None:
    got = Platform.parse(text)
    assert str(got) == normal
    assert Platform.parse(normal) == got


@pytest.mark.parametrize("bad", ["", "/", "linux/", "/amd64", "linux//v7", "a/b/c/d",
                                 "linux/arm/v7/"])
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidPlatform, match="os/arch"):
        Platform.parse(bad)


def test_from_descriptor() -> None:
    assert Platform.from_descriptor({"os": "linux", "architecture": "arm64"}) == \
        Platform("linux", "arm64", None)  # containerd's normal form: arm64 is v8
    assert Platform.from_descriptor({"os": "linux", "architecture": "arm",
                                     "variant": ""}) == Platform("linux", "arm", "v7")
    assert Platform.from_descriptor({"os": "linux", "architecture": "arm",
                                     "variant": "v6"}) == Platform("linux", "arm", "v6")


def test_host_is_normalised() -> None:
    host = Platform.host()
    assert host.os == "linux"
    assert Platform.of(host.os, host.architecture, host.variant) == host


@pytest.mark.parametrize(("want", "image", "runs"), [
    ("linux/amd64", "linux/amd64", True),
    ("linux/amd64", "linux/arm64", False),
    ("linux/amd64", "windows/amd64", False),
    ("linux/arm64", "linux/arm64/v8", True),
    ("linux/arm64/v8", "linux/arm64", True),
    ("linux/arm64", "linux/arm64/v9", False),  # a newer variant does not run on an older
    # containerd's Only(): arm/v8 runs v7, v6, v5; v7 runs v6, v5; v6 runs v5
    ("linux/arm/v8", "linux/arm/v7", True),
    ("linux/arm/v8", "linux/arm/v5", True),
    ("linux/arm/v7", "linux/arm/v6", True),
    ("linux/arm/v7", "linux/arm/v5", True),
    ("linux/arm/v7", "linux/arm/v8", False),
    ("linux/arm/v6", "linux/arm/v5", True),
    ("linux/arm/v6", "linux/arm/v7", False),
    ("linux/arm/v5", "linux/arm/v6", False),
    ("linux/arm", "linux/arm/v7", True),
    ("linux/armel", "linux/arm/v7", False),
    ("linux/amd64", "unknown/unknown", False),
])
def test_matches(want: str, image: str, runs: bool) -> None:
    image_platform = Platform.from_descriptor(dict(zip(
        ("os", "architecture", "variant"), image.split("/"), strict=False)))
    assert Platform.parse(want).matches(image_platform) is runs


def _entry(n: int, platform: str, **annotations: str) -> Descriptor:
    os_, arch, *variant = platform.split("/")
    fields = {"os": os_, "architecture": arch}
    if variant:
        fields["variant"] = variant[0]
    return Descriptor(OCI_MANIFEST, Digest.of(str(n).encode()), 100 + n,
                      annotations or None, fields)


ATTESTATION = {"vnd.docker.reference.type": "attestation-manifest"}
INDEX = [
    _entry(0, "linux/amd64"),
    _entry(1, "linux/arm/v5"),
    _entry(2, "linux/arm/v6"),
    _entry(3, "linux/arm64/v8"),
    _entry(4, "linux/s390x"),
    _entry(5, "unknown/unknown", **ATTESTATION),
    _entry(6, "unknown/unknown", **ATTESTATION),
    _entry(7, "linux/ppc64le"),
]


@pytest.mark.parametrize(("want", "chosen"), [
    ("linux/amd64", 0),
    ("linux/arm64", 3),
    ("linux/aarch64", 3),
    ("linux/arm/v8", 2),   # no v8 or v7 here: the newest that runs
    ("linux/arm/v7", 2),
    ("linux/arm/v6", 2),
    ("linux/arm/v5", 1),
    ("linux/s390x", 4),
    ("linux/ppc64le", 7),
])
def test_choose(want: str, chosen: int) -> None:
    got = choose(INDEX, Platform.parse(want))
    assert got is INDEX[chosen]


def test_choose_prefers_the_exact_variant() -> None:
    index = [_entry(1, "linux/arm/v5"), _entry(2, "linux/arm/v7"), _entry(3, "linux/arm/v6")]
    assert choose(index, Platform.parse("linux/arm/v7")) is index[1]
    assert choose(index, Platform.parse("linux/arm/v6")) is index[2]
    assert choose(index, Platform.parse("linux/arm/v8")) is index[1]


def test_choose_first_of_equals() -> None:
    index = [_entry(1, "linux/arm64"), _entry(2, "linux/arm64/v8")]
    assert choose(index, Platform.parse("linux/arm64")) is index[0]


def test_no_match() -> None:
    assert choose(INDEX, Platform.parse("linux/riscv64")) is None
    assert choose(INDEX, Platform.parse("windows/amd64")) is None
    assert choose([_entry(1, "linux/arm/v7")], Platform.parse("linux/arm/v6")) is None


def test_attestations_and_entries_without_platform_are_never_chosen() -> None:
    bare = Descriptor(OCI_MANIFEST, Digest.of(b"x"), 1)
    index = [_entry(5, "unknown/unknown", **ATTESTATION), bare, _entry(0, "linux/amd64")]
    for want in ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/386"):
        got = choose(index, Platform.parse(want))
        assert got is None or got is index[2]
    assert choose(index, Platform.parse("linux/amd64")) is index[2]


def test_listed_leaves_attestations_out() -> None:
    assert listed(INDEX) == ["linux/amd64", "linux/arm/v5", "linux/arm/v6", "linux/arm64",
                             "linux/ppc64le", "linux/s390x"]
