"""Variable expansion: a table of cases in tests/data/expand_cases.txt, plus word splitting,
the backtick escape character and which instructions expand."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.buildfile import ExpansionError, expand, expand_words, expands_variables
from layerbuild.buildfile.expand import process
from layerbuild.buildfile.instructions import Cmd, Copy, Onbuild, Run
from layerbuild.errors import BuildfileError

CASES_FILE = Path(__file__).resolve().parent.parent / "data" / "expand_cases.txt"
ENV = {
    "PWD": "/home",
    "SHELL": "bash",
    "KOREAN": "한국어",
    "EMPTY": "",
    "FILE": "archive.tar.gz",
}


def load_cases() -> list[tuple[int, str, str]]:
    cases = []
    for number, line in enumerate(CASES_FILE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        source, sep, expected = line.partition("|")
        assert sep, f"line {number}: no '|'"
        cases.append((number, source.strip(), expected.strip()))
    return cases


CASES = load_cases()


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(("number", "source", "expected"), CASES,
                         ids=[f"line{n}" for n, _, _ in CASES])
def test_expand_table(number: int, source: str, expected: str) -> None:
    if expected == "error":
        with pytest.raises(ExpansionError):
            expand(source, ENV)
    else:
        assert expand(source, ENV) == expected, f"{CASES_FILE.name}:{number}"


WORDS = [
    ("hello", ["hello"]),
    ("hello${hi}bye", ["hellobye"]),
    ("a   b\tc", ["a", "b", "c"]),
    ('a "b c" d', ["a", "b c", "d"]),
    ("hello${SPACE}bye", ["helloabc", "defbye"]),
    ('hello"${SPACE}"bye', ["helloabc  defbye"]),
    ('hello "${SPACE}"bye', ["hello", "abc  defbye"]),
    ("hello${LEADING}def", ["hello", "ab", "cdef"]),
    ('hello"${LEADING}" def', ["hello  ab c", "def"]),
    ("hello${TRAILING}d", ["helloab", "c", "d"]),
    ('hello"${TRAILING}"d', ["helloab c   d"]),
    ("hello${EMPTY}\\ ", ["hello "]),
    ("8080 ${PORTS}", ["8080", "80", "443"]),
    ('""', []),
    ("''  x", ["x"]),
    ("${UNSET:-a b}", ["a", "b"]),
    ('"${UNSET:-a b}"', ["a b"]),
    # An unquoted << keeps the blanks after it (BuildKit's lexer since 2025): one word.
    ("cat <<  EOF > f", ["cat", "<<  EOF", ">", "f"]),
    ("<<\t\r-X", ["<<\t\r-X"]),
    ("a <b < c", ["a", "<b", "<", "c"]),
    ("<<<  x", ["<<<", "x"]),
    ('"<<"  x', ["<<", "x"]),
    ("x\\<<  y", ["x<<", "y"]),
]
WORDS_ENV = {
    "SPACE": "abc  def", "LEADING": "  ab c", "TRAILING": "ab c   ", "EMPTY": "",
    "PORTS": "80 443",
}


@pytest.mark.parametrize(("source", "expected"), WORDS)
def test_expand_words(source: str, expected: list[str]) -> None:
    assert expand_words(source, WORDS_ENV) == expected


def test_process_word_keeps_inner_spaces() -> None:
    assert expand("a   $SPACE  b", WORDS_ENV) == "a   abc  def  b"
    assert expand("cat <<  EOF", {}) == "cat <<  EOF"


@pytest.mark.parametrize(("source", "expected"), [
    ("C:\\app", "C:\\app"),
    ("`$PWD", "$PWD"),
    ("a`\tb", "a\tb"),
    ('"x`"y"', 'x"y'),
    ('"$PWD`$"', "/home$"),
    ("'`'", "`"),
])
def test_backtick_escape(source: str, expected: str) -> None:
    assert expand(source, ENV, escape="`") == expected


def test_raw_modes_used_for_heredoc_detection() -> None:
    processed = process("cat <<'EOF' \\$X $Y", {}, raw_quotes=True, raw_escapes=True,
                        skip_unset=True)
    assert processed.words == ("cat", "<<'EOF'", "\\$X", "$Y")


def test_error_message_and_location() -> None:
    with pytest.raises(ExpansionError) as caught:
        expand("${NAME:?give a name}", {})
    assert "NAME: give a name" in str(caught.value)
    located = caught.value.located("Buildfile", 7, "COPY")
    assert isinstance(located, BuildfileError)
    assert str(located).startswith("Buildfile:7: COPY:")


def test_invalid_escape_character() -> None:
    with pytest.raises(ExpansionError):
        expand("x", {}, escape="/")


@pytest.mark.parametrize("name", ["ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL",
                                  "USER", "VOLUME", "WORKDIR", "ARG", "copy"])
def test_expanding_instructions(name: str) -> None:
    assert expands_variables(name)


@pytest.mark.parametrize("name", ["RUN", "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK",
                                  "MAINTAINER", "ONBUILD"])
def test_non_expanding_instructions(name: str) -> None:
    assert not expands_variables(name)


def test_expands_typed_and_onbuild_inner() -> None:
    copy = Copy(sources=("a",), dest="b", line=1, end_line=1)
    run = Run(command="echo $X", line=1, end_line=1)
    assert expands_variables(copy)
    assert not expands_variables(run)
    assert not expands_variables(Cmd(command=("x",), line=1, end_line=1))
    assert expands_variables(Onbuild(trigger=copy, expression="COPY a b", line=1, end_line=1))
    assert not expands_variables(Onbuild(trigger=run, expression="RUN x", line=1, end_line=1))
