"""Image references: `name[:tag]`, normalised the way Docker shows them.

>>> Reference.parse("busybox").familiar
'busybox:latest'
>>> Reference.parse("docker.io/library/alpine:3").familiar
'alpine:3'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerbuild.errors import LayerbuildError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?"
           r"|\[[0-9a-fA-F:]+\](?::[0-9]+)?)")
_NAME = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


class InvalidReference(LayerbuildError):
    """A string that is not a valid image name or tag."""


@dataclass(frozen=True)
class Reference:
    """A repository name and tag, in Docker's familiar form (no `docker.io/library/`)."""

    name: str
    tag: str = "latest"

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse `name[:tag]`; a missing tag means `latest`."""
        if "@" in text:
            raise InvalidReference(f"invalid reference {text!r}: digests are not supported here")
        name, tag = text, "latest"
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            name, tag = text[:colon], text[colon + 1:]
        for prefix in ("docker.io/library/", "index.docker.io/library/"):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name.startswith(("docker.io/", "index.docker.io/")):
            name = name.split("/", 1)[1]
        first = name.split("/", 1)[0]
        if first and first.lower() != first and not ("." in first or ":" in first):
            raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
        if not _NAME.match(name) or len(name) > 255:
            raise InvalidReference(f"invalid reference format: {text!r}")
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid tag {tag!r} in {text!r}")
        return cls(name, tag)

    @property
    def familiar(self) -> str:
        """`name:tag` as Docker prints it."""
        return f"{self.name}:{self.tag}"

    @property
    def full_name(self) -> str:
        """The fully qualified name (`docker.io/library/busybox:latest`)."""
        first = self.name.split("/", 1)[0]
        if "/" in self.name and ("." in first or ":" in first or first == "localhost"):
            return self.familiar
        if "/" not in self.name:
            return f"docker.io/library/{self.familiar}"
        return f"docker.io/{self.familiar}"

    def __str__(self) -> str:
        return self.familiar
