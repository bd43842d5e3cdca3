"""Buildfiles (Dockerfile syntax): text → stages of typed instructions, with file:line.

Parsing runs in stages, each its own module: :mod:`.parser` (text → nodes: directives,
continuations, heredocs, flags, exec form), :mod:`.instructions` (nodes → typed values),
:mod:`.stages` (the whole file: global ARGs, stages, cross-stage checks). Variable expansion
(:mod:`.expand`) and ARG scoping (:mod:`.args`) are applied by the build, step by step.
:mod:`.template` renders ``*.j2`` Buildfiles; :mod:`.ignore` reads ``.dockerignore``;
:mod:`.limits` bounds what a Buildfile may hold (size, line length, nesting, UTF-8);
:mod:`.ports` reads EXPOSE's port specs.

Everything here is pure: no file, process or network access.
"""

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
from layerbuild.buildfile.expand import (
    EXPANDING_INSTRUCTIONS,
    ExpansionError,
    expand,
    expand_words,
    expands_variables,
)
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
