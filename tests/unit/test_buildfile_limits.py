"""Bad Buildfiles get one clear BuildfileError, and big ones parse in linear time.

No timing is asserted: inputs are sized so that quadratic or recursive code would fail
(RecursionError) or take minutes, and the limits refuse what is over them before any work.
"""

from __future__ import annotations

import pytest

from layerbuild.buildfile import (
    MAX_BUILDFILE_BYTES,
    MAX_LINE_BYTES,
    MAX_NESTING,
    Scope,
    decode_buildfile,
    expand,
    expand_words,
    parse_buildfile,
)
from layerbuild.buildfile.limits import json_depth
from layerbuild.buildfile.trampoline import drive
from layerbuild.errors import BuildfileError


def _refused(text: str) -> BuildfileError:
    with pytest.raises(BuildfileError) as caught:
        parse_buildfile(text, "ctx/Buildfile")
    return caught.value


def test_a_line_over_buildkits_limit_is_refused_naming_file_and_line() -> None:
    err = _refused("FROM a\nRUN " + "x" * 1_000_000 + "\n")
    assert str(err) == "ctx/Buildfile:2: dockerfile line greater than max allowed size of 65535"
    assert (err.path, err.line) == ("ctx/Buildfile", 2)


def test_the_line_limit_counts_utf8_bytes() -> None:
    at_limit = "LABEL a=" + "x" * (MAX_LINE_BYTES - len("LABEL a="))
    parse_buildfile(f"FROM a\n{at_limit}\n")
    assert _refused(f"FROM a\n{at_limit}x\n").line == 2
    two_bytes = "LABEL a=" + "é" * 33_000  # 33,008 characters, 66,008 bytes
    assert _refused(f"FROM a\n{two_bytes}\n").line == 2
    parse_buildfile("FROM a\nLABEL a=" + "é" * 30_000 + "\n")


def test_long_lines_under_the_limit_parse_and_expand() -> None:
    value = "x" * 60_000
    parsed = parse_buildfile(f"FROM a\nRUN echo {value}\nLABEL b=\"{value}\"\n")
    run, label = parsed.stages[0].instructions
    assert run.command == f"echo {value}"  # type: ignore[attr-defined]
    assert label.pairs == (("b", f'"{value}"'),)  # type: ignore[attr-defined]
    assert expand(f'"{value}"$A', {"A": "y"}) == value + "y"
    assert expand_words(f"{value} {value}", {}) == [value, value]


def test_a_long_instruction_over_continuation_lines_parses() -> None:
    # 400,000 characters in 4,000 lines: each line is short, the instruction is not.
    text = "FROM a\nRUN " + " \\\n".join(["y" * 99] * 4_000) + "\n"
    run = parse_buildfile(text).stages[0].instructions[0]
    assert run.command == " ".join(["y" * 99] * 4_000)  # type: ignore[attr-defined]


def test_ten_thousand_env_instructions_parse_and_apply() -> None:
    text = "FROM a\n" + "".join(f"ENV V{i}=x{i}\n" for i in range(10_000))
    stage = parse_buildfile(text).stages[0]
    scope = Scope.initial().enter_stage()
    for instr in stage.instructions:
        scope = scope.apply(instr)
    assert len(scope.environment()) == 10_000
    assert scope.lookup("V9999") == "x9999"


def test_expansions_nest_five_thousand_deep() -> None:
    deep = "${A:-" * 5_000 + "x" + "}" * 5_000
    assert expand(deep, {}) == "x"
    assert expand(deep, {"A": "set"}) == "set"
    quoted = '"${A:-' * 5_000 + "x" + '}"' * 5_000
    assert expand(quoted, {}) == "x"


def test_expansions_nesting_past_the_limit_are_a_clear_error() -> None:
    deep = "${A:-" * (MAX_NESTING + 1) + "x" + "}" * (MAX_NESTING + 1)
    with pytest.raises(BuildfileError, match="nest deeper than the maximum of 10000"):
        expand(deep, {})
    unclosed = "${A:-" * 5_000
    with pytest.raises(BuildfileError, match="missing '}'"):
        expand(unclosed, {})


def test_errors_inside_deep_expansions_still_reach_the_caller() -> None:
    with pytest.raises(BuildfileError, match="B: is not allowed to be unset"):
        expand("${A:-" * 3_000 + "${B?}" + "}" * 3_000, {})


def test_exec_form_nesting_deep_is_a_clear_error() -> None:
    for depth in (1_000, 100_000):
        lines = "\\\n".join(["[" * 1_000] * (depth // 1_000) + ["]" * 1_000] * (depth // 1_000))
        err = _refused(f"FROM a\nCMD {lines}\n")
        assert "JSON arrays nest deeper than the maximum of 500" in str(err)
        assert (err.line, err.instruction) == (2, "CMD")


def test_exec_form_nesting_a_little_is_refused_as_docker_does() -> None:
    err = _refused("FROM a\nCMD " + "[" * 300 + "]" * 300 + "\n")
    assert "arrays must be comprised of strings only" in str(err)
    assert parse_buildfile('FROM a\nCMD ["[[[", "]"]\n').stages[0].instructions[0] \
        .command == ("[[[", "]")  # type: ignore[attr-defined]


def test_json_depth_counts_outside_strings() -> None:
    assert json_depth('["[[[", "\\"[["]') == 1
    assert json_depth("[[{}], []]") == 3
    assert json_depth("echo hi") == 0


def test_a_buildfile_over_the_size_limit_is_refused() -> None:
    with pytest.raises(BuildfileError, match="larger than the maximum of 16777216 bytes") as caught:
        decode_buildfile(b"\0" * (MAX_BUILDFILE_BYTES + 1), "/dev/zero")
    assert caught.value.path == "/dev/zero"
    assert decode_buildfile(b"FROM a\n") == "FROM a\n"


def test_a_buildfile_that_is_not_utf8_names_the_byte_and_line() -> None:
    with pytest.raises(BuildfileError) as caught:
        decode_buildfile(b"FROM a\nLABEL a=\xff\n", "ctx/Buildfile")
    assert str(caught.value) == "ctx/Buildfile:2: not UTF-8 text at byte 15"


def test_drive_runs_deep_recursion_without_the_python_stack() -> None:
    def count(n: int):  # type: ignore[no-untyped-def]
        return 0 if n == 0 else 1 + (yield count(n - 1))

    assert drive(count(100_000)) == 100_000

    def failing(n: int):  # type: ignore[no-untyped-def]
        if n == 0:
            raise ValueError("bottom")
        try:
            return (yield failing(n - 1))
        except ValueError as err:
            raise ValueError(f"{err}+") from None

    with pytest.raises(ValueError, match=r"bottom\+\+\+$"):
        drive(failing(3))
