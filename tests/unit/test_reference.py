"""References parsed as Docker parses them (distribution's `reference` package:
ParseNormalizedNamed, splitDockerDomain, familiarizeName); the cases follow its tests."""

from __future__ import annotations

import pytest

from layerbuild.digest import Digest
from layerbuild.reference import InvalidReference, Reference

D = "sha256:" + "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"


@pytest.mark.parametrize(("text", "familiar", "full"), [
    ("busybox", "busybox:latest", "docker.io/library/busybox:latest"),
    ("busybox:1.35", "busybox:1.35", "docker.io/library/busybox:1.35"),
    ("docker.io/library/alpine:3", "alpine:3", "docker.io/library/alpine:3"),
    ("me/app", "me/app:latest", "docker.io/me/app:latest"),
    ("localhost:5000/a/b:c", "localhost:5000/a/b:c", "localhost:5000/a/b:c"),
    ("registry.example.org/x:1.0-rc", "registry.example.org/x:1.0-rc",
     "registry.example.org/x:1.0-rc"),
])
def test_normalisation(text: str, familiar: str, full: str) -> None:
    ref = Reference.parse(text)
    assert ref.familiar == familiar
    assert ref.full_name == full


# (input, domain, path, familiar name without tag): distribution's TestParseRepositoryInfo
# and TestNormalizedSplitHostname.
@pytest.mark.parametrize(("text", "domain", "path", "name"), [
    ("busybox", "docker.io", "library/busybox", "busybox"),
    ("docker.io/busybox", "docker.io", "library/busybox", "busybox"),
    ("docker.io/library/busybox", "docker.io", "library/busybox", "busybox"),
    ("index.docker.io/library/debian", "docker.io", "library/debian", "debian"),
    ("index.docker.io/debian", "docker.io", "library/debian", "debian"),
    ("index.docker.io/fooo/bar", "docker.io", "fooo/bar", "fooo/bar"),
    ("library/ubuntu", "docker.io", "library/ubuntu", "ubuntu"),
    ("library/ubuntu-12.04-base", "docker.io", "library/ubuntu-12.04-base",
     "ubuntu-12.04-base"),
    ("docker.io/library/foo/bar", "docker.io", "library/foo/bar", "library/foo/bar"),
    ("store/foo/bar", "docker.io", "store/foo/bar", "store/foo/bar"),
    ("other/library", "docker.io", "other/library", "other/library"),
    ("test_com/foo", "docker.io", "test_com/foo", "test_com/foo"),
    ("docker.io/" + HEX64, "docker.io", "library/" + HEX64, HEX64),
    # registry-1.docker.io is Docker Hub's endpoint, but not an alias of docker.io in names
    ("registry-1.docker.io/library/busybox", "registry-1.docker.io", "library/busybox",
     "registry-1.docker.io/library/busybox"),
    ("localhost/x", "localhost", "x", "localhost/x"),
    ("localhost:5000/x", "localhost:5000", "x", "localhost:5000/x"),
    ("localhost/library/x", "localhost", "library/x", "localhost/library/x"),
    ("127.0.0.1:8000/privatebase", "127.0.0.1:8000", "privatebase",
     "127.0.0.1:8000/privatebase"),
    ("192.168.0.1:8/debian", "192.168.0.1:8", "debian", "192.168.0.1:8/debian"),
    ("example.com/private/moonbase", "example.com", "private/moonbase",
     "example.com/private/moonbase"),
    ("test-com:8080/foo", "test-com:8080", "foo", "test-com:8080/foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo", "xn--n3h.com:18080/foo"),
    ("[::1]:5000/x", "[::1]:5000", "x", "[::1]:5000/x"),
    ("[::1]/x", "[::1]", "x", "[::1]/x"),
    ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000",
     "library/debian", "[fc00:1:2:3:4:5:6:7]:5000/library/debian"),
    # an upper-case first component is a domain (lower-case namespaces only)
    ("Foo/bar", "Foo", "bar", "Foo/bar"),
    ("DOCKER/docker", "DOCKER", "docker", "DOCKER/docker"),
    # a single component is never a domain, even `localhost` or one with a dot
    ("localhost", "docker.io", "library/localhost", "localhost"),
    ("192.168.0.1", "docker.io", "library/192.168.0.1", "192.168.0.1"),
])
def test_domain_and_path(text: str, domain: str, path: str, name: str) -> None:
    ref = Reference.parse(text)
    assert (ref.domain, ref.path, ref.name) == (domain, path, name)
    assert ref.repository == f"{domain}/{path}"
    assert ref.tag == "latest"
    assert ref.full_name == f"{domain}/{path}:latest"
    assert Reference.parse(ref.full_name) == ref  # the full form parses back to the same
    assert Reference.parse(ref.familiar) == ref


def test_port_alone_is_a_tag() -> None:
    ref = Reference.parse("localhost:5000")
    assert (ref.domain, ref.path, ref.tag) == ("docker.io", "library/localhost", "5000")
    assert Reference.parse("192.168.0.1:80").tag == "80"


def test_digest_alone_has_no_tag() -> None:
    ref = Reference.parse(f"busybox@{D}", digests=True)
    assert ref.tag is None
    assert ref.digest == Digest.parse(D)
    assert ref.familiar == f"busybox@{D}"
    assert ref.full_name == f"docker.io/library/busybox@{D}"
    ref = Reference.parse(f"localhost:5000/x@{D}", digests=True)
    assert (ref.domain, ref.path, ref.tag) == ("localhost:5000", "x", None)


def test_tag_and_digest() -> None:
    # distribution's TestParseReferenceWithTagAndDigest
    ref = Reference.parse(f"busybox:latest@{D}", digests=True)
    assert (ref.tag, str(ref.digest)) == ("latest", D)
    assert ref.full_name == f"docker.io/library/busybox:latest@{D}"
    assert ref.familiar == f"busybox:latest@{D}"
    ref = Reference.parse(f"[::1]:5000/team/app:1@{D}", digests=True)
    assert (ref.domain, ref.path, ref.tag) == ("[::1]:5000", "team/app", "1")


def test_digest_refused_where_a_tag_is_wanted() -> None:
    with pytest.raises(InvalidReference, match="digest"):
        Reference.parse(f"busybox@{D}")
    with pytest.raises(InvalidReference, match="digest"):
        Reference.parse(f"busybox:1@{D}", digests=False)


@pytest.mark.parametrize("bad", [
    "", "UPPER", "a b", "x:", "x:-bad", "a//b", "x@sha256:00", "-lead", "x:" + "t" * 200,
    # distribution's invalid names
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker",
    "-docker.io/docker/docker", "docker///docker", "docker.io/docker/Docker",
    "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000", "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian", HEX64,
    "docker-/docker", "-docker-/docker", "____/____", "_docker/_docker", "dock..er/docker",
    "dock_.er/docker", "dock-.er/docker", "docker/", "/busybox", "busybox/",
    # Go's \w is ASCII; no line ends hide behind `$`
    "busybox:täg", "busybox\n", "busybox:latest\n", "busybox:1\nx", "bü/x",
    # each label of a domain starts and ends with a letter or digit
    "example.-com/x", "example.com-/x", "a..b/x",
])
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidReference):
        Reference.parse(bad)


@pytest.mark.parametrize("bad", [
    "x@sha256:" + "A" * 64,  # go-digest wants lower-case hex
    "x@sha256:" + "a" * 63, "x@sha256:" + "a" * 65, "x@md5:" + "a" * 32, "x@" + "a" * 64,
    "x@", f"x@{D}@{D}", "@" + D,
])
def test_invalid_digests(bad: str) -> None:
    with pytest.raises(InvalidReference):
        Reference.parse(bad, digests=True)


def test_uppercase_says_lowercase() -> None:
    with pytest.raises(InvalidReference, match="lowercase"):
        Reference.parse("docker/Docker")
    with pytest.raises(InvalidReference, match="lowercase"):
        Reference.parse("example.com/Team/app")


def test_length_limit_is_on_the_path() -> None:
    # RepositoryNameTotalLengthMax (255) counts the path, without the domain
    long_path = "/".join(["a" * 50] * 5)  # 254 characters
    assert len(Reference.parse(f"registry.example.org:5000/{long_path}").path) == 254
    assert len(Reference.parse(f"me/{'a' * 252}").path) == 255
    with pytest.raises(InvalidReference):
        Reference.parse(f"me/{'a' * 253}")
    with pytest.raises(InvalidReference):  # library/ counts: 8 + 248 > 255
        Reference.parse("a" * 248)
    assert Reference.parse("a" * 247).path == "library/" + "a" * 247
    assert Reference.parse("x:" + "t" * 128).tag == "t" * 128


def test_64_hex_needs_a_domain() -> None:
    assert Reference.parse("docker.io/" + HEX64).name == HEX64
    assert Reference.parse(HEX64[:63]).path == "library/" + HEX64[:63]
    assert Reference.parse(HEX64 + ":1").tag == "1"  # only the bare identifier is refused


def test_with_tag_and_with_digest() -> None:
    ref = Reference.parse(f"localhost:5000/team/app:1@{D}", digests=True)
    tagged = ref.with_tag("2")
    assert (tagged.name, tagged.tag, tagged.digest) == ("localhost:5000/team/app", "2", None)
    assert tagged.familiar == "localhost:5000/team/app:2"
    pinned = Reference.parse("busybox:1").with_digest(Digest.parse(D))
    assert (pinned.tag, str(pinned.digest)) == (None, D)
    assert pinned.familiar == f"busybox@{D}"
    assert pinned.full_name == f"docker.io/library/busybox@{D}"
    assert str(pinned) == pinned.familiar
    assert Reference.parse(pinned.familiar, digests=True) == pinned
