"""Shell patterns, as ``${A#p}``, ``${A%p}`` and ``${A/p/r}`` use them: ``*`` and ``?``, and
backslash escapes of ``*``, ``?`` and ``\\`` (an escaped ``}`` or ``/`` only protected the
``${}`` syntax). Anything else escaped is an error (:class:`PatternError`), as in BuildKit.
"""

from __future__ import annotations

import re

__all__ = ["PatternError", "pattern_regex", "trim"]


class PatternError(ValueError):
    """A pattern with an escape that means nothing (the expansion reports it)."""


def pattern_regex(pattern: str, greedy: bool) -> re.Pattern[str]:
    """A shell pattern (``*``, ``?``, backslash escapes) as a regular expression."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = pattern[i] if i < len(pattern) else ""
            if following in ("}", "/"):
                continue  # an escape that only protected the ${} syntax
            if following not in ("*", "?", "\\"):
                raise PatternError(f"invalid escape '\\{following}' in pattern {pattern!r}")
            out.append(re.escape(following))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def trim(value: str, pattern: str, prefix: bool, greedy: bool) -> str:
    """Remove the shortest (or longest, when greedy) prefix or suffix matching ``pattern``."""
    regex = pattern_regex(pattern, greedy)
    cuts = range(len(value) + 1)
    if prefix:
        order = reversed(cuts) if greedy else cuts
        for cut in order:
            if regex.fullmatch(value, 0, cut):
                return value[cut:]
        return value
    order = cuts if greedy else reversed(cuts)
    for cut in order:
        if regex.fullmatch(value, cut):
            return value[:cut]
    return value
