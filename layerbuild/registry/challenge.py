"""`WWW-Authenticate` challenges (RFC 7235) as registries send them, and token scopes.

>>> c = parse('Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"')
>>> (c[0].scheme, c[0].params["realm"], c[0].params["service"])
('bearer', 'https://auth.example/token', 'reg')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(,|$)')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$|(?=,))")  # `Negotiate, Bearer …`


@dataclass(frozen=True)
class Challenge:
    """One challenge: its scheme (lower case) and parameters (keys lower case)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse(header: str) -> list[Challenge]:
    """Every challenge in a `WWW-Authenticate` header; what cannot be read is skipped."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        while pos < len(header) and header[pos] in ", \t":
            pos += 1
        scheme = _SCHEME.match(header, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while pos < len(header):
            param = _PARAM.match(header, pos)
            if param is None:
                break
            value = param.group(2)
            value = re.sub(r"\\(.)", r"\1", value) if value is not None else param.group(3)
            params[param.group(1).lower()] = value
            pos = param.end()
        out.append(Challenge(scheme.group(1).lower(), params))
    return out


@dataclass(frozen=True, order=True)
class Scope:
    """What a token is asked for: `repository:NAME:pull,push` (RFC-less, the registry's)."""

    repository: str
    actions: tuple[str, ...] = ("pull",)

    def __str__(self) -> str:
        return f"repository:{self.repository}:{','.join(self.actions)}"


def pull(repository: str) -> Scope:
    """The scope that reads a repository."""
    return Scope(repository, ("pull",))


def push(repository: str) -> Scope:
    """The scope that reads and writes a repository."""
    return Scope(repository, ("pull", "push"))
