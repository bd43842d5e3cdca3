"""The inputs of a step's cache key, gathered: what it says, what it sees, what it copies.

The key itself (`cache.keys`) is pure; gathering its inputs reads the build context (through
the stat cache, so unchanged files are not read again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from layerbuild.buildfile import (
    Add,
    Buildfile,
    Copy,
    IgnoreRules,
    Instruction,
    Run,
    expand,
    expands_variables,
    stage_ref,
)
from layerbuild.cache.keys import UNCACHEABLE, StepInputs, instruction_form
from layerbuild.cache.stat import StatCache, source_digests
from layerbuild.context import Context
from layerbuild.errors import LayerbuildError


def _expanded(value: Any, env: Mapping[str, str], escape: str) -> Any:
    """Every string of an instruction's form expanded (left as is where it cannot be)."""
    if isinstance(value, str):
        try:
            return expand(value, env, escape)
        except LayerbuildError:
            return value
    if isinstance(value, list):
        return [_expanded(v, env, escape) for v in value]
    if isinstance(value, dict):
        return {k: _expanded(v, env, escape) for k, v in value.items()}
    return value


def step_inputs(parent: str, instr: Instruction, env: Mapping[str, str], buildfile: Buildfile,
                stage_index: int, context: Context, stats: StatCache,
                stage_key: Callable[[int], str], image_id: Callable[[str], str],
                ) -> StepInputs:
    """What a step's result depends on.

    RUN sees every variable in force; other instructions depend on their expanded text only,
    so a changed build arg reruns the RUN steps that can see it, not a COPY after its ARG.
    """
    form = instruction_form(instr)
    escape = buildfile.escape
    variables: dict[str, str] = {}
    if isinstance(instr, Run):
        variables = dict(env)
    elif expands_variables(instr):
        form = _expanded(form, env, escape)
    files: dict[str, str] = {}
    extra: dict[str, str] = {}
    if isinstance(instr, Copy | Add):
        from_ = getattr(instr, "from_", None)
        if from_:
            ref = expand(from_, env, escape)
            earlier = stage_ref(buildfile, ref, stage_index)
            extra["from"] = stage_key(earlier.index) if earlier else image_id(ref)
        else:
            sources = form.get("sources", [])
            try:
                exclude = IgnoreRules.from_patterns(form.get("exclude", [])) if instr.exclude \
                    else None
            except ValueError:  # the step itself will report it
                exclude, sources = None, []
            for source in sources:
                if source.startswith(("http://", "https://")):
                    checksum = getattr(instr, "checksum", None)
                    extra[source] = checksum or UNCACHEABLE
                    continue
                try:
                    matches = context.match(source)
                except LayerbuildError:
                    continue  # the step itself will report it
                files.update(source_digests(context, matches, exclude, stats))
    if isinstance(instr, Run):
        for mount in instr.mounts:
            if mount.from_:  # what a bind or cache mount takes its files from
                ref = expand(mount.from_, env, escape)
                earlier = stage_ref(buildfile, ref, stage_index)
                extra[f"mount {mount.target}"] = stage_key(earlier.index) if earlier \
                    else image_id(ref)
            elif mount.type == "bind":
                try:
                    rel = context.resolve(mount.source or "")
                except LayerbuildError:
                    continue
                files.update(source_digests(context, [rel], None, stats))
    return StepInputs(parent, form, variables, files, extra)
