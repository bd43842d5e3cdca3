"""How the progress view names steps, as BuildKit names them (pure).

A step is shown as `[STAGE N/TOTAL] TEXT`: the stage is its `AS` name, or `stage-INDEX` for an
unnamed one, and no name at all when the Buildfile has only one stage. The text of FROM, COPY,
ADD and WORKDIR shows their arguments with the build's variables expanded, as BuildKit's
progress does (`FROM $BASE` shows the image it names); the cache key never sees this text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from layerbuild.builder.config import describe
from layerbuild.buildfile import (
    Add,
    Buildfile,
    Copy,
    ExpansionError,
    From,
    Instruction,
    Mount,
    Run,
    Stage,
    Workdir,
    expand,
)


def stages_named(buildfile: Buildfile) -> bool:
    """Whether steps show their stage's name: BuildKit leaves it out when the build has one
    stage, but counts an image that `COPY --from` or `RUN --mount=from=` names as one more."""
    if len(buildfile.stages) > 1:
        return True
    return any(_names_another(instr) for stage in buildfile.stages for instr in stage.instructions)


def _names_another(instr: Instruction) -> bool:
    if isinstance(instr, Copy):
        return bool(instr.from_)
    if isinstance(instr, Run):
        return any(m.from_ for m in instr.mounts)
    return False


def stage_label(stage: Stage) -> str:
    """The name a stage's steps show: `build`, or `stage-2` for the third, unnamed one."""
    return stage.name or f"stage-{stage.index}"


def from_text(instr: From, env: Mapping[str, str], escape: str) -> str:
    """`FROM IMAGE` with the image's variables expanded (as written if they cannot be)."""
    try:
        return f"FROM {expand(instr.image, env, escape)}"
    except ExpansionError:
        return f"FROM {instr.image}"  # the step itself says what is wrong, with its line


def step_text(instr: Instruction, env: Mapping[str, str] | None = None,
              escape: str = "\\") -> str:
    """The instruction as a progress line shows it: its flags, then its arguments, expanded
    with `env` where Docker expands them (COPY, ADD, WORKDIR)."""
    if env is not None:
        instr = _expanded(instr, env, escape)
    flags: list[str] = []
    if isinstance(instr, Run):
        flags += [f"--network={instr.network}"] if instr.network else []
        flags += [f"--mount={_mount_text(m)}" for m in instr.mounts]
    elif isinstance(instr, Copy | Add):
        for name in ("from_", "chown", "chmod", "checksum"):
            value = getattr(instr, name, None)
            flags += [f"--{name.rstrip('_')}={value}"] if value else []
        flags += [f"--exclude={p}" for p in instr.exclude]
        flags += [f"--{name}" for name in ("link", "parents") if getattr(instr, name, False)]
        unpack = getattr(instr, "unpack", None)
        flags += [f"--unpack={str(unpack).lower()}"] if unpack is not None else []
    return " ".join([instr.instruction, *flags, describe(instr)])


def _expanded(instr: Instruction, env: Mapping[str, str], escape: str) -> Instruction:
    """The instruction with the arguments its step expands already expanded."""
    def x(word: str) -> str:
        return expand(word, env, escape)

    try:
        if isinstance(instr, Copy | Add):
            return replace(instr, sources=tuple(x(s) for s in instr.sources), dest=x(instr.dest),
                           chown=x(instr.chown) if instr.chown else instr.chown,
                           exclude=tuple(x(p) for p in instr.exclude))
        if isinstance(instr, Workdir):
            return replace(instr, path=x(instr.path))
    except ExpansionError:
        pass  # shown as written: the step itself fails with its line
    return instr


def _mount_text(mount: Mount) -> str:
    fields = [f"type={mount.type}"]
    for name in ("target", "source", "from_", "id", "env"):
        value = getattr(mount, name)
        fields += [f"{name.rstrip('_')}={value}"] if value else []
    return ",".join(fields)
