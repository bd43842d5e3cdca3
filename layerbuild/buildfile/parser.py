"""Buildfile text to nodes: one node per instruction, with its flags, arguments and line range.

This is the first of three stages (text → nodes → typed instructions; expansion is separate)
and follows BuildKit's parser rules:

- Parser directives (``# syntax=``, ``# escape=``, ``# check=``; keys case-insensitive) count
  only at the very top: the first line that is not a directive (a blank line, any other
  comment, an instruction) ends them.
- A line whose last non-blank character is the escape character continues on the next line;
  blank lines and comment lines inside a continuation are skipped. A continuation still open
  at the end of the file simply ends there.
- A UTF-8 BOM, CRLF line ends and a last line without a newline are all accepted.
- ``RUN``, ``COPY`` and ``ADD`` (also under ``ONBUILD``) in shell form may carry heredocs:
  ``<<EOF`` (expanded), ``<<"EOF"``/``<<'EOF'`` (literal), ``<<-EOF`` (leading tabs
  stripped), several per line. Their bodies follow the instruction line, in order. Blanks
  may follow ``<<`` (``<<  EOF``, BuildKit since 2025); ``<< -EOF`` names ``-EOF``. (COPY
  and ADD still read such a body, but take their sources from blank-split words, as BuildKit
  does: ``COPY <<  EOF /d/`` copies the context paths ``<<`` and ``EOF``.)
- A heredoc as the destination of ``COPY``/``ADD`` is an error, found before any body is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from layerbuild.buildfile.expand import ExpansionError, process
from layerbuild.buildfile.limits import MAX_JSON_NESTING, check_line_length, json_depth
from layerbuild.errors import BuildfileError

__all__ = [
    "Directive",
    "Document",
    "Heredoc",
    "Node",
    "parse",
    "parse_json_array",
]

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
# The blanks are Go's \s, as in BuildKit's pattern: the lexer keeps them in the word.
_HEREDOC = re.compile(r"(\d*)<<(-?)[\t\n\f\r ]*([^<]*)")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
# Instructions whose arguments may be a JSON array of strings (exec form).
_JSON_INSTRUCTIONS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})


@dataclass(frozen=True)
class Directive:
    """A parser directive from the top of the file, e.g. ``# escape=`` (name lower-cased)."""

    name: str
    value: str
    line: int


@dataclass(frozen=True)
class Heredoc:
    """An inline document: its delimiter, body, whether ``$`` expands in it, and ``<<-``."""

    name: str
    content: str
    expand: bool
    chomp: bool


@dataclass(frozen=True)
class Node:
    """One instruction as written: name (upper case), raw flags, argument text, line range.

    ``flags`` are the leading ``--name=value`` words with quotes removed; ``rest`` is the
    argument text after them, continuations joined; ``json_args`` is the exec form when the
    instruction allows one and ``rest`` is a JSON array of strings. ``inner`` is the trigger
    of an ONBUILD.
    """

    instruction: str
    flags: tuple[str, ...]
    rest: str
    json_args: tuple[str, ...] | None
    heredocs: tuple[Heredoc, ...]
    start_line: int
    end_line: int
    original: str
    inner: Node | None = None

    @property
    def is_json(self) -> bool:
        """Whether the arguments are in exec (JSON array) form."""
        return self.json_args is not None


@dataclass(frozen=True)
class Document:
    """A parsed Buildfile: its directives, the escape character and the instruction nodes."""

    directives: tuple[Directive, ...]
    escape: str
    nodes: tuple[Node, ...]
    line_count: int


def parse_json_array(text: str) -> list[str] | None:
    """``text`` as a JSON array of strings, or None when it is not JSON (shell form).

    Raises ValueError for a JSON array holding something other than strings, as Docker does,
    and for arrays nested deeper than MAX_JSON_NESTING (too deep for ``json.loads``).
    """
    text = text.lstrip()
    if not text.startswith("["):
        return None
    # Counting brackets is cheap; only a text holding that many needs the scan.
    if text.count("[") + text.count("{") > MAX_JSON_NESTING \
            and json_depth(text) > MAX_JSON_NESTING:
        raise ValueError(f"JSON arrays nest deeper than the maximum of {MAX_JSON_NESTING}")
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise ValueError("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def parse(text: str, path: str = "Buildfile") -> Document:
    """Split Buildfile text into directives and instruction nodes with their line ranges."""
    return _Reader(text, path).read()


class _Reader:
    """Walks the lines once; keeps the directive state and the current position."""

    def __init__(self, text: str, path: str) -> None:
        text = text.removeprefix("\ufeff")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the text ended with a newline
        for number, line in enumerate(lines, 1):
            check_line_length(line, number, path)
        self.lines = [line.removesuffix("\r") for line in lines]
        self.path = path
        self.pos = 0
        self.escape = "\\"
        self.directives: list[Directive] = []
        self.directives_done = False

    def error(self, message: str, line: int, instruction: str | None = None) -> BuildfileError:
        return BuildfileError(message, self.path, line, instruction)

    def read(self) -> Document:
        nodes: list[Node] = []
        while self.pos < len(self.lines):
            node = self.read_instruction()
            if node is not None:
                nodes.append(node)
        return Document(tuple(self.directives), self.escape, tuple(nodes), len(self.lines))

    def directive(self, stripped: str, line: int) -> None:
        if self.directives_done:
            return
        match = _DIRECTIVE.match(stripped)
        key = match.group(1).lower() if match else ""
        if key not in _KNOWN_DIRECTIVES:
            self.directives_done = True
            return
        assert match is not None
        if any(d.name == key for d in self.directives):
            raise self.error(f"only one {key} parser directive can be used", line)
        value = match.group(2)
        if key == "escape":
            if value not in ("\\", "`"):
                raise self.error(f"invalid escape token {value!r}: it must be \\ or `", line)
            self.escape = value
        self.directives.append(Directive(key, value, line))

    def continued(self, line: str) -> tuple[str, bool]:
        """The line without a trailing escape character, and whether it continues."""
        trimmed = line.rstrip(" \t")
        if trimmed.endswith(self.escape) and (len(trimmed) == 1 or trimmed[-2] != self.escape):
            return trimmed[:-1], True
        return line, False

    def read_instruction(self) -> Node | None:
        start = self.pos + 1
        stripped = self.lines[self.pos].lstrip()
        self.pos += 1
        self.directive(stripped, start)
        if stripped.startswith("#"):
            return None
        first, more = self.continued(stripped)
        if not more and first == "":
            return None
        parts = [first]  # joined once: adding to a string would copy it for every line
        while more and self.pos < len(self.lines):
            raw = self.lines[self.pos]
            self.pos += 1
            if raw.lstrip().startswith("#") or raw.strip() == "":
                continue
            part, more = self.continued(raw)
            parts.append(part)
        text = "".join(parts)
        node = self.node(text, start)
        target = node.inner if node.inner is not None else node
        if target.instruction in ("COPY", "ADD"):
            self.check_destination(target)
        heredocs: tuple[Heredoc, ...] = ()
        if target.instruction in _HEREDOC_INSTRUCTIONS and not target.is_json:
            heredocs = self.read_heredocs(text, start, target.instruction)
        target = replace(target, heredocs=heredocs, end_line=self.pos)
        if node.inner is None:
            return target
        return replace(node, inner=target, end_line=self.pos)

    def node(self, text: str, line: int) -> Node:
        parts = _WHITESPACE.split(text.strip(), maxsplit=1)
        name = parts[0].upper()
        rest, flags = split_flags(parts[1] if len(parts) > 1 else "")
        rest = rest.strip()
        json_args = None
        if name in _JSON_INSTRUCTIONS:
            try:
                args = parse_json_array(rest)
            except ValueError as err:
                raise self.error(str(err), line, name) from None
            json_args = tuple(args) if args is not None else None
        inner = None
        if name == "ONBUILD" and rest:
            inner = self.node(rest, line)
        return Node(name, tuple(flags), rest, json_args, (), line, line, text, inner)

    def check_destination(self, node: Node) -> None:
        """COPY/ADD whose last argument is a heredoc marker: BuildKit's error (in either form)."""
        args = node.json_args if node.json_args is not None else [
            word for word in _WHITESPACE.split(node.rest) if word]
        try:
            marker = parse_heredoc_marker(args[-1]) if len(args) > 1 else None
        except ExpansionError:
            marker = None
        if marker is not None:
            raise self.error(f"{node.instruction} cannot accept a heredoc as a destination",
                             node.start_line, node.instruction)

    def read_heredocs(self, text: str, line: int, instruction: str) -> tuple[Heredoc, ...]:
        found = []
        for marker in heredoc_markers(text):
            try:
                name, expand, chomp = parse_heredoc_marker(marker) or ("", False, False)
            except ExpansionError as err:
                message = f"bad heredoc {marker!r}: {err.reason}"
                raise self.error(message, line, instruction) from None
            if name:
                found.append(self.heredoc_body(name, expand, chomp, line, instruction))
        return tuple(found)

    def heredoc_body(self, name: str, expand: bool, chomp: bool, line: int,
                     instruction: str) -> Heredoc:
        body: list[str] = []
        while self.pos < len(self.lines):
            raw = self.lines[self.pos]
            self.pos += 1
            if (raw.lstrip("\t") if chomp else raw) == name:
                content = "".join(part + "\n" for part in body)
                if chomp:
                    content = _LEADING_TABS.sub("", content)
                return Heredoc(name, content, expand, chomp)
            body.append(raw)
        raise self.error(f"unterminated heredoc <<{name}: no line {name!r} before the end "
                         f"of the file", line, instruction)


def heredoc_markers(text: str) -> list[str]:
    """The words of an instruction line that look like heredoc markers (``<<EOF``)."""
    try:
        words = process(text, {}, "\\", raw_quotes=True, raw_escapes=True, skip_unset=True).words
    except ExpansionError:
        return []  # an unbalanced quote: BuildKit then finds no heredoc either
    return [word for word in words if _HEREDOC.fullmatch(word)]


def parse_heredoc_marker(word: str) -> tuple[str, bool, bool] | None:
    """``<<-"EOF"`` → (``EOF``, expand, chomp); None when the word is no heredoc marker."""
    match = _HEREDOC.fullmatch(word)
    if match is None or not match.group(3):
        return None
    chomp = match.group(2) == "-"
    rest = match.group(3)
    plain = process(rest, {}, "\\", skip_unset=True).words
    if len(plain) != 1:
        return None
    raw = process(rest, {}, "\\", raw_quotes=True, skip_unset=True).words
    # Quotes anywhere in the delimiter turn expansion off, as in a shell.
    quotes = plain[0].count("'") + plain[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return plain[0], quotes == raw_quotes, chomp


def split_flags(text: str) -> tuple[str, list[str]]:
    """Leading ``--flag[=value]`` words of an argument text, and the text after them.

    Quotes in a flag are removed and a backslash keeps the next character; a bare ``--``
    ends the flags.
    """
    flags: list[str] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if not text.startswith("--", pos):
            return text[pos:], flags
        word, pos = _flag_word(text, pos)
        if word == "--":
            return text[pos:], flags
        if word is not None:
            flags.append(word)


def _flag_word(text: str, pos: int) -> tuple[str | None, int]:
    """One flag word starting at ``pos``: its unquoted text (None if empty) and the next pos."""
    out: list[str] = []
    quote = ""
    blank_ok = False
    while pos < len(text):
        ch = text[pos]
        pos += 1
        if not quote and ch.isspace():
            break
        if not quote and ch in "'\"":
            quote, blank_ok = ch, True
            continue
        if quote and ch == quote:
            quote = ""
            continue
        if ch == "\\":
            if pos == len(text):
                quote = ""
                continue
            ch = text[pos]
            pos += 1
        out.append(ch)
    word = "".join(out)
    return (word if word or blank_ok else None), pos
