"""Which stages a build needs, in what order, and how steps are numbered (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from layerbuild.buildfile import (
    Add,
    Buildfile,
    Copy,
    ExpansionError,
    Instruction,
    Run,
    Stage,
    Workdir,
    expand,
    parse_heredoc_marker,
    stage_ref,
)
from layerbuild.errors import BuildfileError
from layerbuild.image import ImageConfig


def _refs(instr: Instruction) -> list[str]:
    if isinstance(instr, Copy) and instr.from_:
        return [instr.from_]
    if isinstance(instr, Run):
        return [m.from_ for m in instr.mounts if m.from_]
    return []


def target_stage(buildfile: Buildfile, target: str | None) -> Stage:
    """The stage to build: `--target`, or the last one."""
    if target is None:
        return buildfile.stages[-1]
    try:
        return buildfile.stage(target)
    except KeyError:
        names = ", ".join(s.name for s in buildfile.stages if s.name) or "none"
        raise BuildfileError(f"target stage {target!r} not found (stages: {names})",
                             buildfile.path) from None


def needed_stages(buildfile: Buildfile, target: Stage,
                  global_env: Mapping[str, str]) -> list[Stage]:
    """The target and every stage it depends on (FROM, COPY --from, RUN --mount from=)."""
    needed: set[int] = set()
    todo = [target.index]
    while todo:
        index = todo.pop()
        if index not in needed:
            needed.add(index)
            todo.extend(stage_needs(buildfile, buildfile.stages[index], global_env))
    return [s for s in buildfile.stages if s.index in needed]


def stage_needs(buildfile: Buildfile, stage: Stage, global_env: Mapping[str, str]) -> set[int]:
    """The earlier stages a stage uses (its FROM, COPY --from, RUN --mount from=)."""
    refs = [expand(stage.from_instr.image, global_env, buildfile.escape)]
    refs += [r for instr in stage.instructions for r in _refs(instr)]
    return {dep.index for ref in refs if (dep := stage_ref(buildfile, ref, stage.index))}


def run_script(instr: Run) -> str | tuple[str, ...]:
    """The command a RUN gives its shell, heredocs included.

    A RUN that is only a heredoc marker (``<<EOF``, ``<<  'EOF'``) runs the heredoc's text as
    the script; otherwise the shell receives the command and its heredoc bodies and handles
    them itself, as BuildKit does.
    """
    if isinstance(instr.command, tuple) or not instr.heredocs:
        return instr.command
    if len(instr.heredocs) == 1 and _only_a_marker(instr.command.strip()):
        return instr.heredocs[0].content
    bodies = "".join(f"{h.content}{h.name}\n" for h in instr.heredocs)
    return f"{instr.command}\n{bodies}"


def _only_a_marker(command: str) -> bool:
    try:
        return parse_heredoc_marker(command) is not None
    except ExpansionError:
        return False


def is_layer_step(instr: Instruction, config: ImageConfig) -> bool:
    """Whether a step makes a layer, in the image `config` it leaves (for WORKDIR, the one
    with its directory in force).

    RUN, COPY and ADD do; so does WORKDIR, which makes its directory (BuildKit's mkdir: an
    empty layer when the directory is there already), except `WORKDIR /`, which is only
    metadata in BuildKit.
    """
    if isinstance(instr, Workdir):
        return (config.config.get("WorkingDir") or "/") != "/"
    return isinstance(instr, Run | Copy | Add)


def is_linked(instr: Instruction) -> bool:
    """Whether a step is COPY/ADD --link: its layer is made apart from the layers below."""
    return isinstance(instr, Copy | Add) and instr.link


def may_start_early(instr: Instruction) -> bool:
    """Whether a step may be started before its key is known (`builder.early`): a COPY or ADD
    of context files only (not --from; not --link, whose key ignores the steps before; no
    source that is or may expand to a URL, which the key fetches)."""
    if isinstance(instr, Copy):
        return not instr.from_ and not instr.link
    return isinstance(instr, Add) and not instr.link \
        and not any("://" in s or "$" in s for s in instr.sources)
