"""What a build is asked to do (no build code loaded): the words the API, the CLI, the build
records and the engine share."""

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
    seccomp: bool = True  # False: RUN steps without the seccomp filter (explicitly asked)
