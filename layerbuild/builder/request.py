"""What a build is asked to do, and what it reports while it runs (no build code loaded)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.reference import Reference


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
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    dry_run: bool = False
    secrets: Mapping[str, Path] = field(default_factory=dict)


class Events:
    """What a build reports while it runs; the CLI draws it, tests may record it."""

    def step(self, number: int, total: int, text: str) -> None:
        """A step starts."""

    def done(self, seconds: float, cached: bool = False) -> None:
        """The current step ended."""

    def output(self, data: bytes) -> None:
        """A RUN step printed something."""

    def note(self, text: str) -> None:
        """A remark about the build (a warning, say)."""
