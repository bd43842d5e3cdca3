"""Image references as Docker parses them: `[domain/]path[:tag][@sha256:…]`.

The familiar form drops `docker.io/` and `docker.io/library/`, as Docker prints names; the
registry's view (`domain`, `path`) puts them back.

>>> Reference.parse("busybox").familiar
'busybox:latest'
>>> Reference.parse("docker.io/library/alpine:3").familiar
'alpine:3'
>>> r = Reference.parse("localhost:5000/team/app:1", digests=True)
>>> (r.domain, r.path, r.tag)
('localhost:5000', 'team/app', '1')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerbuild.digest import Digest
from layerbuild.errors import FormatError, LayerbuildError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)"
_NAME = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
DOCKER_HUB = "docker.io"
_HUB_ALIASES = ("docker.io", "index.docker.io")


class InvalidReference(LayerbuildError):
    """A string that is not a valid image name or tag."""


@dataclass(frozen=True)
class Reference:
    """A repository name in Docker's familiar form, a tag and, for a pin, a digest.

    `tag` is None only for a reference by digest alone (`name@sha256:…`).
    """

    name: str
    tag: str | None = "latest"
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, digests: bool = False) -> Reference:
        """Parse `name[:tag]` (and with `digests`, `name[:tag]@sha256:…`); a reference with
        neither tag nor digest means `latest`."""
        if _IDENTIFIER.fullmatch(text):
            raise InvalidReference(f"invalid reference {text!r}: an image ID is not a name")
        body, at, pin = text.partition("@")
        digest = None
        if at:
            if not digests:
                raise InvalidReference(
                    f"invalid reference {text!r}: a digest cannot name a tag here")
            try:
                digest = Digest.parse(pin)
            except FormatError:
                raise InvalidReference(f"invalid digest in {text!r}") from None
        name, tag = body, None
        slash = body.rfind("/")
        colon = body.rfind(":")
        if colon > slash:
            name, tag = body[:colon], body[colon + 1:]
        if tag is None and digest is None:
            tag = "latest"
        name = _familiar_name(name, text)
        if not _NAME.fullmatch(name) or len(cls(name).path) > 255:
            raise InvalidReference(f"invalid reference format: {text!r}")
        if tag is not None and not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid tag {tag!r} in {text!r}")
        return cls(name, tag, digest)

    @property
    def familiar(self) -> str:
        """`name:tag`, `name@sha256:…` or `name:tag@sha256:…`, as Docker prints it."""
        out = self.name if self.tag is None else f"{self.name}:{self.tag}"
        return out if self.digest is None else f"{out}@{self.digest}"

    @property
    def domain(self) -> str:
        """The registry's name: `docker.io`, `localhost:5000`, `ghcr.io`."""
        first, _, rest = self.name.partition("/")
        return first if rest and _is_domain(first) else DOCKER_HUB

    @property
    def path(self) -> str:
        """The repository's path within its registry (`library/busybox`)."""
        first, _, rest = self.name.partition("/")
        if rest and _is_domain(first):
            return rest
        return self.name if rest else f"library/{self.name}"

    @property
    def repository(self) -> str:
        """The fully qualified repository, without tag (`docker.io/library/busybox`)."""
        return f"{self.domain}/{self.path}"

    @property
    def full_name(self) -> str:
        """The fully qualified reference (`docker.io/library/busybox:latest`)."""
        out = self.repository if self.tag is None else f"{self.repository}:{self.tag}"
        return out if self.digest is None else f"{out}@{self.digest}"

    def with_tag(self, tag: str | None) -> Reference:
        """The same repository with another tag and no digest."""
        return Reference(self.name, tag, None)

    def with_digest(self, digest: Digest) -> Reference:
        """The same repository pinned to `digest`, without tag (a RepoDigest)."""
        return Reference(self.name, None, digest)

    def __str__(self) -> str:
        return self.familiar


def _is_domain(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost" or first.lower() != first


def _familiar_name(name: str, text: str) -> str:
    """Drop `docker.io/` (and `library/` before a one-part name), as Docker's familiar form."""
    first, _, rest = name.partition("/")
    if rest and first in _HUB_ALIASES:
        name = rest
    if name.startswith("library/") and "/" not in name[len("library/"):]:
        name = name[len("library/"):]
    first, _, rest = name.partition("/")
    remote = rest if rest and _is_domain(first) else name
    if remote.lower() != remote:
        raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
    return name
