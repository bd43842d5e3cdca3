"""Build arguments and their scopes, following Docker's rules.

- ARGs before the first FROM are *global*: usable in FROM lines. Inside a stage a global is
  visible only after ``ARG NAME`` (no value) re-declares it there.
- A stage-local ``ARG NAME=default`` uses the default unless ``--build-arg NAME=...`` is given;
  then the default is not evaluated at all (``ARG A=${A:?required}`` builds when A is given).
  Each default sees the ARGs declared before it, in the same instruction too (``ARG A=1 B=$A``).
- The proxy args (``HTTP_PROXY`` and friends, either case) may be given without any ARG. As in
  BuildKit they only reach RUN, under both spellings (:func:`proxy_environment`), and stay out
  of expansion, history and cache keys unless an ARG declares them.
- ``TARGETPLATFORM``, ``TARGETOS``, ``TARGETARCH``, ``TARGETVARIANT`` and the ``BUILD*`` ones
  are automatic globals, computed from platforms the caller passes in (this module is pure);
  so is ``TARGETSTAGE``, the name of the stage being built (``default`` when it has none).
- ENV beats ARG of the same name.

A build walks the file with one immutable :class:`Scope`::

    scope = Scope.initial(build_args, platform_args(host))
    for arg in buildfile.global_args:
        scope = scope.apply(arg, buildfile.escape)
    image = expand(stage.from_instr.image, scope.environment(), buildfile.escape)
    scope = scope.enter_stage(base_image_env)
    for instr in stage.instructions:
        scope = scope.apply(instr, buildfile.escape)   # ARG and ENV change it
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from layerbuild.buildfile.expand import ExpansionError, expand
from layerbuild.buildfile.instructions import Arg, ArgDecl, Env, Instruction
from layerbuild.buildfile.stages import Buildfile, Stage

__all__ = [
    "PLATFORM_ARGS",
    "PROXY_ARGS",
    "TARGET_STAGE_ARG",
    "Platform",
    "Scope",
    "platform_args",
    "proxy_environment",
    "target_stage_args",
    "unused_build_args",
]

_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
PROXY_ARGS = frozenset(name for base in _PROXIES for name in (base, base.lower()))
TARGET_STAGE_ARG = "TARGETSTAGE"
PLATFORM_ARGS = frozenset(
    prefix + part
    for prefix in ("TARGET", "BUILD")
    for part in ("PLATFORM", "OS", "ARCH", "VARIANT")
)

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``os/architecture[/variant]``, e.g. ``linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Read ``os/arch[/variant]``. Raises ValueError for anything else."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(*parts)

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def platform_args(build: Platform, target: Platform | None = None) -> dict[str, str]:
    """The automatic platform args; the target defaults to the build platform."""
    target = target or build
    values: dict[str, str] = {}
    for prefix, platform in (("BUILD", build), ("TARGET", target)):
        values[prefix + "PLATFORM"] = str(platform)
        values[prefix + "OS"] = platform.os
        values[prefix + "ARCH"] = platform.architecture
        values[prefix + "VARIANT"] = platform.variant
    return values


def target_stage_args(target: Stage) -> dict[str, str]:
    """The automatic ``TARGETSTAGE``: the target stage's name, ``default`` for an unnamed one
    (as BuildKit names it)."""
    return {TARGET_STAGE_ARG: target.name or "default"}


def proxy_environment(build_args: Mapping[str, str]) -> dict[str, str]:
    """The proxy settings given as build args, under both spellings, as BuildKit's executor
    sets them for RUN: ``http_proxy`` given sets ``HTTP_PROXY`` too, and the other way round.

    Names match in any case; an empty value sets nothing. Where two spellings are given, the
    upper-case one wins, then the lower-case one.
    """
    out: dict[str, str] = {}
    for base in _PROXIES:
        given = sorted((k for k in build_args if k.upper() == base),
                       key=lambda k: (k != base, k != base.lower(), k))
        value = next((build_args[k] for k in given if build_args[k]), "")
        if value:
            out[base] = out[base.lower()] = value
    return out


@dataclass(frozen=True)
class Scope:
    """The variables visible at one point of a build; every change returns a new Scope.

    ``globals`` holds global ARGs (None when declared without value and not given);
    ``args`` the ARGs declared in the current stage; ``env`` the ENV in force (including the
    base image's). ``in_stage`` is false until :meth:`enter_stage`.
    """

    build_args: Mapping[str, str] = field(default_factory=dict)
    globals: Mapping[str, str | None] = field(default_factory=dict)
    args: Mapping[str, str | None] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    in_stage: bool = False

    @classmethod
    def initial(cls, build_args: Mapping[str, str] = _EMPTY,
                automatic: Mapping[str, str] = _EMPTY) -> Scope:
        """The scope before the first line: automatic args are globals from the start."""
        return cls(build_args=dict(build_args), globals=dict(automatic))

    def enter_stage(self, env: Mapping[str, str] = _EMPTY) -> Scope:
        """A fresh stage scope after FROM: no ARGs yet, ``env`` from the base image."""
        return replace(self, args={}, env=dict(env), in_stage=True)

    def declare_arg(self, name: str, default: str | None = None) -> Scope:
        """Declare ``ARG name[=default]``; ``default`` must already be expanded.

        A given ``--build-arg`` wins; else the default; else the global value (in a stage, a
        re-declared global; at the top, an automatic platform arg).
        """
        if name in self.build_args:
            value: str | None = self.build_args[name]
        elif default is not None:
            value = default
        else:
            value = self.globals.get(name)
        if not self.in_stage:
            return replace(self, globals={**self.globals, name: value})
        return replace(self, args={**self.args, name: value})

    def set_env(self, name: str, value: str) -> Scope:
        """Set ``ENV name=value`` (``value`` already expanded)."""
        return replace(self, env={**self.env, name: value})

    def lookup(self, name: str) -> str | None:
        """A variable's value for expansion, or None when it is not set."""
        return self.environment().get(name)

    def environment(self) -> dict[str, str]:
        """Every variable that expands here, and that a RUN step sees.

        At the global level: global ARGs with a value. In a stage: the stage's ARGs with a
        value, then ENV (which wins over an ARG of the same name). Proxy build args no ARG
        declares are not here: a RUN adds them (:func:`proxy_environment`).
        """
        if not self.in_stage:
            return {k: v for k, v in self.globals.items() if v is not None}
        values = {k: v for k, v in self.args.items() if v is not None}
        values.update(self.env)
        return values

    def apply(self, instr: Instruction, escape: str = "\\") -> Scope:
        """The scope after ``instr``: ARG and ENV expand their values and change it.

        ENV names and values are all expanded with the variables in force before the
        instruction, as in Docker: after ``ENV A=new B=$A``, B holds the old A. An ARG
        declaration sees the ones before it (``ARG A=1 B=$A`` gives B=1), and its default is
        not expanded when a build arg gives the value, as in BuildKit.
        """
        scope = self
        if isinstance(instr, Arg):
            for decl in instr.args:
                scope = scope._declare(decl, escape)
        elif isinstance(instr, Env):
            before = self.environment()
            for name, value in instr.pairs:
                scope = scope.set_env(expand(name, before, escape), expand(value, before, escape))
        return scope

    def _declare(self, decl: ArgDecl, escape: str) -> Scope:
        env = self.environment()
        name = expand(decl.name, env, escape)
        default = decl.default
        if default is not None and name not in self.build_args:
            default = expand(default, env, escape)
        return self.declare_arg(name, default)

    def shown_defaults(self, instr: Arg, escape: str = "\\") -> list[tuple[str, str | None]]:
        """Each name ``instr`` declares with its default as history shows it (None for none).

        The default is expanded as :meth:`apply` expands it, and also where a build arg
        overrides it (Docker 20.10's BuildKit records the default then); one that cannot be
        expanded then, which newer BuildKit never evaluates, shows the value given.
        """
        shown: list[tuple[str, str | None]] = []
        scope = self
        for decl in instr.args:
            env = scope.environment()
            name = expand(decl.name, env, escape)
            text = decl.default
            if text is not None:
                try:
                    text = expand(text, env, escape)
                except ExpansionError:
                    if name not in scope.build_args:
                        raise
                    text = scope.build_args[name]
            shown.append((name, text))
            scope = scope._declare(decl, escape)
        return shown


def unused_build_args(buildfile: Buildfile, build_args: Iterable[str]) -> list[str]:
    """Build args that no ARG of the Buildfile declares (Docker warns about them), sorted.

    Proxy, platform and target-stage args never count as unused.
    """
    declared = {decl.name for arg in buildfile.global_args for decl in arg.args}
    for stage in buildfile.stages:
        for instr in stage.instructions:
            if isinstance(instr, Arg):
                declared.update(decl.name for decl in instr.args)
    known = declared | PROXY_ARGS | PLATFORM_ARGS | {TARGET_STAGE_ARG}
    return sorted(name for name in set(build_args) if name not in known)
