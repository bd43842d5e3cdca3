"""Typed instructions: flags, durations, sizes, mounts, and the whole-file checks."""

from __future__ import annotations

import pytest

from layerbuild.buildfile import (
    Add,
    Copy,
    Healthcheck,
    Mount,
    Onbuild,
    Run,
    build_instruction,
    parse,
    parse_buildfile,
)
from layerbuild.buildfile.flags import FlagError, parse_duration, parse_flags, parse_size
from layerbuild.buildfile.mounts import parse_mount
from layerbuild.errors import BuildfileError


def first(text: str):
    return parse_buildfile("FROM a\n" + text).stages[0].instructions[0]


@pytest.mark.parametrize(("text", "nanoseconds"), [
    ("0", 0), ("1ns", 1), ("1us", 1_000), ("1µs", 1_000), ("300ms", 300_000_000),
    ("1.5s", 1_500_000_000), (".5s", 500_000_000), ("5.s", 5_000_000_000),
    ("1h30m", 5_400_000_000_000), ("2h45m0.5s", 9_900_500_000_000), ("-1s", -1_000_000_000),
    ("+2m", 120_000_000_000), ("1m1m", 120_000_000_000),
])
def test_parse_duration(text: str, nanoseconds: int) -> None:
    assert parse_duration(text) == nanoseconds


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1.2.3s", ".s", "1s2", "1 s",
                                  "99999999999h"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(FlagError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [
    ("512", 512), ("1k", 1024), ("64m", 64 * 2**20), ("1g", 2**30), ("1.5G", 3 * 2**29),
    ("100kb", 102_400), ("10MiB", 10 * 2**20), ("2 t", 2 * 2**40),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "-1m", "1q", "m"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(FlagError):
        parse_size(text)


def test_parse_flags() -> None:
    flags = parse_flags(["--a=1", "--b", "--c=x", "--c=y", "--d=false"],
                        {"a": "string", "b": "bool", "c": "strings", "d": "bool", "e": "string"})
    assert flags.string("a") == "1"
    assert flags.boolean("b") and not flags.boolean("d")
    assert flags.strings("c") == ("x", "y")
    assert flags.string("e") is None and flags.strings("e") == ()


@pytest.mark.parametrize(("raw", "message"), [
    (["--nope=1"], "unknown flag: --nope"),
    (["--a=1", "--a=2"], "duplicate flag specified: --a"),
    (["--a"], "missing a value on flag: --a"),
    (["--b="], "missing a value on flag: --b"),
    (["--b=yes"], "expecting boolean value for flag --b, not: yes"),
])
def test_parse_flags_errors(raw: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        parse_flags(raw, {"a": "string", "b": "bool"})


@pytest.mark.parametrize(("value", "expected"), [
    ("target=/x", Mount(type="bind", target="/x", readonly=True)),
    ("type=cache,target=/x", Mount(type="cache", target="/x")),
    ("type=CACHE,TARGET=/x,Sharing=Shared", Mount(type="cache", target="/x", sharing="shared")),
    ("type=tmpfs,dst=/t,size=1m,ro", Mount(type="tmpfs", target="/t", size=2**20,
                                            readonly=True)),
    ("type=secret,id=a", Mount(type="secret", id="a", readonly=True)),
    ("type=secret,src=/run/a,required=true,uid=1,gid=2,mode=600",
     Mount(type="secret", source="/run/a", required=True, uid=1, gid=2, mode=0o600,
           readonly=True)),
    ("type=bind,target=$DIR,source=$SRC", Mount(type="bind", target="$DIR", source="$SRC",
                                                 readonly=True)),
    ("target=/x,rw=true", Mount(type="bind", target="/x")),
    ("target=/x,readonly=false", Mount(type="bind", target="/x")),
])
def test_parse_mount(value: str, expected: Mount) -> None:
    assert parse_mount(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("", "empty"),
    ("type=ssh", "unsupported mount type"),
    ("type=bind", "bind mount requires a target"),
    ("type=tmpfs,target=/t,source=x", "tmpfs mount takes no source"),
    ("type=bind,target=/x,mode=755", "mode not allowed"),
    ("type=bind,target=/x,size=1m", "size not allowed"),
    ("type=cache,target=/x,env=A", "env not allowed"),
    ("type=secret", "one of id, source, target or env is required"),
    ("type=secret,id=a,source=b", "both source and id"),
    ("type=secret,id=a,from=x", "secret mount should not have a from"),
    ("type=cache,target=/x,uid=abc", "invalid value 'abc' for uid"),
    ("type=cache,target=/x,uid=$UID", "does not take variables"),
    ("type=cache,target=/x,ro=maybe", "invalid value for ro"),
    ("type=cache,target=/x,sharing=everyone", "unsupported sharing value"),
    ("type=cache,target=/x,nonsense", "must be a key=value pair"),
    ('type=bind,target="/x', "invalid mount"),
])
def test_parse_mount_errors(value: str, message: str) -> None:
    with pytest.raises(FlagError, match=message):
        parse_mount(value)


def test_run_forms() -> None:
    run = first("RUN --network=none --mount=type=cache,target=/c make\n")
    assert isinstance(run, Run)
    assert run.command == "make" and run.network == "none"
    assert run.mounts == (Mount(type="cache", target="/c"),)
    assert first('RUN ["a", "b"]\n').command == ("a", "b")


def test_copy_heredoc_sources_are_separated() -> None:
    copy = first("COPY <<EOF src <<'X' /dst/\na\nEOF\nb\nX\n")
    assert isinstance(copy, Copy)
    assert copy.sources == ("src",)
    assert [h.name for h in copy.heredocs] == ["EOF", "X"]
    assert copy.dest == "/dst/"


@pytest.mark.parametrize("line", ["COPY <<  EOF /dest", "COPY <<  EOF  /dest",
                                  "ADD <<\tEOF /dest", "ONBUILD COPY << EOF /dest"])
def test_a_spaced_heredoc_is_read_but_its_source_words_are_context_paths(line: str) -> None:
    # As in BuildKit: its parser reads the body (the lexer keeps `<<  EOF` as one word), but
    # parseSourcesAndDest takes the blank-split words `<<` and `EOF`, neither a marker, as
    # context paths, and copies no heredoc.
    stage = parse_buildfile(f"FROM a\n{line}\nbody\nEOF\nUSER u\n").stages[0]
    instr, user = stage.instructions
    copy = instr.trigger if isinstance(instr, Onbuild) else instr
    assert isinstance(copy, Copy | Add)
    assert (copy.sources, copy.dest, copy.heredocs) == (("<<", "EOF"), "/dest", ())
    assert (instr.line, instr.end_line, user.line) == (2, 4, 5)


def test_only_the_heredocs_a_source_word_names_are_copied() -> None:
    copy = first("COPY <<ONE <<  TWO /dest/\n1\nONE\n2\nTWO\n")
    assert isinstance(copy, Copy)
    assert copy.sources == ("<<", "TWO")
    assert [(h.name, h.content) for h in copy.heredocs] == [("ONE", "1\n")]


def test_copy_flags() -> None:
    copy = first("COPY --from=s --chown=u --chmod=640 --link --parents --exclude=a "
                 "--exclude=b x y\n")
    assert isinstance(copy, Copy)
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents, copy.exclude) == (
        "s", "u", "640", True, True, ("a", "b"))


def test_add_refuses_copy_only_flags() -> None:
    with pytest.raises(BuildfileError, match="unknown flag: --from"):
        first("ADD --from=x a b\n")
    with pytest.raises(BuildfileError, match="unknown flag: --parents"):
        first("ADD --parents a b\n")


def test_healthcheck_values() -> None:
    check = first("HEALTHCHECK --interval=5m --timeout=3s --retries=+2 CMD [\"/ok\"]\n")
    assert isinstance(check, Healthcheck)
    assert check.test == ("CMD", "/ok")
    assert (check.interval, check.timeout, check.retries) == (300 * 10**9, 3 * 10**9, 2)
    with pytest.raises(BuildfileError, match="missing command"):
        first("HEALTHCHECK CMD []\n")
    with pytest.raises(BuildfileError, match="whole number"):
        first("HEALTHCHECK --retries=two CMD x\n")


def test_onbuild_holds_a_typed_trigger() -> None:
    onbuild = first("ONBUILD COPY --chown=a x y\n")
    assert isinstance(onbuild, Onbuild)
    assert isinstance(onbuild.trigger, Copy) and onbuild.trigger.chown == "a"
    assert onbuild.expression == "COPY --chown=a x y"


@pytest.mark.parametrize(("line", "field", "value"), [
    ("USER a b", "user", "a b"),
    ("WORKDIR /my dir", "path", "/my dir"),
    ("STOPSIGNAL SIGINT", "signal", "SIGINT"),
    ("MAINTAINER a <b@c>", "name", "a <b@c>"),
    ("VOLUME a  b", "paths", ("a", "b")),
    ("EXPOSE 1 2/udp", "ports", ("1", "2/udp")),
    ("SHELL [\"pwsh\", \"-c\"]", "shell", ("pwsh", "-c")),
    ("ENTRYPOINT []", "command", ()),
    ("ARG A B=1 C=\"x y\"", "args", None),
])
def test_simple_instructions(line: str, field: str, value: object) -> None:
    instr = first(line + "\n")
    if value is not None:
        assert getattr(instr, field) == value


def test_build_instruction_reports_path_and_line() -> None:
    node = parse("\n\nWHAT now\n").nodes[0]
    with pytest.raises(BuildfileError) as caught:
        build_instruction(node, "ctx/Buildfile")
    assert str(caught.value) == "ctx/Buildfile:3: WHAT: unknown instruction: WHAT"


def test_instructions_are_frozen_and_hashable() -> None:
    buildfile = parse_buildfile("FROM a AS b\nRUN --mount=target=/x x\nCOPY a b\n")
    stage = buildfile.stages[0]
    assert hash(stage) == hash(parse_buildfile("FROM a AS b\nRUN --mount=target=/x x\n"
                                               "COPY a b\n").stages[0])
    with pytest.raises(AttributeError):
        stage.from_instr.image = "other"  # type: ignore[misc]


def test_buildfile_stage_lookup() -> None:
    buildfile = parse_buildfile("# syntax=x\nFROM a AS One\nFROM b\n")
    assert buildfile.stage("ONE").index == 0
    assert buildfile.stage(1).from_instr.image == "b"
    assert buildfile.stage("1").index == 1
    assert buildfile.directive("SYNTAX") == "x"
    assert buildfile.directive("escape") is None
    with pytest.raises(KeyError):
        buildfile.stage("nope")
    with pytest.raises(KeyError):
        buildfile.stage(5)


def test_copy_from_image_or_variable_is_not_a_stage() -> None:
    buildfile = parse_buildfile("FROM a AS x\nCOPY --from=$STAGE a b\nCOPY --from=nginx a b\n"
                                "ONBUILD COPY --from=x a b\n")
    assert len(buildfile.stages[0].instructions) == 3
