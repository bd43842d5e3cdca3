"""Differential check against dockerfile-parse: for golden cases without heredocs, both
parsers must find the same instructions on the same start lines.

dockerfile-parse is a line splitter, so it only serves where it is right. The cases where it
is known to be wrong are marked as expected failures (strict, so a fixed release shows up).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from layerbuild.buildfile import Buildfile, parse_buildfile

dockerfile_parse = pytest.importorskip("dockerfile_parse")

CASES = Path(__file__).resolve().parent.parent / "data" / "buildfiles"

# Where dockerfile-parse departs from Docker's own parser.
KNOWN_WRONG = {
    "bom": "dockerfile-parse keeps a UTF-8 BOM as part of the first line",
    "continuation-comments": "dockerfile-parse ends an instruction at a blank line inside a "
                             "continuation",
    "dangling-continuation": "dockerfile-parse drops an instruction whose continuation is "
                             "still open at the end of the file",
}


def has_heredocs(buildfile: Buildfile) -> bool:
    for stage in buildfile.stages:
        for instr in stage.instructions:
            trigger = getattr(instr, "trigger", instr)
            if getattr(trigger, "heredocs", ()):
                return True
    return False


def ours(buildfile: Buildfile) -> list[tuple[str, int]]:
    found = [(arg.instruction, arg.line) for arg in buildfile.global_args]
    for stage in buildfile.stages:
        found.append(("FROM", stage.from_instr.line))
        found.extend((instr.instruction, instr.line) for instr in stage.instructions)
    return sorted(found, key=lambda item: item[1])


def theirs(data: bytes) -> list[tuple[str, int]]:
    parser = dockerfile_parse.DockerfileParser(fileobj=io.BytesIO(data))
    return [(item["instruction"], item["startline"] + 1) for item in parser.structure
            if item["instruction"] != "COMMENT"]


def cases() -> list[object]:
    params: list[object] = []
    for case in sorted(p for p in CASES.iterdir() if (p / "Buildfile").exists()):
        data = (case / "Buildfile").read_bytes()
        if has_heredocs(parse_buildfile(data.decode("utf-8"))):
            continue  # dockerfile-parse reads heredoc bodies as instructions
        marks = []
        if case.name in KNOWN_WRONG:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_WRONG[case.name]))
        params.append(pytest.param(case.name, data, id=case.name, marks=marks))
    return params


@pytest.mark.parametrize(("name", "data"), cases())
def test_same_instructions_and_lines(name: str, data: bytes) -> None:
    assert ours(parse_buildfile(data.decode("utf-8"))) == theirs(data), name


def test_enough_cases_compared() -> None:
    assert len(cases()) - len(KNOWN_WRONG) >= 15
