"""Golden Buildfile cases: each folder's Buildfile parses to its expected.json, or fails with
the text of its error.txt.

Set LAYERBUILD_REGEN=1 to rewrite the expected.json files from the current parser (then read
the diff before committing it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from layerbuild.buildfile import dumps, parse_buildfile, to_dict
from layerbuild.errors import BuildfileError

DATA = Path(__file__).resolve().parent.parent / "data"
GOOD = sorted(p for p in (DATA / "buildfiles").iterdir() if (p / "Buildfile").exists())
BAD = sorted(p for p in (DATA / "buildfiles-bad").iterdir() if (p / "Buildfile").exists())
REGEN = os.environ.get("LAYERBUILD_REGEN") == "1"


def read_buildfile(case: Path) -> str:
    # Bytes, not read_text(): universal newlines would hide the CRLF case.
    return (case / "Buildfile").read_bytes().decode("utf-8")


def test_enough_cases() -> None:
    assert len(GOOD) >= 20
    assert len(BAD) >= 12


@pytest.mark.parametrize("case", GOOD, ids=[p.name for p in GOOD])
def test_golden(case: Path) -> None:
    parsed = parse_buildfile(read_buildfile(case))
    expected_file = case / "expected.json"
    if REGEN:
        expected_file.write_text(dumps(parsed), encoding="utf-8")
    assert expected_file.exists(), "no expected.json: run with LAYERBUILD_REGEN=1"
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    assert to_dict(parsed) == expected


@pytest.mark.parametrize("case", BAD, ids=[p.name for p in BAD])
def test_bad(case: Path) -> None:
    wanted = (case / "error.txt").read_text(encoding="utf-8").strip()
    assert wanted, "error.txt must not be empty"
    with pytest.raises(BuildfileError) as caught:
        parse_buildfile(read_buildfile(case))
    assert wanted in str(caught.value)


@pytest.mark.parametrize("case", BAD, ids=[p.name for p in BAD])
def test_bad_errors_name_their_location(case: Path) -> None:
    with pytest.raises(BuildfileError) as caught:
        parse_buildfile(read_buildfile(case), path="dir/Buildfile")
    assert caught.value.path == "dir/Buildfile"
    assert caught.value.line is not None and caught.value.line >= 1
