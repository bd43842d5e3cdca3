"""Pure modules import no effectful one: the layering stays visible in the imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "layerbuild"
PURE = ["errors.py", "digest.py", "image.py", "reference.py", "buildfile"]
EFFECTFUL_STDLIB = {"os", "subprocess", "shutil", "socket", "tempfile", "fcntl", "ctypes",
                    "tarfile", "urllib", "http"}
EFFECTFUL_OURS = {"store", "layer", "archive", "ingest", "cli", "validate", "sandbox",
                  "builder", "registry", "context"}


def _files(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pure_modules_import_nothing_effectful() -> None:
    checked = 0
    for entry in PURE:
        for path in _files(entry):
            if not path.exists():
                continue
            checked += 1
            for name in _imports(path):
                top = name.split(".")[0]
                assert top not in EFFECTFUL_STDLIB, f"{path.name} imports {name}"
                if top == "layerbuild" and "." in name:
                    assert name.split(".")[1] not in EFFECTFUL_OURS, f"{path.name}: {name}"
    assert checked >= 4
