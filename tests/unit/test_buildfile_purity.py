"""layerbuild.buildfile is pure: its modules import no file, process or network module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import layerbuild.buildfile

PACKAGE = Path(layerbuild.buildfile.__file__).resolve().parent
ALLOWED = {
    "__future__", "collections", "csv", "dataclasses", "decimal", "enum", "importlib",
    "ipaddress", "jinja2", "json", "re", "traceback", "types", "typing",
}  # importlib: the package loads its own modules on first use
ALLOWED_OWN = ("layerbuild.errors", "layerbuild.buildfile", "layerbuild.lazy")
MODULES = sorted(PACKAGE.glob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_imports_are_pure(path: Path) -> None:
    for name in imported(path):
        if name.startswith("layerbuild"):
            assert name.startswith(ALLOWED_OWN), f"{path.name} imports {name}"
        else:
            assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 420, f"{path.name} has {lines} lines: split it"


def test_public_names_have_docstrings() -> None:
    for name in layerbuild.buildfile.__all__:
        value = getattr(layerbuild.buildfile, name)
        if callable(value) and not isinstance(value, frozenset):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"
