"""Buildfiles (Dockerfile syntax): text → stages of typed instructions, with file:line.

Parsing runs in stages, each its own module: :mod:`.parser` (text → nodes: directives,
continuations, heredocs, flags, exec form), :mod:`.instructions` (nodes → typed values),
:mod:`.stages` (the whole file: global ARGs, stages, cross-stage checks). Variable expansion
(:mod:`.expand`) and ARG scoping (:mod:`.args`) are applied by the build, step by step.
:mod:`.template` renders ``*.j2`` Buildfiles; :mod:`.ignore` reads ``.dockerignore``;
:mod:`.limits` bounds what a Buildfile may hold (size, line length, nesting, UTF-8);
:mod:`.ports` reads EXPOSE's port specs.

Everything here is pure: no file, process or network access. The names below come from their
modules on first use, so a module that needs one part (say, `.ignore`) loads only that part.
"""

from __future__ import annotations

# Loaded at once: the module `expand` and the function of that name must not be confused, and
# importing the module (as another name's home) would bind its name here to the module.
from layerbuild.buildfile.expand import (
    EXPANDING_INSTRUCTIONS,
    ExpansionError,
    expand,
    expand_words,
    expands_variables,
)
from layerbuild.lazy import lazy_names

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from layerbuild.buildfile.args import (
        PLATFORM_ARGS,
        PROXY_ARGS,
        TARGET_STAGE_ARG,
        Platform,
        Scope,
        platform_args,
        proxy_environment,
        target_stage_args,
        unused_build_args,
    )
    from layerbuild.buildfile.convert import build_instruction
    from layerbuild.buildfile.dump import dumps, to_dict
    from layerbuild.buildfile.ignore import IgnorePattern, IgnoreRules
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
    from layerbuild.buildfile.limits import (
        MAX_BUILDFILE_BYTES,
        MAX_LINE_BYTES,
        MAX_NESTING,
        decode_buildfile,
    )
    from layerbuild.buildfile.mounts import Mount
    from layerbuild.buildfile.parser import (
        Directive,
        Document,
        Heredoc,
        Node,
        parse,
        parse_heredoc_marker,
    )
    from layerbuild.buildfile.ports import (
        PortSpec,
        host_part_warning,
        parse_port_spec,
        proto_casing_warning,
    )
    from layerbuild.buildfile.stages import Buildfile, Stage, parse_buildfile, stage_ref
    from layerbuild.buildfile.template import is_template, parse_var_file, render_template

_HOMES = {
    "PLATFORM_ARGS": "args",
    "PROXY_ARGS": "args",
    "Platform": "args",
    "Scope": "args",
    "TARGET_STAGE_ARG": "args",
    "platform_args": "args",
    "proxy_environment": "args",
    "target_stage_args": "args",
    "unused_build_args": "args",
    "build_instruction": "convert",
    "dumps": "dump",
    "to_dict": "dump",
    "IgnorePattern": "ignore",
    "IgnoreRules": "ignore",
    "Add": "instructions",
    "Arg": "instructions",
    "ArgDecl": "instructions",
    "Cmd": "instructions",
    "Copy": "instructions",
    "Entrypoint": "instructions",
    "Env": "instructions",
    "Expose": "instructions",
    "From": "instructions",
    "Healthcheck": "instructions",
    "Instruction": "instructions",
    "Label": "instructions",
    "Maintainer": "instructions",
    "Onbuild": "instructions",
    "Run": "instructions",
    "Shell": "instructions",
    "StopSignal": "instructions",
    "User": "instructions",
    "Volume": "instructions",
    "Workdir": "instructions",
    "MAX_BUILDFILE_BYTES": "limits",
    "MAX_LINE_BYTES": "limits",
    "MAX_NESTING": "limits",
    "decode_buildfile": "limits",
    "Mount": "mounts",
    "Directive": "parser",
    "Document": "parser",
    "Heredoc": "parser",
    "Node": "parser",
    "parse": "parser",
    "parse_heredoc_marker": "parser",
    "PortSpec": "ports",
    "host_part_warning": "ports",
    "parse_port_spec": "ports",
    "proto_casing_warning": "ports",
    "Buildfile": "stages",
    "Stage": "stages",
    "parse_buildfile": "stages",
    "stage_ref": "stages",
    "is_template": "template",
    "parse_var_file": "template",
    "render_template": "template",
}

__all__ = [
    "EXPANDING_INSTRUCTIONS",
    "MAX_BUILDFILE_BYTES",
    "MAX_LINE_BYTES",
    "MAX_NESTING",
    "PLATFORM_ARGS",
    "PROXY_ARGS",
    "TARGET_STAGE_ARG",
    "Add",
    "Arg",
    "ArgDecl",
    "Buildfile",
    "Cmd",
    "Copy",
    "Directive",
    "Document",
    "Entrypoint",
    "Env",
    "ExpansionError",
    "Expose",
    "From",
    "Healthcheck",
    "Heredoc",
    "IgnorePattern",
    "IgnoreRules",
    "Instruction",
    "Label",
    "Maintainer",
    "Mount",
    "Node",
    "Onbuild",
    "Platform",
    "PortSpec",
    "Run",
    "Scope",
    "Shell",
    "Stage",
    "StopSignal",
    "User",
    "Volume",
    "Workdir",
    "build_instruction",
    "decode_buildfile",
    "dumps",
    "expand",
    "expand_words",
    "expands_variables",
    "host_part_warning",
    "is_template",
    "parse",
    "parse_buildfile",
    "parse_heredoc_marker",
    "parse_port_spec",
    "parse_var_file",
    "platform_args",
    "proto_casing_warning",
    "proxy_environment",
    "render_template",
    "stage_ref",
    "target_stage_args",
    "to_dict",
    "unused_build_args",
]


__getattr__ = lazy_names(__name__, _HOMES, globals())
