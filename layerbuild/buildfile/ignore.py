"""``.dockerignore`` rules with Docker's pattern semantics (moby's patternmatcher).

- One pattern a line; lines starting with ``#`` are comments; surrounding blanks are trimmed.
- Patterns are cleaned like Go's ``path.Clean`` and a leading ``/`` is dropped, so ``/a``,
  ``./a`` and ``a/`` all mean ``a``.
- ``*`` and ``?`` never cross ``/``; ``**`` spans any number of directories; ``[...]`` is a
  character class; ``\\`` escapes the next character.
- A pattern matching a directory excludes everything under it.
- ``!pattern`` re-includes; the last pattern that matches decides.

Pure: the caller reads the file and walks the tree.

Example::

    >>> rules = IgnoreRules.parse("*.log\\n!keep.log\\nbuild/\\n")
    >>> rules.excluded("x.log"), rules.excluded("keep.log"), rules.excluded("build/a/b")
    (True, False, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from layerbuild.errors import BuildfileError

__all__ = ["IgnorePattern", "IgnoreRules", "clean_path"]

_REGEX_SPECIAL = set(".+()|{}$")


class _Kind(Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    REGEX = "regex"


def clean_path(path: str) -> str:
    """Go's ``path.Clean``: collapse slashes, drop ``.``, resolve ``..`` lexically."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(segment)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


@dataclass(frozen=True)
class IgnorePattern:
    """One cleaned pattern, whether it re-includes (``!``), and how it matches."""

    text: str
    exclusion: bool
    kind: _Kind
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, text: str, exclusion: bool) -> IgnorePattern:
        """Compile a cleaned pattern. Raises ValueError for a malformed one."""
        _check_syntax(text)
        kind, regex = _translate(text)
        return cls(text, exclusion, kind, re.compile(regex, re.DOTALL) if regex else None)

    def matches(self, path: str) -> bool:
        """Whether this pattern matches exactly ``path`` (a cleaned relative path)."""
        if self.kind is _Kind.EXACT:
            return path == self.text
        if self.kind is _Kind.PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind is _Kind.SUFFIX:
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None

    def could_match_under(self, directory: str) -> bool:
        """Whether this pattern might match ``directory``, an ancestor or anything below it."""
        segments = self.text.split("/")
        for index, name in enumerate(directory.split("/")):
            if index >= len(segments):
                return True
            segment = segments[index]
            if "**" in segment:
                return True
            _, regex = _translate(segment)
            if regex is None and segment != name:
                return False
            if regex is not None and re.fullmatch(regex, name, re.DOTALL) is None:
                return False
        return True


@dataclass(frozen=True)
class IgnoreRules:
    """An ordered list of patterns; see the module docstring for the rules."""

    patterns: tuple[IgnorePattern, ...] = ()

    @classmethod
    def parse(cls, text: str, path: str = ".dockerignore") -> IgnoreRules:
        """Read ``.dockerignore`` text. Raises BuildfileError naming the file and line."""
        patterns = []
        for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
            if raw.startswith("#"):
                continue
            try:
                pattern = _pattern(raw)
            except ValueError as err:
                raise BuildfileError(str(err), path, number) from None
            if pattern is not None:
                patterns.append(pattern)
        return cls(tuple(patterns))

    @classmethod
    def from_patterns(cls, lines: list[str]) -> IgnoreRules:
        """Rules from pattern strings (no comment handling). Raises ValueError."""
        found = (_pattern(line) for line in lines)
        return cls(tuple(pattern for pattern in found if pattern is not None))

    @property
    def has_exclusions(self) -> bool:
        """Whether any ``!`` pattern exists (then whole-directory skips need care)."""
        return any(pattern.exclusion for pattern in self.patterns)

    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        """Whether a context path is left out of the build context.

        ``relpath`` is relative to the context root, ``/``-separated. Docker's patterns do
        not treat directories specially (``build/`` is cleaned to ``build``), so ``is_dir``
        does not change the answer; it is accepted so walkers can pass what they know.
        """
        del is_dir
        path = clean_path(relpath).lstrip("/")
        if path in ("", "."):
            return False
        parents = _parents(path)
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # only a pattern that could flip the answer is worth checking
            if pattern.matches(path) or any(pattern.matches(parent) for parent in parents):
                matched = not pattern.exclusion
        return matched

    def can_skip_dir(self, relpath: str) -> bool:
        """Whether a walk may skip the directory ``relpath`` without looking inside.

        True only when the directory is excluded and no ``!`` pattern could re-include
        anything under it.
        """
        if not self.excluded(relpath, is_dir=True):
            return False
        path = clean_path(relpath).lstrip("/")
        return not any(p.exclusion and p.could_match_under(path) for p in self.patterns)


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i + 1]) for i in range(len(parts))]


def _pattern(raw: str) -> IgnorePattern | None:
    text = raw.strip()
    if not text:
        return None
    exclusion = text.startswith("!")
    if exclusion:
        text = text[1:].strip()
        if not text:
            raise ValueError('illegal exclusion pattern: "!"')
    text = clean_path(text)
    if len(text) > 1 and text.startswith("/"):
        text = text[1:]
    return IgnorePattern.compile(text, exclusion)


def _translate(pattern: str) -> tuple[_Kind, str | None]:
    """How to match a pattern: a plain kind, or a regular expression (for fullmatch)."""
    out: list[str] = []
    kind = _Kind.EXACT
    pos = 0
    first = True
    while pos < len(pattern):
        ch = pattern[pos]
        pos += 1
        if ch == "*" and pattern.startswith("*", pos):
            pos += 1
            if pattern.startswith("/", pos):
                pos += 1  # "**/" is "**"
            if pos == len(pattern):
                kind = _Kind.PREFIX if kind is _Kind.EXACT else _Kind.REGEX
                if kind is _Kind.REGEX:
                    out.append(".*")
            else:
                out.append("(?:.*/)?")
                kind = _Kind.REGEX
            if first:
                kind = _Kind.SUFFIX
        elif ch == "*":
            out.append("[^/]*")
            kind = _Kind.REGEX
        elif ch == "?":
            out.append("[^/]")
            kind = _Kind.REGEX
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\\":
            if pos < len(pattern):
                out.append(re.escape(pattern[pos]))
                pos += 1
                kind = _Kind.REGEX
            else:
                out.append("\\\\")
        elif ch in "[]":
            out.append(ch)
            kind = _Kind.REGEX
        else:
            out.append(ch)
        first = False
    return kind, ("".join(out) if kind is _Kind.REGEX else None)


def _check_syntax(pattern: str) -> None:
    """Refuse what Go's ``filepath.Match`` calls a bad pattern (brackets, trailing escape)."""
    pos = 0
    while pos < len(pattern):
        ch = pattern[pos]
        pos += 1
        if ch == "\\":
            if pos == len(pattern):
                raise ValueError(f"bad pattern {pattern!r}: it ends with an escape")
            pos += 1
        elif ch == "[":
            pos = _class_end(pattern, pos)


def _class_end(pattern: str, pos: int) -> int:
    """The position after a ``[...]`` class whose body starts at ``pos``."""
    if pattern.startswith("^", pos):
        pos += 1
    count = 0
    while True:
        if pos < len(pattern) and pattern[pos] == "]" and count > 0:
            return pos + 1
        pos = _class_char(pattern, pos)
        if pattern.startswith("-", pos):
            pos = _class_char(pattern, pos + 1)
        count += 1


def _class_char(pattern: str, pos: int) -> int:
    if pos >= len(pattern) or pattern[pos] in "-]":
        raise ValueError(f"bad pattern {pattern!r}: malformed [...] class")
    if pattern[pos] == "\\":
        pos += 1
        if pos >= len(pattern):
            raise ValueError(f"bad pattern {pattern!r}: malformed [...] class")
    return pos + 1
