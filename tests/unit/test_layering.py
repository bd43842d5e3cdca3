"""The layering, declared: every module's kind and the modules of ours it may import.

A `pure` module computes values: it imports no effectful stdlib module and, at run time, no
effectful module of ours. Only the CLI and the API reach the build engine (`builder`); inside
`builder/` it may use itself. Imports under `if TYPE_CHECKING:` load nothing at run time, so
they are checked against the row's `types` (or `uses`) but never count as effects.

Rows: dotted name (without `layerbuild.`; the package itself is `layerbuild`) ->
(kind, uses, types), the last two as space-separated names in the same form.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "layerbuild"

TABLE: dict[str, tuple[str, str, str]] = {
    "api": ("effect", "archive.load archive.rootfs archive.save builder.engine builder.outputs "
                      "buildfile.limits cache.options cache.records errors events image "
                      "reference registry request store userns", ""),
    "archive": ("pure", "", ""),
    "archive.load": ("effect", "archive.sources digest errors image ingest layer reference store",
                              ""),
    "archive.rootfs": ("effect", "errors image ingest layer reference store", ""),
    "archive.save": ("effect", "digest errors fsutil image layerblob reference store", ""),
    "archive.sources": ("effect", "errors", ""),
    "builder": ("pure", "", ""),
    "builder.bases": ("effect", "errors events image reference registry store", ""),
    "builder.config": ("pure", "buildfile errors image", ""),
    "builder.copying": ("effect", "builder.stepcontext buildfile context errors image layer "
                                  "sandbox.entries sandbox.spec users", ""),
    "builder.early": ("effect", "builder.copying builder.stepcontext buildfile digest image "
                                "sandbox.spec", ""),
    "builder.engine": ("effect", "builder builder.bases builder.config builder.early builder.plan "
                                 "builder.report builder.sandbox builder.schedule builder.shared "
                                 "builder.state builder.stepcontext builder.steps builder.steptext "
                                 "buildfile "
                                 "cache.exchange cache.index cache.inputs cache.keys "
                                 "cache.records cache.roots cache.stat context digest errors "
                                 "events fetching "
                                 "image registry registry.platforms request store", ""),
    "builder.outputs": ("effect", "archive.save errors events fsutil image reference registry "
                                  "request sandbox store", ""),
    "builder.plan": ("pure", "buildfile errors image", ""),
    "builder.report": ("effect", "events", ""),
    "builder.sandbox": ("effect", "sandbox.launch sandbox.ops sandbox.reaper", "sandbox.spec"),
    "builder.schedule": ("effect", "", ""),
    "builder.shared": ("effect", "cache.exchange cache.layout cache.options digest errors events "
                                 "image layerblob reference registry.client registry.errors "
                                 "registry.platforms registry.pull registry.push store",
                                 "registry"),
    "builder.state": ("pure", "buildfile digest image", ""),
    "builder.stepcontext": ("effect", "builder builder.config buildfile context digest errors "
                                      "image sandbox.spec store",
                                     "builder.sandbox builder.state events request"),
    "builder.steps": ("effect", "builder builder.config builder.copying builder.early builder.plan "
                                "builder.sandbox builder.stepcontext buildfile digest errors "
                                "events image ingest sandbox.spec store users", ""),
    "builder.steptext": ("pure", "builder.config buildfile", ""),
    "buildfile": ("pure", "buildfile.expand lazy", "buildfile.args buildfile.convert "
                          "buildfile.dump buildfile.ignore buildfile.instructions buildfile.limits "
                          "buildfile.mounts buildfile.parser buildfile.ports buildfile.stages "
                          "buildfile.template"),
    "buildfile.args": ("pure", "buildfile.expand buildfile.instructions buildfile.stages", ""),
    "buildfile.convert": ("pure", "buildfile.flags buildfile.healthcheck buildfile.instructions "
                                  "buildfile.mounts buildfile.parser buildfile.words errors", ""),
    "buildfile.dump": ("pure", "buildfile.stages", ""),
    "buildfile.expand": ("pure", "buildfile.limits buildfile.patterns buildfile.trampoline errors",
                                ""),
    "buildfile.flags": ("pure", "", ""),
    "buildfile.healthcheck": ("pure", "buildfile.flags buildfile.parser", ""),
    "buildfile.ignore": ("pure", "errors", ""),
    "buildfile.instructions": ("pure", "buildfile.mounts buildfile.parser", ""),
    "buildfile.limits": ("pure", "errors", ""),
    "buildfile.mounts": ("pure", "buildfile.flags", ""),
    "buildfile.parser": ("pure", "buildfile.expand buildfile.limits errors", ""),
    "buildfile.patterns": ("pure", "", ""),
    "buildfile.ports": ("pure", "", ""),
    "buildfile.stages": ("pure", "buildfile.convert buildfile.instructions buildfile.parser errors",
                                ""),
    "buildfile.template": ("pure", "errors", ""),
    "buildfile.trampoline": ("pure", "", ""),
    "buildfile.words": ("pure", "buildfile.expand buildfile.parser", ""),
    "cache": ("pure", "", ""),
    "cache.exchange": ("pure", "digest errors image", ""),
    "cache.index": ("effect", "cache.keys cache.stat digest fsutil image", ""),
    "cache.inputs": ("effect", "buildfile cache.keys cache.stat context errors", ""),
    "cache.keys": ("pure", "buildfile", ""),
    "cache.layout": ("effect", "digest errors fsutil image", ""),
    "cache.options": ("pure", "errors reference request", ""),
    "cache.records": ("effect", "cache.roots cache.stat context digest errors events fsutil "
                                "layerbuild request", "image store"),
    "cache.roots": ("effect", "digest errors", ""),
    "cache.stat": ("effect", "reading", "buildfile context"),
    "cli": ("effect", "api builder.outputs buildfile errors hostcheck imagediff layerbuild "
                      "privilege progress reference sizes store userns", ""),
    "context": ("effect", "buildfile.ignore errors", ""),
    "digest": ("pure", "errors", ""),
    "epoch": ("pure", "", ""),
    "errors": ("pure", "", ""),
    "events": ("pure", "digest", ""),
    "fetching": ("effect", "digest errors events image ingest store", ""),
    "fsutil": ("effect", "", ""),
    "hostcheck": ("effect", "nsmap sandbox sandbox.fuse sandbox.libc subids userns", ""),
    "image": ("pure", "digest errors", ""),
    "imagediff": ("effect", "digest image layer.contents store", ""),
    "ingest": ("effect", "digest epoch errors image layer layer.tree store", ""),
    "layer": ("effect", "lazy", "layer.compression layer.export layer.extract layer.probe"),
    "layer.compression": ("pure", "digest errors", ""),
    "layer.contents": ("effect", "digest errors image layer layer.export layer.tree layer.whiteout",
                                ""),
    "layer.export": ("effect", "digest epoch errors layer layer.compression layer.splice "
                               "layer.tarheader layer.tree layer.whiteout reading", ""),
    "layer.extract": ("effect", "digest errors fsutil layer layer.paths layer.tarread layer.tree "
                                "layer.whiteout userns", ""),
    "layer.paths": ("effect", "errors", ""),
    "layer.probe": ("effect", "errors layer.compression", ""),
    "layer.splice": ("effect", "layer layer.tarheader", ""),
    "layer.tarheader": ("pure", "", ""),
    "layer.tarread": ("pure", "errors", ""),
    "layer.tree": ("effect", "errors", ""),
    "layer.whiteout": ("effect", "nsmap", ""),
    "layerbuild": ("pure", "", "api"),
    "layerblob": ("effect", "digest errors image layer.compression store", ""),
    "lazy": ("pure", "", ""),
    "nsmap": ("effect", "", ""),
    "privilege": ("effect", "nsmap userns", ""),
    "progress": ("effect", "events sizes", ""),
    "reading": ("effect", "", ""),
    "reference": ("pure", "digest errors", ""),
    "registry": ("effect", "events image reference registry.client registry.credentials "
                           "registry.errors registry.hosts registry.platforms registry.pull "
                           "registry.push registry.transport store", ""),
    "registry.challenge": ("pure", "", ""),
    "registry.client": ("effect", "digest errors image reference registry registry.challenge "
                                  "registry.errors registry.hosts registry.transport", ""),
    "registry.credentials": ("effect", "errors fsutil reference", ""),
    "registry.errors": ("pure", "errors", ""),
    "registry.hosts": ("effect", "errors reference", ""),
    "registry.platforms": ("pure", "errors image", ""),
    "registry.pull": ("effect", "digest errors events fetching image reference registry.client "
                                "registry.hosts registry.platforms registry.transport store", ""),
    "registry.push": ("effect", "digest errors events image layerblob reference registry.client "
                                "registry.hosts registry.transport store", ""),
    "registry.transport": ("effect", "errors registry registry.challenge registry.credentials "
                                     "registry.errors registry.hosts", ""),
    "request": ("pure", "errors reference", "cache.options"),
    "sandbox": ("effect", "lazy", "sandbox.launch sandbox.ops sandbox.spec"),
    "sandbox.child": ("effect", "errors sandbox sandbox.copy sandbox.entries sandbox.identity "
                                "sandbox.inroot sandbox.layers sandbox.libc sandbox.step users",
                      ""),
    "sandbox.copy": ("effect", "epoch errors nsmap reading sandbox sandbox.inroot sandbox.libc",
                     ""),
    "sandbox.entries": ("pure", "", ""),
    "sandbox.fuse": ("effect", "errors layer.whiteout nsmap sandbox sandbox.libc", ""),
    "sandbox.identity": ("effect", "sandbox.inroot users", ""),
    "sandbox.inroot": ("effect", "errors sandbox sandbox.libc", ""),
    "sandbox.launch": ("effect", "errors nsmap sandbox sandbox.fuse sandbox.network sandbox.reaper "
                                 "users", ""),
    "sandbox.layers": ("effect", "errors nsmap sandbox sandbox.inroot sandbox.libc", ""),
    "sandbox.libc": ("effect", "", ""),
    "sandbox.mounts": ("effect", "errors sandbox sandbox.inroot sandbox.layers sandbox.libc", ""),
    "sandbox.network": ("effect", "errors sandbox sandbox.reaper", ""),
    "sandbox.ops": ("effect", "nsmap sandbox sandbox.fuse sandbox.launch sandbox.seccomp "
                            "sandbox.spec", ""),
    "sandbox.process": ("effect", "errors sandbox sandbox.libc sandbox.mounts sandbox.seccomp", ""),
    "sandbox.reaper": ("effect", "", ""),
    "sandbox.seccomp": ("effect", "errors fsutil sandbox sandbox.libc sandbox.seccomp_profile",
                        ""),
    "sandbox.seccomp_profile": ("pure", "", ""),
    "sandbox.spec": ("pure", "errors sandbox.entries", ""),
    "sandbox.step": ("effect", "errors sandbox sandbox.identity sandbox.inroot sandbox.layers "
                               "sandbox.libc sandbox.mounts sandbox.network sandbox.process", ""),
    "sizes": ("pure", "", ""),
    "store": ("effect", "cache.roots digest errors fsutil image nsmap reference store "
                        "store.blobs store.distribution store.images store.layers "
                        "store.staging",
                        ""),
    "store.blobs": ("effect", "digest", ""),
    "store.distribution": ("effect", "digest errors fsutil store", ""),
    "store.gc": ("effect", "cache cache.roots digest store.images store.layers store.staging", ""),
    "store.images": ("effect", "digest errors fsutil image reference", ""),
    "store.layers": ("effect", "digest errors fsutil image store.blobs store.private store.staging",
                              ""),
    "store.private": ("effect", "", ""),
    "store.staging": ("effect", "digest errors fsutil store.private", ""),
    "subids": ("pure", "", ""),
    "userns": ("effect", "errors nsmap sandbox sandbox.libc subids", ""),
    "users": ("pure", "errors", ""),
    "validate": ("effect", "archive.sources digest errors image layer", ""),
}

# Imports of the engine from outside cli/api that today's tree still has, each with where it
# is going; an entry here that the code no longer needs fails the test too.
BUILDER_EXCEPTIONS: dict[tuple[str, str], str] = {}
BUILDER_USERS = {"cli", "api"}
EFFECTFUL_STDLIB = {"os", "subprocess", "shutil", "socket", "tempfile", "fcntl", "ctypes",
                    "tarfile", "urllib", "http", "threading", "multiprocessing", "signal",
                    "select", "termios", "pty", "mmap", "asyncio"}


@dataclass(frozen=True)
class Imports:
    """What one module imports: our modules (run time and type-only) and stdlib top names."""

    ours: frozenset[str]
    types: frozenset[str]
    stdlib: frozenset[str]


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by its table name (packages by their own name)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "layerbuild"] = path
    return found


def _short(dotted: str) -> str | None:
    if dotted == "layerbuild":
        return "layerbuild"
    return dotted.removeprefix("layerbuild.") if dotted.startswith("layerbuild.") else None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _bound(init: Path) -> set[str]:
    """The names a package's `__init__` binds at its top level (an attribute of that name wins
    over a submodule of that name in `from package import name`)."""
    bound: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Assign):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return bound


def _names(node: ast.stmt, name: str, known: dict[str, Path]) -> list[str]:
    """The dotted modules one import statement loads (`from a import b`: `a`, and `a.b` too
    when that is a submodule, not a name `a` defines)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = ("layerbuild." + name).split(".")[: -node.level or None]
        base = ".".join([*package, *([base] if base else [])])
    package = known.get(_short(base) or "")
    bound = _bound(package) if package and package.name == "__init__.py" else set()
    subs = [f"{base}.{alias.name}" for alias in node.names if alias.name not in bound]
    return [base, *(sub for sub in subs if _short(sub) in known)]


def imports(path: Path, name: str, known: dict[str, Path]) -> Imports:
    """Every import in a module, wherever it is (functions too), split by TYPE_CHECKING."""
    ours: set[str] = set()
    types: set[str] = set()
    stdlib: set[str] = set()

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, type_only)
            else:
                visit_stmt(child, type_only)

    def visit_stmt(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.stmt):
            for dotted in _names(node, name, known):
                short = _short(dotted)
                if short is not None:
                    (types if type_only else ours).add(short)
                elif not type_only:
                    stdlib.add(dotted.split(".")[0])
        visit(node, type_only)

    visit(ast.parse(path.read_text()), False)
    return Imports(frozenset(ours), frozenset(types - ours), frozenset(stdlib))


def _row_problems(name: str, got: Imports, table: dict[str, tuple[str, str, str]]) -> list[str]:
    kind, uses_text, types_text = table[name]
    uses, types = set(uses_text.split()), set(types_text.split())
    problems = [f"{name}: kind {kind!r} is neither 'pure' nor 'effect'"] * (
        kind not in ("pure", "effect"))
    problems += [f"{name} imports {m}, which its row does not allow"
                 for m in sorted(got.ours - uses)]
    problems += [f"{name} imports {m} for types, which its row does not allow"
                 for m in sorted(got.types - uses - types)]
    problems += [f"{name}: its row allows {m}, which it no longer imports"
                 for m in sorted(uses - got.ours) + sorted(types - got.types - got.ours)]
    if kind == "pure":
        problems += [f"pure {name} imports effectful {m}" for m in sorted(got.stdlib)
                     if m in EFFECTFUL_STDLIB]
        problems += [f"pure {name} imports effectful layerbuild.{m}" for m in sorted(got.ours)
                     if table.get(m, ("effect",))[0] == "effect"]
    return problems


def _builder_problems(name: str, got: Imports) -> list[str]:
    if name in BUILDER_USERS or name == "builder" or name.startswith("builder."):
        return []
    return [f"{name} imports the engine ({m}): only {', '.join(sorted(BUILDER_USERS))} may"
            for m in sorted(got.ours) if (m == "builder" or m.startswith("builder."))
            and (name, m) not in BUILDER_EXCEPTIONS]


def check_layering(package: Path, table: dict[str, tuple[str, str, str]] = TABLE) -> list[str]:
    """Every way the package at `package` breaks the declared layering (empty: none)."""
    found = modules(package)
    problems = [f"{m} is not in the table" for m in sorted(set(found) - set(table))]
    problems += [f"{m} is in the table but gone" for m in sorted(set(table) - set(found))]
    for name, path in found.items():
        if name not in table:
            continue
        got = imports(path, name, found)
        problems += _row_problems(name, got, table) + _builder_problems(name, got)
    for importer, imported in BUILDER_EXCEPTIONS:
        if importer in found and imported not in imports(found[importer], importer,
                                                         found).ours:
            problems.append(f"{importer} no longer imports {imported}: drop the exception")
    return problems


def test_the_package_follows_the_table() -> None:
    assert check_layering(PACKAGE) == []


def test_pure_rows_name_only_pure_modules() -> None:
    for name, (kind, uses, _types) in TABLE.items():
        if kind == "pure":
            assert [m for m in uses.split() if TABLE[m][0] != "pure"] == [], name


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "layerbuild"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    digest = copy / "digest.py"
    digest.write_text(digest.read_text() + "\nimport layerbuild.builder.engine\n")
    problems = check_layering(copy)
    assert "digest imports builder.engine, which its row does not allow" in problems
    assert "pure digest imports effectful layerbuild.builder.engine" in problems
    assert any(p.startswith("digest imports the engine (builder.engine)") for p in problems)


def test_an_effect_in_a_pure_module_is_caught(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    image = copy / "image.py"
    image.write_text(image.read_text() + "\ndef _f():\n    import subprocess\n")
    assert check_layering(copy) == ["pure image imports effectful subprocess"]


def test_type_only_imports_are_not_effects(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    image = copy / "image.py"
    planted = "\nif TYPE_CHECKING:\n    import os\n    from layerbuild.store import Store\n"
    image.write_text(image.read_text() + planted)
    assert check_layering(copy) == ["image imports store for types, which its row does not allow"]


def test_new_and_missing_modules_are_caught(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    (copy / "extra.py").write_text("")
    (copy / "fsutil.py").unlink()
    assert check_layering(copy) == ["extra is not in the table", "fsutil is in the table but gone"]
