"""Docker's variable expansion: the shell-like lexer BuildKit applies to instruction arguments.

The rules are BuildKit's (``frontend/dockerfile/shell``), not a real shell's:

- ``$A`` and ``${A}`` expand; an unset variable expands to nothing.
- ``${A:-w}`` / ``${A-w}`` give ``w`` when A is unset or empty / only when unset;
  ``${A:+w}`` / ``${A+w}`` give ``w`` when A is set and non-empty / set;
  ``${A:?msg}`` / ``${A?msg}`` are errors when A is unset or empty / unset.
  ``w`` is itself a word: it may hold quotes and further ``$`` expansions.
- ``${A#p}``, ``${A##p}``, ``${A%p}``, ``${A%%p}``, ``${A/p/r}``, ``${A//p/r}`` trim or
  replace with shell patterns (``*`` and ``?``).
- Single quotes are literal; double quotes expand ``$`` and allow escaping ``"``, ``$`` and
  the escape character; outside quotes the escape character (``\\`` or a backtick, from the
  ``# escape=`` directive) makes the next character literal.
- :func:`expand` returns one string (quotes removed, spaces kept); :func:`expand_words` also
  splits on unquoted whitespace, after expansion, as Docker does for ``EXPOSE`` and friends.
  An unquoted ``<<`` keeps the blanks after it in its word (``<<  EOF`` is one word), as
  BuildKit's lexer has done since 2025, so that a heredoc marker may have them.

Example::

    >>> expand("${NAME:-world}", {})
    'world'
    >>> expand_words('a "b c" $X', {"X": "d e"})
    ['a', 'b c', 'd', 'e']
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from layerbuild.buildfile.limits import MAX_NESTING
from layerbuild.buildfile.patterns import PatternError, pattern_regex, trim
from layerbuild.buildfile.trampoline import drive
from layerbuild.errors import BuildfileError

__all__ = [
    "EXPANDING_INSTRUCTIONS",
    "ExpansionError",
    "Processed",
    "expand",
    "expand_words",
    "expands_variables",
    "process",
]

# Instructions whose arguments Docker expands with ARG and ENV values. ARG is not in Docker's
# documented list, but BuildKit does expand ARG default values (``ARG B=$A``).
EXPANDING_INSTRUCTIONS = frozenset({
    "ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
})

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_HEREDOC_BLANKS = frozenset(" \t\r")  # what BuildKit lets stand between ``<<`` and a delimiter

_T = TypeVar("_T")
# A production of the grammar: it yields the productions it calls and is sent their results
# (run by `drive`, so that nesting depth costs no Python stack).
_Gen = Generator[Any, Any, _T]


class ExpansionError(BuildfileError):
    """A word that cannot be expanded (bad ``${...}`` syntax, unmatched quote, ``${A:?}``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, path="<expansion>")

    def located(self, path: str, line: int | None, instruction: str | None) -> BuildfileError:
        """The same error, placed at a Buildfile location for the user."""
        return BuildfileError(self.reason, path, line, instruction)


@dataclass(frozen=True)
class Processed:
    """The outcome of lexing one text: the single-word result and the split words."""

    word: str
    words: tuple[str, ...]


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand variables in ``word`` and remove quotes, keeping whitespace (BuildKit ProcessWord)."""
    return process(word, env, escape).word


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Expand variables in ``text``, then split on unquoted whitespace (BuildKit ProcessWords)."""
    return list(process(text, env, escape).words)


def expands_variables(instruction: object) -> bool:
    """Whether Docker expands variables in this instruction's arguments.

    Accepts an instruction name (``"COPY"``) or a typed instruction; an ONBUILD expands as its
    inner instruction does (when it triggers in a later build). RUN, CMD, ENTRYPOINT, SHELL and
    HEALTHCHECK are left to the shell in the container.
    """
    if isinstance(instruction, str):
        return instruction.upper() in EXPANDING_INSTRUCTIONS
    inner = getattr(instruction, "trigger", None)
    if inner is not None:
        return expands_variables(inner)
    name = getattr(instruction, "instruction", "")
    return isinstance(name, str) and name.upper() in EXPANDING_INSTRUCTIONS


def process(text: str, env: Mapping[str, str], escape: str = "\\", *, raw_quotes: bool = False,
            raw_escapes: bool = False, skip_unset: bool = False) -> Processed:
    """Lex ``text`` with every BuildKit knob: keep quotes, keep escapes, leave unset ``$X`` as is.

    Raises :class:`ExpansionError` on malformed input, and for ``${...}`` nested deeper than
    MAX_NESTING.
    """
    if escape not in ("\\", "`"):
        raise ExpansionError(f"invalid escape character {escape!r}: use \\ or `")
    lexer = _Lexer(text, env, escape, raw_quotes, raw_escapes, skip_unset)
    try:
        word, words = drive(lexer.run_until(None, raw_escapes))
    except ExpansionError as err:
        raise ExpansionError(f"failed to process {text!r}: {err.reason}") from None
    except PatternError as err:
        raise ExpansionError(f"failed to process {text!r}: {err}") from None
    return Processed(word, tuple(words))


class _Words:
    """Accumulates split words: whitespace from plain text or expansions ends a word."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.buf: list[str] = []  # joined once a word ends: adding to a str copies it
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if not ch.isspace():
            self.add_raw(ch)
        elif self.in_word and self.buf:
            # An empty quoted string leaves in_word set but adds no word, as in BuildKit.
            self.words.append("".join(self.buf))
            self.buf = []
            self.in_word = False

    def add_raw(self, text: str) -> None:
        if text:
            self.buf.append(text)
        self.in_word = True

    def add_expanded(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def finish(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
        self.buf = []
        self.in_word = False
        return self.words


class _Lexer:
    """One pass over a text; methods mirror the grammar's productions."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str, raw_quotes: bool,
                 raw_escapes: bool, skip_unset: bool) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.depth = 0  # words being lexed, one inside the other

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def run_until(self, stop: str | None, raw_escapes: bool) -> _Gen[tuple[str, list[str]]]:
        """Lex up to ``stop`` (consumed) or the end; returns the word and the split words."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise ExpansionError(f"expansions nest deeper than the maximum of {MAX_NESTING}")
            return (yield self._run_until(stop))
        finally:
            self.raw_escapes = saved
            self.depth -= 1

    def _run_until(self, stop: str | None) -> _Gen[tuple[str, list[str]]]:
        result: list[str] = []
        words = _Words()
        handlers: dict[str, Callable[[], _Gen[str]]] = {
            "$": self.dollar, '"': self.double_quote,
        }
        while self.peek():
            ch = self.peek()
            if stop is not None and ch == stop:
                self.next()
                return "".join(result), words.finish()
            if ch == "<":
                piece = self.possible_heredoc()
                result.append(piece)
                words.add_raw(piece)
                continue
            handler = handlers.get(ch)
            if handler is not None or ch == "'":
                piece = self.single_quote() if handler is None else (yield handler())
                result.append(piece)
                if ch == "$":
                    words.add_expanded(piece)
                else:
                    words.add_raw(piece)
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    words.add_raw(ch)
                    result.append(ch)
                ch = self.next()
                if not ch:
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop is not None:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.finish()

    def possible_heredoc(self) -> str:
        """``<``, or ``<<`` with the blanks that follow it, which stay in the word."""
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        start = self.pos
        while self.peek() in _HEREDOC_BLANKS:
            self.next()
        return "<<" + self.text[start:self.pos]

    def single_quote(self) -> str:
        quote = self.next()
        out = [quote] if self.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> _Gen[str]:
        quote = self.next()
        out = [quote] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if not ch:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append((yield self.dollar()))
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if not following:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        """A variable name: digits, one special parameter, or letters/digits/underscores."""
        first = self.peek()
        if first.isdecimal():
            start = self.pos
            while self.peek().isdecimal():
                self.next()
            return self.text[start:self.pos]
        if first and first in _SPECIAL_PARAMS:
            return self.next()
        start = self.pos
        while self.peek() and (self.peek().isalpha() or self.peek().isdecimal()
                               or self.peek() == "_"):
            self.next()
        return self.text[start:self.pos]

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    def dollar(self) -> _Gen[str]:
        self.next()  # the "$"
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()  # the "{"
        first = self.peek()
        if not first:
            raise ExpansionError("syntax error: missing '}'")
        if first in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value, found = self.lookup(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if ch == "/":
            return (yield self.replace(name))
        null_is_unset = ch == ":"
        modifier = ch
        if null_is_unset:
            ch = self.next()
            modifier += ch
        elif not ch:
            raise ExpansionError("syntax error: missing '}'")
        elif ch not in "+-?#%":
            raise ExpansionError(f"unsupported modifier ({ch}) in substitution")
        return (yield self.modified(name, ch, modifier, null_is_unset))

    def inner_word(self, stop: str, raw_escapes: bool, missing: str) -> _Gen[str]:
        try:
            word, _ = yield self.run_until(stop, raw_escapes)
        except ExpansionError:
            if not self.peek():
                raise ExpansionError(f"syntax error: missing {missing}") from None
            raise
        return word

    def modified(self, name: str, op: str, modifier: str, null_is_unset: bool) -> _Gen[str]:
        pattern_op = op in ("#", "%")
        if null_is_unset and pattern_op:
            raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")
        word = yield self.inner_word("}", pattern_op, "'}'")
        value, found = self.lookup(name)
        if self.skip_unset and not found:
            return "${" + name + modifier + word + "}"
        empty = not found or (null_is_unset and value == "")
        if op == "-":
            return word if empty else value
        if op == "+":
            return "" if empty else word
        if op == "?":
            if empty:
                default = "unset" if not found else "empty"
                raise ExpansionError(f"{name}: {word or 'is not allowed to be ' + default}")
            return value
        if op in ("#", "%"):
            greedy = word.startswith(op)
            return trim(value, word[1:] if greedy else word, op == "#", greedy)
        raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")

    def replace(self, name: str) -> _Gen[str]:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = yield self.inner_word("/", True, "'/' in ${}")
        replacement = yield self.inner_word("}", True, "'}'")
        value, found = self.lookup(name)
        if self.skip_unset and not found:
            slashes = "//" if replace_all else "/"
            return "${" + name + slashes + pattern + "/" + replacement + "}"
        regex = pattern_regex(pattern, greedy=True)
        return regex.sub(lambda _m: replacement, value, count=0 if replace_all else 1)
