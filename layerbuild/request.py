"""What a build is asked to do (no build code loaded): the words the API, the CLI, the build
records and the engine share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild.errors import LayerbuildError
from layerbuild.reference import Reference

if TYPE_CHECKING:  # types only: what the fast path of an unchanged rebuild loads stays small
    from layerbuild.cache.options import CacheSpec

ENTITLEMENTS = ("network.host",)


@dataclass(frozen=True)
class BuildRequest:
    """Everything a build is asked to do."""

    context: Path
    buildfile: Path
    tags: tuple[Reference, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    template: bool | None = None
    template_vars: Mapping[str, str] = field(default_factory=dict)
    source_date_epoch: int | None = None
    network: str = "default"
    allow: tuple[str, ...] = ()
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    dry_run: bool = False
    secrets: Mapping[str, Path] = field(default_factory=dict)
    seccomp: bool = True  # False: RUN steps without the seccomp filter (explicitly asked)
    pull: str = "missing"  # bases: "missing" pulls what the store lacks, "always", "never"
    platform: str | None = None  # the target platform (bases pulled for it); None: the host's
    cache_from: tuple[CacheSpec, ...] = ()
    """Caches to take steps from (other machines' builds), in the order given."""
    cache_to: tuple[CacheSpec, ...] = ()
    """Where to export the build's cache."""
    buildfile_data: bytes | None = None
    """The Buildfile's bytes when it is no regular file (stdin, a pipe), read once up front:
    what the build record hashes is what the engine builds."""

    @property
    def streamed(self) -> bool:
        """Whether the Buildfile came as a stream (its bytes are `buildfile_data`)."""
        return self.buildfile_data is not None

    def check_network(self, network: str, what: str = "--network=host") -> None:
        """Refuse the host's network unless `allow` grants `network.host`, as BuildKit does."""
        if network == "host" and "network.host" not in self.allow:
            raise LayerbuildError(f"{what} needs --allow network.host (the step would share "
                                  "the host's network: its 127.0.0.1 services and interfaces)")


def check_allow(allow: tuple[str, ...]) -> None:
    """Refuse an entitlement we do not know (a typo must not pass unnoticed)."""
    for name in allow:
        if name not in ENTITLEMENTS:
            raise LayerbuildError(f"--allow {name}: unknown entitlement (known: "
                                  f"{', '.join(ENTITLEMENTS)})")


def flag_fields(text: str, flag: str) -> dict[str, str]:
    """`k=v,k2="a,b"` as a dict (CSV, as BuildKit's flags); `flag` names it in errors."""
    import csv

    try:
        parts = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise LayerbuildError(f"{flag} {text}: cannot read the fields") from None
    return dict(part.partition("=")[::2] for part in parts)
