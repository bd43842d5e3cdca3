"""Cache keys (pure): what a step's result depends on, in one canonical, versioned encoding.

A step's key is the sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of::

    {"version": KEY_VERSION, "parent": ..., "instruction": FORM,
     "variables": {...}, "files": {...}, "extra": {...}}

``parent`` is the parent step's key (for the first step of a stage: the base image's ID),
``variables`` what a RUN can see, ``files`` a digest per selected context entry (by its path in
the context), ``extra`` what a step takes from elsewhere (an earlier stage's key, an image ID,
a URL's checksum). FORM is the instruction encoded from its dataclass fields alone: ``{
"instruction": KEYWORD, FIELD: VALUE, ...}`` with every field (defaults included) under its
Python name except ``line`` and ``end_line``, nested dataclasses (mounts, heredocs, ARG
declarations, an ONBUILD trigger) encoded the same way, tuples as lists, strings, numbers,
booleans and None as themselves. Nothing in a key names the machine, the store or its paths,
a layer's cache-id or a time, so the same build gives the same keys anywhere.

The encoding is the cache's own: the golden-test view (``buildfile.dump``) may change freely.
Any deliberate change of the encoding raises ``KEY_VERSION``, which changes every key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from layerbuild.cache.stat import source_digests
from layerbuild.errors import LayerbuildError

if TYPE_CHECKING:
    from layerbuild.cache.stat import StatCache
    from layerbuild.context import Context

KEY_VERSION = 1
"""The version of the key encoding; raised on any deliberate change, so that it shows."""

UNCACHEABLE = "uncacheable"
"""The `extra` value of an input that cannot be known in advance (a URL without --checksum)."""

_LOCATION = frozenset({"line", "end_line"})  # where an instruction is, not what it does


@dataclass(frozen=True)
class StepInputs:
    """Everything a step's result depends on, in a form that can be compared and hashed."""

    parent: str
    instruction: Mapping[str, Any]
    variables: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)

    def key(self) -> str:
        """The cache key: a sha256 over the canonical JSON of the inputs (see the module)."""
        data = json.dumps({"version": KEY_VERSION, "parent": self.parent,
                           "instruction": self.instruction,
                           "variables": dict(sorted(self.variables.items())),
                           "files": dict(sorted(self.files.items())),
                           "extra": dict(sorted(self.extra.items()))},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The inputs as JSON-ready dicts (kept per slot to explain the next miss)."""
        return {"parent": self.parent, "instruction": dict(self.instruction),
                "variables": dict(self.variables), "files": dict(self.files),
                "extra": dict(self.extra)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepInputs:
        """The inputs `to_json` gave."""
        return cls(data["parent"], data["instruction"], data.get("variables", {}),
                   data.get("files", {}), data.get("extra", {}))


def instruction_form(instr: Instruction) -> dict[str, Any]:
    """The instruction as a key sees it: its keyword and every field but its line numbers.

    >>> instruction_form(Run(line=3, end_line=3, command="make"))["command"]
    'make'
    """
    return _encode_fields(instr)


def _encode_fields(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keyword = getattr(type(value), "instruction", None)
    if isinstance(keyword, str):
        out["instruction"] = keyword
    for f in dataclasses.fields(value):
        if f.name not in _LOCATION:
            out[f.name] = _encode(getattr(value, f.name))
    return out


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_fields(value)
    if isinstance(value, tuple | list):
        return [_encode(item) for item in value]
    if value is None or isinstance(value, str | int):  # bool is an int, and stays a bool
        return value
    raise TypeError(f"no cache key encoding for a {type(value).__name__}")


def why_missed(before: StepInputs | None, now: StepInputs) -> str:
    """One line saying what differs from the last build of the same step."""
    if before is None:
        return "not built before"
    if before.instruction != now.instruction:
        return "the instruction changed"
    changed = sorted(set(before.files) ^ set(now.files)
                     | {p for p in now.files if before.files.get(p) != now.files[p]})
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        verb = "was removed" if changed[0] not in now.files else (
            "is new" if changed[0] not in before.files else "changed")
        return f"file {changed[0]} {verb}{more}"
    args = sorted(k for k in set(before.variables) | set(now.variables)
                  if before.variables.get(k) != now.variables.get(k))
    if args:
        return f"build arg or variable {', '.join(args)} changed"
    if before.extra != now.extra:
        keys = sorted(k for k in set(before.extra) | set(now.extra)
                      if before.extra.get(k) != now.extra.get(k))
        return f"{', '.join(keys)} changed"
    if before.parent != now.parent:
        return "an earlier step or the base image changed"
    return "the cached result is gone (pruned)"


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
            exclude = IgnoreRules.from_patterns(form.get("exclude", [])) if instr.exclude \
                else None
            for source in form.get("sources", []):
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


def cacheable(inputs: StepInputs) -> bool:
    """Whether a step may be served from the cache (a URL without --checksum may not)."""
    return UNCACHEABLE not in inputs.extra.values()
