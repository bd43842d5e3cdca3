"""A whole Buildfile: global ARGs, then stages, each a FROM and the instructions after it.

:func:`parse_buildfile` runs the three parsing stages and checks what spans instructions:
something must be built (a FROM), only ARG may come before the first FROM, stage names are
unique, and ``COPY --from``/``RUN --mount from=`` never name the current or a later stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerbuild.buildfile.convert import build_instruction
from layerbuild.buildfile.instructions import (
    Arg,
    Copy,
    From,
    Instruction,
    Run,
)
from layerbuild.buildfile.parser import Directive, parse
from layerbuild.errors import BuildfileError

__all__ = ["Buildfile", "Stage", "parse_buildfile", "stage_ref"]


@dataclass(frozen=True)
class Stage:
    """One build stage: its lower-cased name (if any), position, FROM and instructions."""

    name: str | None
    index: int
    from_instr: From
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Buildfile:
    """A parsed Buildfile: directives, ARGs before the first FROM, and the stages in order."""

    path: str
    directives: tuple[Directive, ...]
    escape: str
    global_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]

    def directive(self, name: str) -> str | None:
        """A directive's value (``syntax``, ``escape``, ``check``), or None when absent."""
        for directive in self.directives:
            if directive.name == name.lower():
                return directive.value
        return None

    def stage(self, ref: str | int) -> Stage:
        """The stage with this name (case-insensitive) or index. Raises KeyError."""
        if isinstance(ref, int) or ref.isdigit():
            index = int(ref)
            if 0 <= index < len(self.stages):
                return self.stages[index]
            raise KeyError(ref)
        for stage in self.stages:
            if stage.name == ref.lower():
                return stage
        raise KeyError(ref)


def stage_ref(buildfile: Buildfile, ref: str, before: int) -> Stage | None:
    """The earlier stage a `--from`/FROM value names (by name or index), or None for an image."""
    for stage in buildfile.stages[:before]:
        if stage.name is not None and stage.name == ref.lower():
            return stage
    if ref.isdigit() and int(ref) < before:
        return buildfile.stages[int(ref)]
    return None


def parse_buildfile(text: str, path: str = "Buildfile") -> Buildfile:
    """Parse Buildfile text into stages of typed instructions.

    Raises BuildfileError naming the file, line and instruction for anything Docker would
    refuse to build.
    """
    document = parse(text, path)
    if not document.nodes:
        raise BuildfileError("the Buildfile has no instructions (it needs at least a FROM)",
                             path, max(document.line_count, 1))
    global_args: list[Arg] = []
    stages: list[Stage] = []
    current: list[Instruction] = []
    for node in document.nodes:
        instr = build_instruction(node, path, document.escape)
        if isinstance(instr, From):
            _close(stages, current)
            stages.append(Stage(instr.name, len(stages), instr, ()))
            current = []
        elif not stages:
            if not isinstance(instr, Arg):
                raise BuildfileError("no FROM before this instruction: only ARG may come "
                                     "before the first FROM", path, node.start_line,
                                     node.instruction)
            global_args.append(instr)
        else:
            current.append(instr)
    if not stages:
        raise BuildfileError("no FROM instruction: nothing to build", path,
                             document.nodes[-1].start_line, document.nodes[-1].instruction)
    _close(stages, current)
    _check_names(stages, path)
    _check_references(stages, path)
    return Buildfile(path, document.directives, document.escape, tuple(global_args),
                     tuple(stages))


def _close(stages: list[Stage], current: list[Instruction]) -> None:
    if stages:
        last = stages[-1]
        stages[-1] = Stage(last.name, last.index, last.from_instr, tuple(current))


def _check_names(stages: list[Stage], path: str) -> None:
    seen: dict[str, Stage] = {}
    for stage in stages:
        if stage.name is None:
            continue
        first = seen.get(stage.name)
        if first is not None:
            raise BuildfileError(f"duplicate stage name {stage.name!r} (first used on line "
                                 f"{first.from_instr.line})", path, stage.from_instr.line, "FROM")
        seen[stage.name] = stage


def _check_references(stages: list[Stage], path: str) -> None:
    index_of = {stage.name: stage.index for stage in stages if stage.name is not None}
    for stage in stages:
        for instr in stage.instructions:
            for ref in _stage_refs(instr):
                target = _referenced_index(ref, index_of)
                if target is not None and target >= len(stages):
                    raise BuildfileError(
                        f"--from={ref}: there is no stage with index {target} (the stages are "
                        f"numbered 0 to {len(stages) - 1})", path, instr.line, instr.instruction)
                if target is not None and target >= stage.index:
                    which = "this stage" if target == stage.index else "a later stage"
                    raise BuildfileError(
                        f"--from={ref} refers to {which} ({_describe(stages[target])}); "
                        "only earlier stages can be used", path, instr.line, instr.instruction)


def _stage_refs(instr: Instruction) -> list[str]:
    if isinstance(instr, Copy) and instr.from_ is not None:
        return [instr.from_]
    if isinstance(instr, Run):
        return [mount.from_ for mount in instr.mounts if mount.from_ is not None]
    # An ONBUILD trigger runs in another build, where these stage names mean nothing.
    return []


def _referenced_index(ref: str, index_of: dict[str, int]) -> int | None:
    """The stage index a ``--from`` names, or None for an image reference or a variable."""
    if ref.isdigit():
        return int(ref)
    return index_of.get(ref.lower())


def _describe(stage: Stage) -> str:
    name = f"{stage.name!r}, " if stage.name else ""
    return f"{name}index {stage.index}, line {stage.from_instr.line}"
