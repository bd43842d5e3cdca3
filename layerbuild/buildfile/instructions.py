"""Typed instructions: one frozen dataclass per Buildfile instruction.

Arguments that Docker expands (see :mod:`layerbuild.buildfile.expand`) are kept exactly as
written, quotes included, so the build can expand them with the ARG and ENV values in force
at that step. Every instruction carries its ``line`` and ``end_line`` in the Buildfile.
:mod:`layerbuild.buildfile.convert` builds them from parser nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerbuild.buildfile.mounts import Mount
from layerbuild.buildfile.parser import Heredoc

__all__ = [
    "Add", "Arg", "ArgDecl", "Cmd", "Copy", "Entrypoint", "Env", "Expose", "From", "Healthcheck",
    "Instruction", "Label", "Maintainer", "Onbuild", "Run", "Shell", "StopSignal", "User",
    "Volume", "Workdir",
]


@dataclass(frozen=True, kw_only=True)
class _Located:
    """Where an instruction is in the Buildfile (1-based, inclusive)."""

    line: int
    end_line: int


@dataclass(frozen=True, kw_only=True)
class From(_Located):
    """``FROM [--platform=P] image [AS name]``; ``name`` is lower-cased as Docker does."""

    instruction: ClassVar[str] = "FROM"
    image: str
    name: str | None = None
    platform: str | None = None


@dataclass(frozen=True, kw_only=True)
class Run(_Located):
    """``RUN``: a shell command (str) or an exec form (tuple), with mounts and network mode."""

    instruction: ClassVar[str] = "RUN"
    command: str | tuple[str, ...]
    heredocs: tuple[Heredoc, ...] = ()
    network: str | None = None
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Copy(_Located):
    """``COPY``: source paths (heredoc markers moved to ``heredocs``), destination, options."""

    instruction: ClassVar[str] = "COPY"
    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: tuple[str, ...] = ()
    parents: bool = False


@dataclass(frozen=True, kw_only=True)
class Add(_Located):
    """``ADD``: like COPY without ``--from``/``--parents``, plus URL checksum and git options.

    ``unpack`` is ``--unpack``: None (not given) extracts local archives only, True remote
    ones too, False none.
    """

    instruction: ClassVar[str] = "ADD"
    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: tuple[str, ...] = ()
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Env(_Located):
    """``ENV``: name/value pairs in order (values unexpanded, quotes kept)."""

    instruction: ClassVar[str] = "ENV"
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ArgDecl:
    """One declared build argument, with its default when written ``NAME=default``."""

    name: str
    default: str | None = None


@dataclass(frozen=True, kw_only=True)
class Arg(_Located):
    """``ARG name[=default] ...``."""

    instruction: ClassVar[str] = "ARG"
    args: tuple[ArgDecl, ...]


@dataclass(frozen=True, kw_only=True)
class Workdir(_Located):
    """``WORKDIR path``."""

    instruction: ClassVar[str] = "WORKDIR"
    path: str


@dataclass(frozen=True, kw_only=True)
class User(_Located):
    """``USER user[:group]``."""

    instruction: ClassVar[str] = "USER"
    user: str


@dataclass(frozen=True, kw_only=True)
class Expose(_Located):
    """``EXPOSE port[/proto] ...``."""

    instruction: ClassVar[str] = "EXPOSE"
    ports: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Volume(_Located):
    """``VOLUME`` paths, from a JSON array or whitespace-separated words."""

    instruction: ClassVar[str] = "VOLUME"
    paths: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Label(_Located):
    """``LABEL``: key/value pairs in order (unexpanded, quotes kept)."""

    instruction: ClassVar[str] = "LABEL"
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Entrypoint(_Located):
    """``ENTRYPOINT``: shell form (str) or exec form (tuple)."""

    instruction: ClassVar[str] = "ENTRYPOINT"
    command: str | tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Cmd(_Located):
    """``CMD``: shell form (str) or exec form (tuple)."""

    instruction: ClassVar[str] = "CMD"
    command: str | tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Shell(_Located):
    """``SHELL ["executable", "parameters"]`` (JSON form only)."""

    instruction: ClassVar[str] = "SHELL"
    shell: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StopSignal(_Located):
    """``STOPSIGNAL signal``."""

    instruction: ClassVar[str] = "STOPSIGNAL"
    signal: str


@dataclass(frozen=True, kw_only=True)
class Healthcheck(_Located):
    """``HEALTHCHECK``, stored as Docker stores it: ``test`` is ``("NONE",)``,
    ``("CMD-SHELL", command)`` or ``("CMD", arg, ...)``; durations in nanoseconds, 0 = unset.
    """

    instruction: ClassVar[str] = "HEALTHCHECK"
    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True, kw_only=True)
class Maintainer(_Located):
    """``MAINTAINER name`` (deprecated by Docker in favour of a label, still accepted)."""

    instruction: ClassVar[str] = "MAINTAINER"
    name: str


@dataclass(frozen=True, kw_only=True)
class Onbuild(_Located):
    """``ONBUILD``: a trigger instruction for images built FROM this one, and its text."""

    instruction: ClassVar[str] = "ONBUILD"
    trigger: Instruction
    expression: str


Instruction = (From | Run | Copy | Add | Env | Arg | Workdir | User | Expose | Volume | Label
               | Entrypoint | Cmd | Shell | StopSignal | Healthcheck | Maintainer | Onbuild)
