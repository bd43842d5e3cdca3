"""`layerbuild.buildfile` exports its modules' names lazily: a module that needs one part (the
ignore rules, the size limits) loads only that part, and a rebuild with nothing changed never
loads the parser."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import layerbuild.buildfile as buildfile
from layerbuild.buildfile.expand import expand

ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    return {m for m in out.split() if m.startswith("layerbuild.buildfile")}


@pytest.mark.parametrize("name", buildfile.__all__)
def test_every_name_is_its_modules_own(name: str) -> None:
    value = getattr(buildfile, name)
    home = importlib.import_module(f"layerbuild.buildfile.{buildfile._HOMES[name]}") \
        if name in buildfile._HOMES else importlib.import_module("layerbuild.buildfile.expand")
    assert value is getattr(home, name)


def test_expand_stays_the_function_once_every_module_is_loaded() -> None:
    for info in pkgutil.iter_modules(buildfile.__path__):
        importlib.import_module(f"layerbuild.buildfile.{info.name}")
    assert buildfile.expand is expand
    assert callable(buildfile.expand)
    from layerbuild.buildfile import expand as imported

    assert imported is expand


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = buildfile.no_such_name  # type: ignore[attr-defined]


def test_one_part_loads_only_that_part() -> None:
    loaded = _loaded_after("import layerbuild.buildfile.limits, layerbuild.context")
    assert "layerbuild.buildfile.instructions" not in loaded
    assert "layerbuild.buildfile.parser" not in loaded


def test_a_replayed_rebuild_loads_no_parser() -> None:
    loaded = _loaded_after("import layerbuild.cli, layerbuild.cache.records")
    assert not loaded & {"layerbuild.buildfile.instructions", "layerbuild.buildfile.parser",
                         "layerbuild.buildfile.stages", "layerbuild.buildfile.args"}
