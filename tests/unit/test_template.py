"""Templated Buildfiles: strict Jinja2 rendering and variable files."""

from __future__ import annotations

import pytest

from layerbuild.buildfile import is_template, parse_buildfile, parse_var_file, render_template
from layerbuild.errors import BuildfileError


def test_render_keeps_trailing_newline() -> None:
    assert render_template("FROM {{ base }}\n", {"base": "alpine"}) == "FROM alpine\n"


def test_render_then_parse() -> None:
    text = ("FROM {{ base }}\n{% for pkg in packages.split(',') %}"
            "RUN apk add {{ pkg }}\n{% endfor %}")
    rendered = render_template(text, {"base": "alpine", "packages": "git,curl"})
    stages = parse_buildfile(rendered).stages
    assert [i.command for i in stages[0].instructions] == ["apk add git", "apk add curl"]


def test_docker_variables_pass_through() -> None:
    assert render_template("ENV A=${B} C=$D\n", {}) == "ENV A=${B} C=$D\n"


def test_undefined_variable_names_it_and_its_line() -> None:
    with pytest.raises(BuildfileError) as caught:
        render_template("FROM alpine\n\nRUN echo {{ missing }}\n", {}, "Buildfile.j2")
    err = caught.value
    assert err.line == 3
    assert "'missing'" in str(err)
    assert str(err).startswith("Buildfile.j2:3:")


def test_undefined_in_a_loop_and_a_condition() -> None:
    with pytest.raises(BuildfileError) as caught:
        render_template("FROM a\n{% if flag %}\nRUN x\n{% endif %}\n", {})
    assert caught.value.line == 2
    assert "'flag'" in str(caught.value)


def test_syntax_error_has_its_line() -> None:
    with pytest.raises(BuildfileError) as caught:
        render_template("FROM a\nRUN x\n{% if %}\n", {}, "t.j2")
    assert caught.value.line == 3
    assert "syntax error" in str(caught.value)


def test_unclosed_block_is_a_syntax_error() -> None:
    with pytest.raises(BuildfileError) as caught:
        render_template("FROM a\n{% for x in y %}\nRUN x\n", {"y": "ab"})
    assert "syntax error" in str(caught.value)


def test_sandbox_refuses_python_internals() -> None:
    with pytest.raises(BuildfileError):
        render_template("{{ base.__class__.__mro__ }}", {"base": "x"})


@pytest.mark.parametrize(("path", "expected"), [
    ("Buildfile.j2", True), ("dir/Dockerfile.j2", True), ("Buildfile", False),
    ("Buildfile.j2.bak", False), ("j2", False),
])
def test_is_template(path: str, expected: bool) -> None:
    assert is_template(path) is expected


def test_var_file_lines() -> None:
    text = "# comment\n\nBASE=alpine:3.19\nEMPTY=\n  SPACED = keep me \nEQ=a=b\r\n"
    assert parse_var_file(text, "vars.env") == {
        "BASE": "alpine:3.19", "EMPTY": "", "SPACED": " keep me ", "EQ": "a=b",
    }


def test_var_file_json() -> None:
    text = '{"BASE": "alpine", "COUNT": 3, "DEBUG": true, "RATIO": 1.5}'
    assert parse_var_file(text) == {"BASE": "alpine", "COUNT": "3", "DEBUG": "true",
                                    "RATIO": "1.5"}


@pytest.mark.parametrize(("text", "line"), [
    ("A=1\nno equals here\n", 2),
    ("A=1\n1BAD=x\n", 2),
    ('{"A": 1,\n "B": }', 2),
    ('{"A": [1, 2]}', 1),
    ('{"A": null}', 1),
])
def test_var_file_errors(text: str, line: int) -> None:
    with pytest.raises(BuildfileError) as caught:
        parse_var_file(text, "vars")
    assert caught.value.line == line
    assert caught.value.path == "vars"


def test_json_array_is_not_a_var_file() -> None:
    with pytest.raises(BuildfileError):
        parse_var_file('["a"]')
