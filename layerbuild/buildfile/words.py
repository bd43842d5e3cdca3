"""How instruction arguments split into words before any expansion, as Docker's parser does.

Three shapes: whitespace-separated words (FROM, EXPOSE, COPY's shell form), quote-aware words
that keep their quotes and escapes for later expansion (ENV, LABEL, ARG), and ``key=value``
pairs built from those (with ENV's and LABEL's legacy ``KEY value`` form).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from layerbuild.buildfile.expand import ExpansionError
from layerbuild.buildfile.parser import Heredoc, parse_heredoc_marker

__all__ = ["heredoc_sources", "name_value_pairs", "parse_words", "whitespace_split"]

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


def whitespace_split(text: str) -> list[str]:
    """Words separated by blanks; quotes mean nothing here (``COPY "a b" c`` is 3 words)."""
    return [word for word in _WHITESPACE.split(text.strip()) if word] if text.strip() else []


def parse_words(text: str, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escape characters in each word.

    ``a="b c" d`` gives ``['a="b c"', 'd']``; the quotes go when the word is expanded.
    """
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    in_word = False
    pos = 0
    while pos < len(text):
        ch = text[pos]
        pos += 1
        if not in_word:
            if ch.isspace():
                continue
            in_word = True
        if not quote:
            if ch.isspace():
                if blank_ok or word:
                    words.append("".join(word))
                word, blank_ok, in_word = [], False, False
                continue
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if pos == len(text):
                    continue  # an escape character at the very end is dropped
                word.append(ch)
                ch = text[pos]
                pos += 1
            word.append(ch)
            continue
        if ch == quote:
            quote = ""
        elif ch == escape and quote != "'":
            if pos == len(text):
                quote = ""
                continue
            word.append(ch)
            ch = text[pos]
            pos += 1
        word.append(ch)
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def name_value_pairs(text: str, instruction: str,
                     escape: str = "\\") -> tuple[tuple[str, str], ...]:
    """ENV/LABEL arguments: ``k=v k2="v 2"``, or the legacy single ``KEY value with spaces``.

    Raises ValueError with Docker's wording for a missing ``=`` or a blank name.
    """
    words = parse_words(text, escape)
    if not words:
        raise ValueError(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        parts = _WHITESPACE.split(text.strip(), maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{instruction} must have two arguments (or use {instruction} "
                             "name=value)")
        return ((parts[0], parts[1]),)
    pairs = []
    for word in words:
        if "=" not in word:
            raise ValueError(f"syntax error - can't find = in {word!r}. Must be of the form: "
                             "name=value")
        name, _, value = word.partition("=")
        if not name:
            raise ValueError(f"{instruction} names can not be blank")
        pairs.append((name, value))
    return tuple(pairs)


def heredoc_sources(words: Sequence[str], heredocs: Iterable[Heredoc],
                    ) -> tuple[list[str], list[Heredoc]]:
    """COPY/ADD sources split as BuildKit's ``parseSourcesAndDest`` splits them: the words
    that are not heredoc markers (context paths), and the heredocs the marker words name, in
    their order.

    A heredoc the line declares but no source word names is not copied: ``COPY <<  EOF /d``
    declares ``EOF`` (the lexer keeps ``<<  EOF`` as one word, so its body is read), yet its
    source words, split on blanks, are ``<<`` and ``EOF``, two context paths.
    """
    declared = {heredoc.name: heredoc for heredoc in heredocs}  # a repeated name: the last
    paths: list[str] = []
    named: list[Heredoc] = []
    for word in words:
        try:
            marker = parse_heredoc_marker(word)
        except ExpansionError:
            marker = None
        if marker is not None and marker[0] in declared:
            named.append(declared[marker[0]])
        else:
            paths.append(word)
    return paths, named
