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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from layerbuild.buildfile import Instruction

KEY_VERSION = 2
"""The version of the key encoding; raised on any deliberate change, so that it shows."""

UNCACHEABLE = "uncacheable"
"""The `extra` value of an input that cannot be known in advance (a URL without --checksum)."""

_LOCATION = frozenset({"line", "end_line"})  # where an instruction is, not what it does
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
"""The key's JSON: as `json.dumps(data, sort_keys=True, separators=(",", ":"))` writes it."""


@dataclass(frozen=True)
class StepInputs:
    """Everything a step's result depends on, in a form that can be compared and hashed."""

    parent: str
    instruction: Mapping[str, Any]
    variables: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)

    def key(self) -> str:
        """The cache key: a sha256 over the canonical JSON of the inputs (see the module).

        The JSON is hashed as it is made, a piece at a time: a step that copies many files
        never holds the whole text."""
        data = {"version": KEY_VERSION, "parent": self.parent, "instruction": self.instruction,
                "variables": self.variables, "files": self.files, "extra": self.extra}
        h = hashlib.sha256()
        pieces: list[str] = []
        size = 0
        for piece in _CANONICAL.iterencode(data):
            pieces.append(piece)
            size += len(piece)
            if size > 1 << 16:
                h.update("".join(pieces).encode())
                pieces.clear()
                size = 0
        h.update("".join(pieces).encode())
        return h.hexdigest()

    def to_json(self, files: bool = True) -> dict[str, Any]:
        """The inputs as JSON-ready dicts (kept per slot to explain the next miss); without
        `files` for a caller that writes them itself."""
        data = {"parent": self.parent, "instruction": dict(self.instruction),
                "variables": dict(self.variables), "extra": dict(self.extra)}
        if files:
            data["files"] = dict(self.files)
        return data

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


def why_missed(before: StepInputs | None, now: StepInputs,
               before_files: Iterable[tuple[str, str]] | None = None) -> str:
    """One line saying what differs from the last build of the same step; `before_files`,
    when given, are before's files as (path, digest) in sorted order, read as they come."""
    if before is None:
        return "not built before"
    if before.instruction != now.instruction:
        return "the instruction changed"
    return _reason(before, now, _file_changes(sorted(before.files.items())
                                              if before_files is None else before_files,
                                              now.files))


def miss_report(before: StepInputs, before_files: Iterable[tuple[str, str]],
                now: StepInputs) -> tuple[str, list[str] | None]:
    """`why_missed` and `changed_files` of `before` (its files in sorted order, read as they
    come) and `now`, from one pass over the files."""
    if before.instruction != now.instruction:
        return "the instruction changed", None
    in_files_only = (before.parent, before.variables, before.extra) == \
        (now.parent, now.variables, now.extra)
    first: tuple[str, str] | None = None
    count = 0
    changed: list[str] = []
    for change in _file_differences(before_files, now.files):
        first, count = first or change, count + 1
        if in_files_only and change[1] != "was removed":
            changed.append(change[0])
    reason = _reason(before, now, None if first is None else (*first, count))
    return reason, changed if in_files_only else None


def _reason(before: StepInputs, now: StepInputs, changes: tuple[str, str, int] | None) -> str:
    """What differs, besides the instruction, given the files' first change and count."""
    if changes is not None:
        path, verb, count = changes
        more = f" (and {count - 1} more)" if count > 1 else ""
        return f"file {path} {verb}{more}"
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


def _file_changes(before: Iterable[tuple[str, str]], now: Mapping[str, str]
                  ) -> tuple[str, str, int] | None:
    """The first path (in sorted order) that is new, changed or removed, what befell it and
    how many did; None if none did. `before` is in sorted order (see `_file_differences`)."""
    first: tuple[str, str] | None = None
    count = 0
    for change in _file_differences(before, now):
        first, count = first or change, count + 1
    return None if first is None else (*first, count)


def _file_differences(before: Iterable[tuple[str, str]], now: Mapping[str, str]
                      ) -> Iterator[tuple[str, str]]:
    """(path, "is new" | "changed" | "was removed") of each file that differs, in sorted
    order. `before` is in sorted order: the two are walked side by side, so neither is ever
    copied."""
    names = iter(sorted(now))
    current = next(names, None)
    for path, digest in before:
        while current is not None and current < path:
            yield current, "is new"
            current = next(names, None)
        if current == path:
            if now[path] != digest:
                yield path, "changed"
            current = next(names, None)
        else:
            yield path, "was removed"
    while current is not None:
        yield current, "is new"
        current = next(names, None)


def changed_files(before: StepInputs, before_files: Iterable[tuple[str, str]],
                  now: StepInputs) -> list[str] | None:
    """The paths of `now`'s files that are new or whose digest differs from `before`'s, in
    sorted order; None when the two differ in anything but files (another parent, instruction,
    variable or extra input). `before_files` are before's files as (path, digest) in sorted
    order, read as they come.

    >>> a = StepInputs("p", {"instruction": "COPY"}, files={"x": "1", "y": "2"})
    >>> b = StepInputs("p", {"instruction": "COPY"}, files={"x": "1", "y": "3", "z": "4"})
    >>> changed_files(a, sorted(a.files.items()), b)
    ['y', 'z']
    """
    if (before.parent, before.instruction, before.variables, before.extra) != \
            (now.parent, now.instruction, now.variables, now.extra):
        return None
    return [path for path, what in _file_differences(before_files, now.files)
            if what != "was removed"]


def cacheable(inputs: StepInputs) -> bool:
    """Whether a step may be served from the cache (a URL without --checksum may not)."""
    return UNCACHEABLE not in inputs.extra.values()
