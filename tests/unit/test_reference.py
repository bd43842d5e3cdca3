from __future__ import annotations

import pytest

from layerbuild.reference import InvalidReference, Reference


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


@pytest.mark.parametrize("bad", ["", "UPPER", "a b", "x:", "x:-bad", "a//b", "x@sha256:00",
                                 "-lead", "x:" + "t" * 200])
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidReference):
        Reference.parse(bad)
