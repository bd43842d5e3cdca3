"""ARG scoping: globals, re-declaration, defaults, --build-arg, proxy and platform args, ENV."""

from __future__ import annotations

import pytest

from layerbuild.buildfile import (
    PLATFORM_ARGS,
    Arg,
    Buildfile,
    ExpansionError,
    Platform,
    Scope,
    expand,
    parse_buildfile,
    platform_args,
    proxy_environment,
    target_stage_args,
    unused_build_args,
)

AMD64 = Platform.parse("linux/amd64")
ARM = Platform.parse("linux/arm/v7")


def walk(text: str, build_args: dict[str, str] | None = None, stage: int = 0,
         upto: int | None = None, automatic: dict[str, str] | None = None,
         base_env: dict[str, str] | None = None) -> tuple[Buildfile, Scope, Scope]:
    """Parse, apply the global ARGs, then the first ``upto`` instructions of ``stage``."""
    buildfile = parse_buildfile(text)
    scope = Scope.initial(build_args or {}, automatic if automatic is not None
                          else platform_args(AMD64))
    for arg in buildfile.global_args:
        scope = scope.apply(arg, buildfile.escape)
    global_scope = scope
    scope = scope.enter_stage(base_env or {})
    for instr in buildfile.stages[stage].instructions[:upto]:
        scope = scope.apply(instr, buildfile.escape)
    return buildfile, global_scope, scope


def test_global_args_expand_in_from() -> None:
    text = "ARG IMAGE=alpine\nARG TAG=3.19\nFROM ${IMAGE}:${TAG}\n"
    buildfile, global_scope, _ = walk(text)
    image = expand(buildfile.stages[0].from_instr.image, global_scope.environment())
    assert image == "alpine:3.19"


def test_build_arg_overrides_global_default() -> None:
    _, global_scope, _ = walk("ARG TAG=3.19\nFROM alpine:$TAG\n", {"TAG": "edge"})
    assert global_scope.lookup("TAG") == "edge"


def test_global_default_may_use_earlier_globals() -> None:
    _, global_scope, _ = walk("ARG A=x\nARG B=${A}-y\nFROM s\n")
    assert global_scope.lookup("B") == "x-y"


def test_global_not_visible_in_stage_until_redeclared() -> None:
    text = "ARG VERSION=1.0\nFROM alpine\nRUN echo $VERSION\nARG VERSION\nRUN echo $VERSION\n"
    _, _, before = walk(text, upto=1)
    assert before.lookup("VERSION") is None
    _, _, after = walk(text, upto=2)
    assert after.lookup("VERSION") == "1.0"


def test_redeclared_global_takes_the_build_arg() -> None:
    _, _, scope = walk("ARG V=1\nFROM a\nARG V\n", {"V": "2"})
    assert scope.lookup("V") == "2"


def test_stage_default_beats_global_default() -> None:
    _, _, scope = walk("ARG V=global\nFROM a\nARG V=local\n")
    assert scope.lookup("V") == "local"


def test_build_arg_beats_stage_default() -> None:
    _, _, scope = walk("FROM a\nARG V=local\n", {"V": "given"})
    assert scope.lookup("V") == "given"


def test_arg_without_value_is_unset() -> None:
    _, _, scope = walk("FROM a\nARG V\n")
    assert scope.lookup("V") is None
    assert expand("${V-unset}", scope.environment()) == "unset"
    assert "V" not in scope.environment()


def test_empty_default_is_set() -> None:
    _, _, scope = walk("FROM a\nARG V=\n")
    assert scope.lookup("V") == ""
    assert expand("${V-unset}|${V:-empty}", scope.environment()) == "|empty"


def test_stage_args_do_not_leak_into_the_next_stage() -> None:
    text = "FROM a\nARG V=1\nFROM b\nRUN echo $V\n"
    _, _, scope = walk(text, stage=1)
    assert scope.lookup("V") is None


def test_a_default_is_not_evaluated_when_a_build_arg_gives_the_value() -> None:
    for text in ("ARG FOO=${FOO:?required}\nFROM a\n", "FROM a\nARG FOO=${FOO:?required}\n"):
        _, global_scope, scope = walk(text, {"FOO": "bar"})
        assert (global_scope if text.startswith("ARG") else scope).lookup("FOO") == "bar"
        with pytest.raises(ExpansionError, match="FOO: required"):
            walk(text)


@pytest.mark.parametrize("text", ["ARG A=1 B=$A C=${B}2\nFROM a\n",
                                  "FROM a\nARG A=1 B=$A C=${B}2\n"])
def test_each_default_sees_the_args_declared_before_it(text: str) -> None:
    _, global_scope, scope = walk(text)
    found = global_scope if text.startswith("ARG") else scope
    assert [found.lookup(n) for n in "ABC"] == ["1", "1", "12"]
    _, global_scope, scope = walk(text, {"A": "given"})
    found = global_scope if text.startswith("ARG") else scope
    assert [found.lookup(n) for n in "ABC"] == ["given", "given", "given2"]


def test_history_shows_defaults_as_resolved() -> None:
    buildfile = parse_buildfile("FROM a\nARG A=1 B=$A C D=${D:?no} E=$A$A\n")
    (arg,) = buildfile.stages[0].instructions
    assert isinstance(arg, Arg)
    scope = Scope.initial({"D": "given", "E": "other"}).enter_stage()
    # E's default is expanded for history even though E is given (Docker 20.10 records it);
    # D's cannot be, and is never evaluated, so the given value shows.
    assert scope.shown_defaults(arg) == [
        ("A", "1"), ("B", "1"), ("C", None), ("D", "given"), ("E", "11")]
    with pytest.raises(ExpansionError):
        Scope.initial().enter_stage().shown_defaults(arg)


def test_arg_defaults_expand_with_stage_values() -> None:
    _, _, scope = walk("FROM a\nENV BASE=/opt\nARG DIR=$BASE/app\n")
    assert scope.lookup("DIR") == "/opt/app"


@pytest.mark.parametrize("name", ["HTTP_PROXY", "https_proxy", "NO_PROXY", "all_proxy",
                                  "FTP_PROXY"])
def test_proxy_args_need_no_declaration_and_reach_run_under_both_spellings(name: str) -> None:
    given = {name: "http://proxy:3128"}
    buildfile, global_scope, scope = walk("FROM a\nRUN true\n", given)
    assert unused_build_args(buildfile, {name: "x"}) == []
    assert proxy_environment(given) == {name.upper(): "http://proxy:3128",
                                        name.lower(): "http://proxy:3128"}
    # Only RUN gets them (BuildKit's executor adds them): not expansion, history or cache keys.
    assert scope.lookup(name) is None and name not in scope.environment()
    assert global_scope.lookup(name) is None  # not a global: FROM does not see it


def test_proxy_environment_covers_every_proxy_and_prefers_the_upper_case_spelling() -> None:
    given = {"http_proxy": "lower", "HTTP_PROXY": "upper", "Https_Proxy": "mixed",
             "ftp_proxy": "f", "NO_PROXY": "localhost", "all_proxy": "socks5://s", "OTHER": "x",
             "https_proxy": ""}
    assert proxy_environment(given) == {
        "HTTP_PROXY": "upper", "http_proxy": "upper", "HTTPS_PROXY": "mixed",
        "https_proxy": "mixed", "FTP_PROXY": "f", "ftp_proxy": "f", "NO_PROXY": "localhost",
        "no_proxy": "localhost", "ALL_PROXY": "socks5://s", "all_proxy": "socks5://s"}
    assert proxy_environment({"HTTP_PROXY": ""}) == {}


def test_a_declared_proxy_arg_is_an_ordinary_arg() -> None:
    _, _, scope = walk("FROM a\nARG http_proxy\n", {"http_proxy": "p"})
    assert scope.environment() == {"http_proxy": "p"}


def test_undeclared_other_build_args_are_invisible_and_reported() -> None:
    buildfile, _, scope = walk("FROM a\nRUN true\n", {"SECRET": "x"})
    assert scope.lookup("SECRET") is None
    assert unused_build_args(buildfile, {"SECRET": "x", "HTTP_PROXY": "p"}) == ["SECRET"]


def test_unused_build_args_counts_global_and_stage_declarations() -> None:
    buildfile = parse_buildfile("ARG G\nFROM a\nARG S1 S2=x\nFROM b\nARG T\n")
    given = ["G", "S2", "T", "NOPE", "TARGETARCH", "ZZZ"]
    assert unused_build_args(buildfile, given) == ["NOPE", "ZZZ"]


def test_platform_args_are_automatic_globals() -> None:
    automatic = platform_args(AMD64, ARM)
    text = "FROM --platform=$BUILDPLATFORM golang\nRUN echo $TARGETARCH\nARG TARGETARCH\n"
    buildfile, global_scope, before = walk(text, automatic=automatic, upto=1)
    assert expand(buildfile.stages[0].from_instr.platform or "",
                  global_scope.environment()) == "linux/amd64"
    assert before.lookup("TARGETARCH") is None
    _, _, after = walk(text, automatic=automatic, upto=2)
    assert after.lookup("TARGETARCH") == "arm"
    assert set(automatic) == PLATFORM_ARGS
    assert automatic["TARGETVARIANT"] == "v7"
    assert automatic["TARGETPLATFORM"] == "linux/arm/v7"
    assert automatic["BUILDVARIANT"] == ""


def test_target_stage_is_an_automatic_global() -> None:
    buildfile = parse_buildfile("FROM a AS build\nFROM b\n")
    assert target_stage_args(buildfile.stages[0]) == {"TARGETSTAGE": "build"}
    assert target_stage_args(buildfile.stages[1]) == {"TARGETSTAGE": "default"}
    text = "FROM a AS Build\nRUN x\nARG TARGETSTAGE\n"
    automatic = {**platform_args(AMD64), **target_stage_args(parse_buildfile(text).stages[0])}
    buildfile, global_scope, before = walk(text, automatic=automatic, upto=1)
    assert global_scope.lookup("TARGETSTAGE") == "build"
    assert before.lookup("TARGETSTAGE") is None  # like the platform args: ARG brings it in
    _, _, after = walk(text, automatic=automatic)
    assert after.lookup("TARGETSTAGE") == "build"
    assert unused_build_args(buildfile, ["TARGETSTAGE"]) == []


def test_global_redeclaration_keeps_the_automatic_value() -> None:
    _, global_scope, _ = walk("ARG TARGETOS\nFROM a\n")
    assert global_scope.lookup("TARGETOS") == "linux"


def test_env_beats_arg_of_the_same_name() -> None:
    _, _, scope = walk("FROM a\nARG V=arg\nENV V=env\n", {"V": "given"})
    assert scope.lookup("V") == "env"
    _, _, scope = walk("FROM a\nENV V=env\nARG V=arg\n", {"V": "given"})
    assert scope.lookup("V") == "env"


def test_base_image_env_is_in_scope_and_beats_args() -> None:
    _, _, scope = walk("FROM a\nARG PATH=x\nENV B=$PATH:/y\n", base_env={"PATH": "/usr/bin"})
    assert scope.lookup("PATH") == "/usr/bin"
    assert scope.lookup("B") == "/usr/bin:/y"


def test_one_env_instruction_expands_with_the_values_before_it() -> None:
    _, _, scope = walk("FROM a\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n")
    assert scope.lookup("def") == "hello"
    assert scope.lookup("ghi") == "bye"


def test_env_values_lose_their_quotes() -> None:
    _, _, scope = walk('FROM a\nENV A="two words" B=\'$lit\' C=esc\\ aped\n')
    assert (scope.lookup("A"), scope.lookup("B"), scope.lookup("C")) == (
        "two words", "$lit", "esc aped")


def test_env_names_expand_too() -> None:
    _, _, scope = walk('FROM a\nARG K=key\nENV $K=v "quoted"=q\n')
    assert (scope.lookup("key"), scope.lookup("quoted")) == ("v", "q")


def test_scope_is_immutable() -> None:
    scope = Scope.initial({}, {}).enter_stage()
    changed = scope.declare_arg("A", "1").set_env("B", "2")
    assert scope.lookup("A") is None and scope.lookup("B") is None
    assert changed.environment() == {"A": "1", "B": "2"}


def test_other_instructions_leave_the_scope_alone() -> None:
    buildfile = parse_buildfile("FROM a\nRUN x\nWORKDIR /w\n")
    scope = Scope.initial().enter_stage()
    for instr in buildfile.stages[0].instructions:
        assert scope.apply(instr) == scope


@pytest.mark.parametrize(("text", "expected"), [
    ("linux/amd64", Platform("linux", "amd64")),
    ("Linux/ARM64/v8", Platform("linux", "arm64", "v8")),
])
def test_platform_parse(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected
    assert str(expected) == text.lower()


@pytest.mark.parametrize("text", ["linux", "linux/", "a/b/c/d", ""])
def test_platform_parse_errors(text: str) -> None:
    with pytest.raises(ValueError):
        Platform.parse(text)
