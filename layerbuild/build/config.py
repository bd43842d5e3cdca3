"""What metadata instructions do to an image config, and the history text of every step (pure).

Values arrive as written; the ones Docker expands are expanded here with the variables in
force at that step.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from layerbuild.buildfile import (
    Arg,
    Cmd,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    expand,
)
from layerbuild.errors import BuildfileError
from layerbuild.image import ImageConfig

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
METADATA = (Arg, Cmd, Entrypoint, Env, Expose, Healthcheck, Label, Maintainer, Onbuild, Shell,
            StopSignal, User, Volume, Workdir)


def shell_of(config: ImageConfig) -> tuple[str, ...]:
    """The SHELL in force (Docker's default when the image sets none)."""
    return tuple(config.config.get("Shell") or DEFAULT_SHELL)


def command_argv(command: str | tuple[str, ...], config: ImageConfig) -> list[str]:
    """Exec form as is; shell form wrapped in the SHELL in force."""
    if isinstance(command, tuple):
        return list(command)
    return [*shell_of(config), command]


def env_map(config: ImageConfig) -> dict[str, str]:
    """The config's Env as a dict, in order."""
    out: dict[str, str] = {}
    for item in config.config.get("Env") or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def with_env(config: ImageConfig, values: Mapping[str, str]) -> ImageConfig:
    """The config with Env entries set (existing keys keep their place)."""
    env = env_map(config)
    env.update(values)
    return config.with_config(Env=[f"{k}={v}" for k, v in env.items()])


def _ports(words: list[str]) -> list[str]:
    out = []
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        low, _, high = port.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"invalid port {word!r}")
        for number in range(int(low), int(high or low) + 1):
            out.append(f"{number}/{proto}")
    return out


def _healthcheck(instr: Healthcheck) -> dict[str, Any]:
    check: dict[str, Any] = {"Test": list(instr.test)}
    for key, value in (("Interval", instr.interval), ("Timeout", instr.timeout),
                       ("StartPeriod", instr.start_period),
                       ("StartInterval", instr.start_interval), ("Retries", instr.retries)):
        if value:
            check[key] = value
    return check


def apply_metadata(config: ImageConfig, instr: Instruction, env: Mapping[str, str],
                   escape: str = "\\", cmd_set: bool = True, path: str = "Buildfile",
                   ) -> ImageConfig:
    """The config after one metadata instruction (ARG changes nothing in the config).

    `cmd_set` says whether CMD was set in this stage: ENTRYPOINT resets an inherited CMD.
    """
    def x(word: str) -> str:
        return expand(word, env, escape)

    try:
        return _apply(config, instr, x, cmd_set)
    except ValueError as exc:
        raise BuildfileError(str(exc), path, instr.line, instr.instruction) from None


def _apply(config: ImageConfig, instr: Instruction, x: Any, cmd_set: bool) -> ImageConfig:
    section = config.config
    if isinstance(instr, Env):
        return with_env(config, {x(k): x(v) for k, v in instr.pairs})
    if isinstance(instr, Label):
        return config.with_config(Labels={**(section.get("Labels") or {}),
                                          **{x(k): x(v) for k, v in instr.pairs}})
    if isinstance(instr, Expose):
        ports = dict(section.get("ExposedPorts") or {})
        ports.update({p: {} for p in _ports([x(p) for p in instr.ports])})
        return config.with_config(ExposedPorts=ports)
    if isinstance(instr, Volume):
        volumes = dict(section.get("Volumes") or {})
        for raw in instr.paths:
            if not x(raw).strip():
                raise ValueError("VOLUME specified can not be an empty string")
            volumes[x(raw)] = {}
        return config.with_config(Volumes=volumes)
    if isinstance(instr, User):
        return config.with_config(User=x(instr.user))
    if isinstance(instr, Workdir):
        current = section.get("WorkingDir") or "/"
        target = posixpath.normpath(posixpath.join(current, x(instr.path)))
        return config.with_config(WorkingDir=target)
    if isinstance(instr, StopSignal):
        return config.with_config(StopSignal=x(instr.signal))
    if isinstance(instr, Shell):
        return config.with_config(Shell=list(instr.shell))
    if isinstance(instr, Cmd):
        return config.with_config(Cmd=command_argv(instr.command, config))
    if isinstance(instr, Entrypoint):
        argv = command_argv(instr.command, config)
        changed = config.with_config(Entrypoint=argv)
        return changed if cmd_set else changed.with_config(Cmd=None)
    if isinstance(instr, Healthcheck):
        return config.with_config(Healthcheck=_healthcheck(instr))
    if isinstance(instr, Onbuild):
        return config.with_config(OnBuild=[*(section.get("OnBuild") or []), instr.expression])
    if isinstance(instr, Maintainer):
        return replace(config, author=instr.name)
    return config


def created_by(instr: Instruction, text: str) -> str:
    """The history `created_by` of a step, in BuildKit's wording."""
    name = instr.instruction
    if name in ("RUN", "COPY", "ADD"):
        return f"{name} {text} # buildkit"
    return f"{name} {text}"


def describe(instr: Instruction) -> str:
    """Compact text of an instruction's arguments, for history and progress lines."""
    command = getattr(instr, "command", None)
    if isinstance(command, tuple):
        return json.dumps(list(command))
    if isinstance(command, str):
        return command
    if isinstance(instr, Env | Label):
        return " ".join(f"{k}={v}" for k, v in instr.pairs)
    if isinstance(instr, Arg):
        return " ".join(d.name if d.default is None else f"{d.name}={d.default}"
                        for d in instr.args)
    for attr in ("path", "user", "signal", "name", "expression"):
        if hasattr(instr, attr):
            return str(getattr(instr, attr))
    if isinstance(instr, Expose):
        return " ".join(instr.ports)
    if isinstance(instr, Volume):
        return json.dumps(list(instr.paths))
    if isinstance(instr, Shell):
        return json.dumps(list(instr.shell))
    if isinstance(instr, Healthcheck):
        return " ".join(instr.test)
    sources = getattr(instr, "sources", None)
    if sources is not None:
        return " ".join([*sources, instr.dest])  # type: ignore[union-attr]
    return ""
