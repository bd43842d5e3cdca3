"""`requires-python` says 3.11, and Debian 12's python3 is 3.11.2: nothing in the package or
its tests may use what later 3.11 releases added, such as tarfile's extraction filters
(3.11.4). scripts/test runs the whole suite on that python3; this names each use at once,
also on a newer Python."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEWER = re.compile(r"\bextractall\([^)]*filter=|\.extract\([^)]*filter=|\bdata_filter\b|"
                   r"\btar_filter\b|\bfully_trusted_filter\b|\bextraction_filter\b|"
                   r"unpack_archive\([^)]*filter=")


def test_requires_python_is_the_oldest_python_supported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"


def test_no_code_uses_tarfile_extraction_filters() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}"
             for folder in ("layerbuild", "tests", "benchmarks")
             for path in sorted((ROOT / folder).rglob("*.py")) if path != Path(__file__)
             for n, line in enumerate(path.read_text().splitlines(), 1) if NEWER.search(line)]
    assert found == [], "tarfile's filters are not in Python 3.11.0-3.11.3 (Debian 12: 3.11.2)"
