"""A plain, JSON-ready view of a parsed Buildfile, for golden tests and ``--debug`` output."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from layerbuild.buildfile.stages import Buildfile

__all__ = ["dumps", "to_dict"]


def to_dict(value: Any) -> Any:
    """Turn a Buildfile (or any value inside it) into dicts, lists, strings, numbers.

    Instructions get an ``"instruction"`` key first; the field ``from_`` is written ``from``;
    fields left at their default value are omitted.
    """
    if isinstance(value, Buildfile):
        return {
            "directives": [to_dict(d) for d in value.directives],
            "escape": value.escape,
            "global_args": [to_dict(a) for a in value.global_args],
            "stages": [to_dict(s) for s in value.stages],
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        name = getattr(type(value), "instruction", None)
        if isinstance(name, str):
            out["instruction"] = name
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if field.default is not dataclasses.MISSING and item == field.default:
                continue  # defaults add noise; leaving them out keeps golden files readable
            out[field.name.rstrip("_")] = to_dict(item)
        return out
    if isinstance(value, (tuple, list)):
        return [to_dict(item) for item in value]
    return value


def dumps(buildfile: Buildfile) -> str:
    """The :func:`to_dict` view as indented JSON text ending in a newline."""
    return json.dumps(to_dict(buildfile), indent=2, ensure_ascii=False) + "\n"
