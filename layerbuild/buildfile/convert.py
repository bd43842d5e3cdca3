"""Parser nodes to typed instructions: argument shapes, flags and Docker's checks per
instruction (missing arguments, unknown or bad flags, ONBUILD triggers)."""

from __future__ import annotations

import re
from collections.abc import Callable

from layerbuild.buildfile.flags import FlagError, FlagKind, Flags, parse_flags
from layerbuild.buildfile.healthcheck import HEALTHCHECK_FLAGS, healthcheck_fields
from layerbuild.buildfile.instructions import (
    Add,
    Arg,
    ArgDecl,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from layerbuild.buildfile.mounts import parse_mount
from layerbuild.buildfile.parser import Heredoc, Node
from layerbuild.buildfile.words import (
    heredoc_sources,
    name_value_pairs,
    parse_words,
    whitespace_split,
)
from layerbuild.errors import BuildfileError

__all__ = ["build_instruction"]

_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
_NETWORKS = ("default", "none", "host")


def build_instruction(node: Node, path: str = "Buildfile", escape: str = "\\") -> Instruction:
    """The typed instruction for one parser node.

    Raises BuildfileError (file, line, instruction) for an unknown instruction, a flag the
    instruction does not take, a bad flag value or missing arguments.
    """
    builder = _BUILDERS.get(node.instruction)
    if builder is None:
        raise BuildfileError(f"unknown instruction: {node.instruction}", path, node.start_line,
                             node.instruction)
    try:
        return builder(_Request(node, escape))
    except (FlagError, ValueError) as err:
        raise BuildfileError(str(err), path, node.start_line, node.instruction) from None
    except BuildfileError as err:
        raise BuildfileError(err.reason, path, node.start_line, node.instruction) from None


class _Request:
    """What a builder needs: the node, its location and its checked flags."""

    def __init__(self, node: Node, escape: str) -> None:
        self.node = node
        self.escape = escape
        self.where = {"line": node.start_line, "end_line": node.end_line}

    def flags(self, accepted: dict[str, FlagKind] | None = None) -> Flags:
        return parse_flags(self.node.flags, accepted or {})

    def args(self) -> list[str]:
        """Exec-form items, or the whitespace-separated words of the shell form."""
        if self.node.json_args is not None:
            return list(self.node.json_args)
        return whitespace_split(self.node.rest)

    def command(self, allow_empty_json: bool) -> str | tuple[str, ...]:
        node = self.node
        if node.json_args is not None and (node.json_args or allow_empty_json):
            return node.json_args
        if node.json_args is None and node.rest:
            return node.rest
        raise ValueError(f"{node.instruction} requires at least one argument")

    def one(self) -> str:
        self.flags()
        if not self.node.rest:
            raise ValueError(f"{self.node.instruction} requires exactly one argument")
        return self.node.rest


def _from(req: _Request) -> From:
    flags = req.flags({"platform": "string"})
    args = whitespace_split(req.node.rest)
    name = None
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise ValueError(f"invalid name for build stage: {args[2]!r}, name can't start "
                             "with a number or contain symbols")
    elif len(args) != 1:
        raise ValueError("FROM requires either one argument, or three: FROM image AS name")
    return From(image=args[0], name=name, platform=flags.string("platform"), **req.where)


def _run(req: _Request) -> Run:
    flags = req.flags({"mount": "strings", "network": "string"})
    network = flags.string("network")
    if network is not None and network not in _NETWORKS:
        raise ValueError(f"unsupported network mode {network!r} (use default, none or host)")
    mounts = tuple(parse_mount(value) for value in flags.strings("mount"))
    return Run(command=req.command(allow_empty_json=False), heredocs=req.node.heredocs,
               network=network, mounts=mounts, **req.where)


_COPY_FLAGS: dict[str, FlagKind] = {
    "chown": "string", "chmod": "string", "link": "bool", "exclude": "strings",
}


def _sources_and_dest(req: _Request) -> tuple[tuple[str, ...], str, tuple[Heredoc, ...]]:
    args = req.args()
    if len(args) < 2:
        raise ValueError(f"{req.node.instruction} requires at least two arguments: "
                         "source(s) and a destination")
    sources, heredocs = heredoc_sources(args[:-1], req.node.heredocs)
    return tuple(sources), args[-1], tuple(heredocs)


def _copy(req: _Request) -> Copy:
    flags = req.flags({**_COPY_FLAGS, "from": "string", "parents": "bool"})
    sources, dest, heredocs = _sources_and_dest(req)
    return Copy(sources=sources, dest=dest, heredocs=heredocs, from_=flags.string("from"),
                chown=flags.string("chown"), chmod=flags.string("chmod"),
                link=flags.boolean("link"), exclude=flags.strings("exclude"),
                parents=flags.boolean("parents"), **req.where)


def _add(req: _Request) -> Add:
    flags = req.flags({**_COPY_FLAGS, "checksum": "string", "keep-git-dir": "bool",
                       "unpack": "bool"})
    sources, dest, heredocs = _sources_and_dest(req)
    return Add(sources=sources, dest=dest, heredocs=heredocs, chown=flags.string("chown"),
               chmod=flags.string("chmod"), link=flags.boolean("link"),
               exclude=flags.strings("exclude"), checksum=flags.string("checksum"),
               keep_git_dir=flags.boolean("keep-git-dir"), unpack=flags.tristate("unpack"),
               **req.where)


def _env(req: _Request) -> Env:
    req.flags()
    return Env(pairs=name_value_pairs(req.node.rest, "ENV", req.escape), **req.where)


def _label(req: _Request) -> Label:
    req.flags()
    return Label(pairs=name_value_pairs(req.node.rest, "LABEL", req.escape), **req.where)


def _arg(req: _Request) -> Arg:
    req.flags()
    words = parse_words(req.node.rest, req.escape)
    if not words:
        raise ValueError("ARG requires at least one argument")
    decls = []
    for word in words:
        name, has_default, default = word.partition("=")
        if not name:
            raise ValueError("ARG names can not be blank")
        decls.append(ArgDecl(name, default if has_default else None))
    return Arg(args=tuple(decls), **req.where)


def _expose(req: _Request) -> Expose:
    req.flags()
    ports = whitespace_split(req.node.rest)
    if not ports:
        raise ValueError("EXPOSE requires at least one argument")
    return Expose(ports=tuple(ports), **req.where)


def _volume(req: _Request) -> Volume:
    req.flags()
    paths = [path.strip() for path in req.args()]
    if not paths:
        raise ValueError("VOLUME requires at least one argument")
    if not all(paths):
        raise ValueError("VOLUME specified can not be an empty string")
    return Volume(paths=tuple(paths), **req.where)


def _shell(req: _Request) -> Shell:
    req.flags()
    if req.node.json_args is None:
        if not req.node.rest:
            raise ValueError("SHELL requires at least one argument")
        raise ValueError('SHELL requires the arguments to be in JSON form, e.g. '
                         'SHELL ["/bin/sh", "-c"]')
    if not req.node.json_args:
        raise ValueError("SHELL requires at least one argument")
    return Shell(shell=req.node.json_args, **req.where)


def _healthcheck(req: _Request) -> Healthcheck:
    flags = req.flags(HEALTHCHECK_FLAGS)
    settings = healthcheck_fields(req.node.rest, flags)
    return Healthcheck(test=settings.test, interval=settings.interval, timeout=settings.timeout,
                       start_period=settings.start_period,
                       start_interval=settings.start_interval, retries=settings.retries,
                       line=req.node.start_line, end_line=req.node.end_line)


def _onbuild(req: _Request) -> Onbuild:
    req.flags()
    inner = req.node.inner
    if inner is None:
        raise ValueError("ONBUILD requires at least one argument")
    if inner.instruction == "ONBUILD":
        raise ValueError("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if inner.instruction in ("FROM", "MAINTAINER"):
        raise ValueError(f"{inner.instruction} isn't allowed as an ONBUILD trigger")
    builder = _BUILDERS.get(inner.instruction)
    if builder is None:
        raise ValueError(f"unknown instruction in ONBUILD: {inner.instruction}")
    return Onbuild(trigger=builder(_Request(inner, req.escape)), expression=req.node.rest,
                   **req.where)


_BUILDERS: dict[str, Callable[[_Request], Instruction]] = {
    "FROM": _from,
    "RUN": _run,
    "COPY": _copy,
    "ADD": _add,
    "ENV": _env,
    "ARG": _arg,
    "WORKDIR": lambda req: Workdir(path=req.one(), **req.where),
    "USER": lambda req: User(user=req.one(), **req.where),
    "EXPOSE": _expose,
    "VOLUME": _volume,
    "LABEL": _label,
    "ENTRYPOINT": lambda req: Entrypoint(command=_no_flags(req).command(True), **req.where),
    "CMD": lambda req: Cmd(command=_no_flags(req).command(True), **req.where),
    "SHELL": _shell,
    "STOPSIGNAL": lambda req: StopSignal(signal=req.one(), **req.where),
    "HEALTHCHECK": _healthcheck,
    "MAINTAINER": lambda req: Maintainer(name=req.one(), **req.where),
    "ONBUILD": _onbuild,
}


def _no_flags(req: _Request) -> _Request:
    req.flags()
    return req
