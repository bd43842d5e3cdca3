"""History `created_by` in BuildKit's wording, and the Go formatting it relies on.

The expected strings are what Docker 20.10's BuildKit wrote for the same instructions
(tests/integration/test_conformance.py compares whole builds against it).
"""

from __future__ import annotations

import pytest

from layerbuild.builder.config import (
    apply_metadata,
    created_by,
    go_duration,
    go_quote,
    with_default_path,
)
from layerbuild.builder.plan import run_script
from layerbuild.builder.steptext import step_text
from layerbuild.buildfile import Run, Workdir, parse_buildfile
from layerbuild.image import empty_config


@pytest.mark.parametrize(("text", "quoted"), [
    ("plain", '"plain"'),
    ('say "hi"\\', '"say \\"hi\\"\\\\"'),
    ("tab\there\n", '"tab\\there\\n"'),
    ("ü€", '"ü€"'),
    ("\x01\x7f", '"\\x01\\x7f"'),
    ("\u200b", '"\\u200b"'),
])
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (5_000_000_000, "5s"), (90_000_000_000, "1m30s"), (1_500_000_000, "1.5s"),
    (300_000_000, "300ms"), (3_600_000_000_000, "1h0m0s"), (1_500, "1.5µs"), (7, "7ns"),
])
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


CASES = [
    ("ENV A=1 B=\"two words\" C=$X", "ENV A=1 B=two words C=x"),
    ("LABEL \"a b\"=c d=$X", "LABEL a b=c d=x"),
    ("ARG N=$X", "ARG N=x"),
    ("EXPOSE 80 8000-8001/udp 443/tcp", "EXPOSE map[443/tcp:{} 80/tcp:{} 8000/udp:{} 8001/udp:{}]"),
    ("VOLUME [\"/a\", \"/b\"]", "VOLUME [/a /b]"),
    ("SHELL [\"/bin/sh\", \"-ec\"]", "SHELL [/bin/sh -ec]"),
    ("CMD echo $HOME", 'CMD ["/bin/sh" "-c" "echo $HOME"]'),
    ("ENTRYPOINT [\"/bin/echo\", \"a b\"]", 'ENTRYPOINT ["/bin/echo" "a b"]'),
    ("HEALTHCHECK --interval=30s --timeout=5s --start-period=1m30s --retries=2 CMD wget -q x",
     "HEALTHCHECK &{[\"CMD-SHELL\" \"wget -q x\"] \"30s\" \"5s\" \"1m30s\" '\\x02'}"),
    ("HEALTHCHECK NONE", "HEALTHCHECK &{[\"NONE\"] \"0s\" \"0s\" \"0s\" '\\x00'}"),
    ("USER $X", "USER x"),
    ("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGTERM"),
    ("MAINTAINER Jane <j@example.com>", "MAINTAINER Jane <j@example.com>"),
    ("COPY --from=s --chown=1:1 a $X/ /dst/", "COPY a x/ /dst/ # buildkit"),
    ("ONBUILD RUN true", None),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_created_by(line: str, expected: str | None) -> None:
    instr = parse_buildfile(f"FROM base\n{line}\n", "Buildfile").stages[0].instructions[0]
    assert created_by(instr, empty_config(), {"X": "x"}) == expected


def test_run_lists_the_stage_args_with_the_values_in_force() -> None:
    instr = parse_buildfile("FROM base\nRUN echo $A\n", "B").stages[0].instructions[0]
    assert isinstance(instr, Run)
    env = {"A": "1", "C": "from env"}
    args = {"A": "1", "B": None, "C": "arg"}
    assert created_by(instr, empty_config(), env, args=args, script=run_script(instr)) == (
        "RUN |3 A=1 B= C=from env /bin/sh -c echo $A # buildkit")
    exec_form = parse_buildfile('FROM b\nRUN ["echo", "hi"]\n', "B").stages[0].instructions[0]
    assert created_by(exec_form, empty_config(), {}, script=run_script(exec_form)) == (
        "RUN echo hi # buildkit")


def test_workdir_is_written_resolved_and_path_is_always_set() -> None:
    config = empty_config()
    for path in ("rel", "sub/", "/abs/./x/"):
        instr = parse_buildfile(f"FROM b\nWORKDIR {path}\n", "B").stages[0].instructions[0]
        assert isinstance(instr, Workdir)
        config = apply_metadata(config, instr, {})
    assert created_by(instr, config, {}) == "WORKDIR /abs/x"
    assert with_default_path(config).config["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    kept = with_default_path(config.with_config(Env=["PATH=/x", "A=1"]))
    assert kept.config["Env"] == ["PATH=/x", "A=1"]


@pytest.mark.parametrize(("line", "shown"), [
    ("COPY --from=build --chown=app:app --chmod=640 --link /out /srv/",
     "COPY --from=build --chown=app:app --chmod=640 --link /out /srv/"),
    ("COPY --parents --exclude=*.tmp src/ /app/", "COPY --exclude=*.tmp --parents src/ /app/"),
    ("ADD --checksum=sha256:ab https://example.com/x.tgz /x",
     "ADD --checksum=sha256:ab https://example.com/x.tgz /x"),
    ("ADD --unpack https://example.com/x.tgz /x", "ADD --unpack=true https://example.com/x.tgz /x"),
    ("ADD --unpack=false x.tgz /x", "ADD --unpack=false x.tgz /x"),
    ("RUN --network=none --mount=type=cache,target=/root/.cache,id=pip pip install x",
     "RUN --network=none --mount=type=cache,target=/root/.cache,id=pip pip install x"),
    ("RUN --mount=type=bind,from=build,source=/out,target=/in ls /in",
     "RUN --mount=type=bind,target=/in,source=/out,from=build ls /in"),
    ("WORKDIR /app", "WORKDIR /app"),
])
def test_progress_lines_show_the_flags(line: str, shown: str) -> None:
    buildfile = parse_buildfile(f"FROM scratch AS build\nFROM scratch\n{line}\n", "Buildfile")
    assert step_text(buildfile.stages[1].instructions[0]) == shown
