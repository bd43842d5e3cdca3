"""Platforms (`os/arch[/variant]`) and choosing one image of an index, as Docker does.

>>> Platform.parse("linux/arm64/v8")
Platform(os='linux', architecture='arm64', variant=None)
>>> str(Platform.parse("linux/arm/v7"))
'linux/arm/v7'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from layerbuild.errors import LayerbuildError
from layerbuild.image import Descriptor, host_platform

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
                 "armel": "arm", "i386": "386", "i686": "386"}


class InvalidPlatform(LayerbuildError):
    """A `--platform` value that is not `os/arch[/variant]`."""


@dataclass(frozen=True)
class Platform:
    """An OS, an architecture and, where it matters, a variant (normalised)."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse `os/arch[/variant]` (or `arch` alone, meaning linux)."""
        parts = text.strip().lower().split("/")
        if len(parts) == 1 and parts[0]:
            parts = ["linux", *parts]
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidPlatform(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls.of(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def of(cls, os_: str, arch: str, variant: str | None = None) -> Platform:
        """A normalised platform (aliases mapped, default variants filled in)."""
        variant = {"armel": "v6", "armhf": "v7"}.get(arch, variant)  # as containerd's
        arch = _ARCH_ALIASES.get(arch, arch)
        if arch == "arm64" and variant in ("8", "v8"):
            variant = None  # containerd's normal form: arm64 means v8
        if arch == "arm":
            variant = variant or "v7"
            variant = variant if variant.startswith("v") else f"v{variant}"
        return cls(os_, arch, variant or None)

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine."""
        arch, variant = host_platform()
        return cls.of("linux", arch, variant)

    @classmethod
    def from_descriptor(cls, platform: Mapping[str, str]) -> Platform:
        """The platform an index entry states."""
        return cls.of(str(platform.get("os", "")), str(platform.get("architecture", "")),
                      platform.get("variant") or None)

    def matches(self, other: Platform) -> bool:
        """Whether an image for `other` serves this platform (variants compared where the
        architecture has them; an older arm variant serves a newer one)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.architecture == "arm" and self.variant and other.variant:
            return other.variant <= self.variant
        return self.variant == other.variant or other.variant is None

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def choose(manifests: Sequence[Descriptor], want: Platform) -> Descriptor | None:
    """The index entry for `want`: an exact variant first, then the newest that serves it."""
    candidates = []
    for desc in manifests:
        if not desc.platform:
            continue
        got = Platform.from_descriptor(desc.platform)
        if want.matches(got):
            candidates.append((got.variant == want.variant, got.variant or "", desc))
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    return candidates[0][2]


def listed(manifests: Sequence[Descriptor]) -> list[str]:
    """The platforms an index offers, for an error message."""
    return sorted({str(Platform.from_descriptor(d.platform)) for d in manifests
                   if d.platform and d.platform.get("os") != "unknown"})  # not attestations
