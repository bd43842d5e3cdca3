"""What metadata instructions do to an image config, and the history text of every step (pure).

Values arrive as written; the ones Docker expands are expanded here with the variables in
force at that step.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from layerbuild.buildfile import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    ExpansionError,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    PortSpec,
    Run,
    Scope,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    expand,
    expand_words,
    host_part_warning,
    parse_port_spec,
    proto_casing_warning,
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


_PARSED: dict[int, tuple[list[str], dict[str, str]]] = {}
"""Env lists `with_env` made lately, with their dicts: a stage of many ENVs re-reads none."""
_PARSED_MAX = 16


def env_map(config: ImageConfig) -> dict[str, str]:
    """The config's Env as a dict, in order."""
    env = config.config.get("Env") or []
    known = _PARSED.get(id(env))
    if known is not None and known[0] is env:
        return dict(known[1])
    out: dict[str, str] = {}
    for item in env:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def with_env(config: ImageConfig, values: Mapping[str, str]) -> ImageConfig:
    """The config with Env entries set (existing keys keep their place).

    Setting only new keys appends to the list `with_env` made before (no entry re-read or
    rewritten), so N ENV steps cost N, not N squared; the result is the same either way.
    """
    old = config.config.get("Env") or []
    env = env_map(config)
    known = _PARSED.get(id(old))
    if known is not None and known[0] is old and not any(k in env for k in values):
        items = [*old, *(f"{k}={v}" for k, v in values.items())]
    else:
        items = [f"{k}={v}" for k, v in {**env, **values}.items()]
    env.update(values)
    # Single dict operations only: stages built at once share this. `old` has a successor now.
    _PARSED.pop(id(old), None)
    if len(_PARSED) >= _PARSED_MAX:
        with contextlib.suppress(KeyError):  # another stage emptied it meanwhile
            _PARSED.popitem()
    _PARSED[id(items)] = (items, env)
    return config.with_config(Env=items)


def exposed(instr: Expose, env: Mapping[str, str], escape: str = "\\",
            path: str = "Buildfile") -> list[PortSpec]:
    """EXPOSE's port specs, its words expanded and split first (``$PORTS`` may hold several);
    a bad one is a BuildfileError at the instruction."""
    try:
        return [parse_port_spec(word) for text in instr.ports
                for word in expand_words(text, env, escape)]
    except ExpansionError as err:
        raise err.located(path, instr.line, instr.instruction) from None
    except ValueError as exc:
        raise BuildfileError(str(exc), path, instr.line, instr.instruction) from None


def expose_warnings(instr: Expose, env: Mapping[str, str], escape: str = "\\",
                    path: str = "Buildfile") -> list[str]:
    """BuildKit's warnings for the EXPOSE specs, in its order: a protocol not in lower case
    (``80/TCP``), then an IP address or a host port."""
    return [f"warning: {path}:{instr.line}: {message}"
            for spec in exposed(instr, env, escape, path)
            for message in _spec_warnings(spec)]


def _spec_warnings(spec: PortSpec) -> list[str]:
    return ([proto_casing_warning(spec)] if spec.proto_casing else []) + \
        ([host_part_warning(spec)] if spec.host_part else [])


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

    if isinstance(instr, Expose):
        ports = dict(config.config.get("ExposedPorts") or {})
        ports.update({port: {} for spec in exposed(instr, env, escape, path)
                      for port in spec.ports})
        return config.with_config(ExposedPorts=ports)
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
        # Cleaned, as BuildKit does since 0.10 (0.8 kept an absolute path as written: "/w/")
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


RUNTIME_KEYS = frozenset({"User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes",
                          "WorkingDir", "Labels", "StopSignal", "ArgsEscaped", "Healthcheck",
                          "OnBuild", "Shell"})
"""The runtime keys an image config of BuildKit's has (dockerspec.ImageConfig)."""
TOP_LEVEL_KEPT = frozenset({"os.version", "os.features"})
"""Top-level fields of a base's config, beyond those modelled, that a derived image keeps."""


def derived(config: ImageConfig) -> ImageConfig:
    """A base's config as a new image starts from it, as BuildKit derives one: only the
    fields the OCI image config has (Docker's `comment`, `container_config`,
    `docker_version`, … go), and only runtime keys BuildKit knows that have a value (an
    imported image's empty `Hostname`, `AttachStdin`, … go)."""
    section = {k: v for k, v in config.config.items()
               if k in RUNTIME_KEYS and v not in (None, "", [], {}, False)}
    extra = {k: v for k, v in config.extra.items() if k in TOP_LEVEL_KEPT}
    if section == dict(config.config) and extra == dict(config.extra):
        return config
    return replace(config, config=section, extra=extra)


def with_default_path(config: ImageConfig) -> ImageConfig:
    """The config with Docker's default PATH appended to Env when it sets none (BuildKit makes
    sure every stage has a PATH, and writes it into the image)."""
    if "PATH" in env_map(config):
        return config
    return with_env(config, {"PATH": DEFAULT_PATH.partition("=")[2]})


def go_quote(text: str) -> str:
    """A string as Go's `%q` writes it (strconv.Quote)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable() and code != 0x7F:
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out) + '"'


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
               "\t": "\\t", "\v": "\\v"}


def go_duration(nanoseconds: int) -> str:
    """A duration as Go's time.Duration.String() writes it: 1m30s, 5s, 1.5s, 300ms, 0s."""
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanoseconds >= size:
                return _decimal(nanoseconds, size) + unit
    hours, rest = divmod(nanoseconds, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0") if frac else ""
    return f"{whole}.{digits}" if digits else str(whole)


def _go_list(words: list[str], quoted: bool) -> str:
    """A string slice as Go's `%q` (quoted) or `%v` writes it."""
    return "[" + " ".join(go_quote(w) if quoted else w for w in words) + "]"


def _healthcheck_text(instr: Healthcheck) -> str:
    """Go's `%q` of BuildKit's HealthConfig: the test, the durations, then the retries as a
    quoted rune. BuildKit versions that know --start-interval print it after the start period."""
    durations = [instr.interval, instr.timeout, instr.start_period]
    if instr.start_interval:
        durations.append(instr.start_interval)
    fields = [_go_list(list(instr.test), True), *(go_quote(go_duration(d)) for d in durations),
              _go_rune(instr.retries)]
    return "&{" + " ".join(fields) + "}"


def _go_rune(value: int) -> str:
    """An int as Go's `%q` writes it: a quoted character."""
    ch = chr(value)
    if ch == "'":
        return "'\\''"
    if ch in _GO_ESCAPES:
        return f"'{_GO_ESCAPES[ch]}'"
    if ch.isprintable() and value != 0x7F:
        return f"'{ch}'"
    return "'" + go_quote(ch)[1:-1] + "'"


def run_history(argv: list[str], args: Mapping[str, str | None], env: Mapping[str, str]) -> str:
    """BuildKit's text for a RUN: `|N name=value …` for the stage's ARGs (the value in force,
    which an ENV of the same name overrides), then the command line."""
    pairs = [f"{name}={env.get(name, value or '')}" for name, value in args.items()]
    prefix = [f"|{len(pairs)}", *pairs] if pairs else []
    return " ".join([*prefix, *argv])


def created_by(instr: Instruction, config: ImageConfig, env: Mapping[str, str],
               escape: str = "\\", args: Mapping[str, str | None] | None = None,
               script: str | tuple[str, ...] = "", scope: Scope | None = None) -> str | None:
    """The history `created_by` of a step, in BuildKit's wording; None for ONBUILD, which
    BuildKit records in the config only.

    `config` is the config the step sees (for WORKDIR, the one it made); `env` the variables
    before it; `args` the ARGs declared in the stage; `script` what a RUN runs; `scope` the
    scope before the step (an ARG's defaults are shown as it resolves them).
    """
    def x(word: str) -> str:
        return expand(word, env, escape)

    name = instr.instruction
    if isinstance(instr, Onbuild):
        return None
    if isinstance(instr, Run):
        return f"RUN {run_history(command_argv(script, config), args or {}, env)} # buildkit"
    if isinstance(instr, Copy | Add):
        words = [x(s) for s in instr.sources] + [f"<<{h.name}" for h in instr.heredocs]
        return f"{name} {' '.join([*words, x(instr.dest)])} # buildkit"
    if isinstance(instr, Env | Label):
        return f"{name} " + " ".join(f"{x(k)}={x(v)}" for k, v in instr.pairs)
    if isinstance(instr, Arg):
        shown = scope.shown_defaults(instr, escape) if scope is not None else [
            (d.name, None if d.default is None else x(d.default)) for d in instr.args]
        return "ARG " + " ".join(n if d is None else f"{n}={d}" for n, d in shown)
    if isinstance(instr, Expose):
        ports = sorted({port for spec in exposed(instr, env, escape) for port in spec.ports})
        return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in ports) + "]"
    if isinstance(instr, Volume):
        return f"VOLUME {_go_list([x(p) for p in instr.paths], False)}"
    if isinstance(instr, Shell):
        return f"SHELL {_go_list(list(instr.shell), False)}"
    if isinstance(instr, Cmd | Entrypoint):
        return f"{name} {_go_list(command_argv(instr.command, config), True)}"
    if isinstance(instr, Healthcheck):
        return f"HEALTHCHECK {_healthcheck_text(instr)}"
    if isinstance(instr, Workdir):
        return f"WORKDIR {config.config.get('WorkingDir') or '/'}"
    if isinstance(instr, User | StopSignal):
        return f"{name} {x(describe(instr))}"
    return f"{name} {describe(instr)}"


def last_created(config: ImageConfig) -> str | None:
    """When the image's last step that says so was made (its history's last `created`)."""
    return next((h.created for h in reversed(config.history) if h.created), None)


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
