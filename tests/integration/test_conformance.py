"""Conformance with Docker's BuildKit: the same Buildfile, built from the same base by
`layerbuild build` and by `DOCKER_BUILDKIT=1 docker build` (Docker 20.10, BuildKit 0.8),
must give the same root filesystem, the same config and the same history.

Each case is a folder under tests/data/conformance/<case>/ with a Dockerfile, its context
files and a `case.toml`:

    build_args = {NAME = "value"}   # --build-arg for both builds
    target = "stage"                # --target for both builds
    mtimes = ["/app"]               # files below these keep their context mtimes (BuildKit does)
    setup = "special"               # a function below that adds what git cannot hold
    requires = "other-case"         # built first; its image is named lbconformance-<case>:1
    docker = false                  # layerbuild only (features Docker 20.10 lacks offline)
    output = "text"                 # what the layerbuild image prints when run (docker = false)
    ignore = ["/path"]              # left out of the file comparison (BuildKit-version matters)
    layers = true                   # each layer's entries are compared too (name, type, link)
    absent = ["/path"]              # paths the layerbuild image must not have
    [expect]                        # file contents the layerbuild image must hold
    "/path" = "text"
    [owners]                        # uid and gid of files in the layerbuild image
    "/path" = [1000, 1000]

Both images end up in Docker: ours through `layerbuild save` + `docker load`, so the file
systems are compared as Docker sees them (`docker create` + `docker export`). Directory mtimes
are not compared: Docker 20.10 gives the directories COPY makes the time of the build, where
layerbuild keeps the context's (as it does for files, like BuildKit).

Image names in Dockerfiles (`lbconformance-base:1`, `lbconformance-<case>:1`) get a per-session
prefix, so that test runs sharing the Docker engine never remove each other's images.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pprint
import shutil
import subprocess
import sys
import tarfile
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from treeutil import docker_ok, need, need_root

from layerbuild.archive.sources import TarSource
from layerbuild.validate import validate_archive

CASES = Path(__file__).resolve().parent.parent / "data" / "conformance"
DOCKER = "/usr/bin/docker"  # the 20.10 client: it drives BuildKit with DOCKER_BUILDKIT=1
NAMES = "lbconformance-"
MTIME = 1_600_000_000  # every context file gets this mtime, so kept mtimes are visible
# What Docker itself puts into every container it creates.
ADDED_BY_DOCKER = frozenset({".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf",
                             "etc/mtab", "dev", "proc", "sys"})
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
               "Labels", "Healthcheck", "StopSignal", "Shell", "OnBuild")


def _cases() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "Dockerfile").is_file())


def docker(*args: str, check: bool = True, input_: bytes | None = None,
           ) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([DOCKER, *args], capture_output=True, input=input_, timeout=300,
                          env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n"
                             f"{proc.stdout.decode()}{proc.stderr.decode()}")
    return proc


@dataclass
class World:
    """The layerbuild store and the Docker names this module made."""

    root: Path
    work: Path
    tags: list[str] = field(default_factory=list)
    built: dict[str, tuple[str, str]] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"{NAMES}{uuid.uuid4().hex[:6]}-")

    def image(self, name: str) -> str:
        """This session's name for an image that Dockerfiles call `lbconformance-<name>:1`."""
        return f"{self.prefix}{name}:1"

    def lb(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(self.root),
                               *args], capture_output=True, text=True, timeout=300, cwd=cwd)
        if proc.returncode != 0:
            raise AssertionError(f"layerbuild {' '.join(args)} failed:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[World]:
    need_root()
    need(docker_ok() and Path(DOCKER).exists(),
         "needs a running Docker engine and its 20.10 client at /usr/bin/docker")
    w = World(tmp_path_factory.mktemp("conformance-store"),
              tmp_path_factory.mktemp("conformance"))
    base = w.image("base")
    w.lb("import", str(busybox_tar), base)
    docker("import", str(busybox_tar), base)
    w.tags.append(base)
    try:
        yield w
    finally:
        for tag in w.tags:
            docker("rmi", "-f", tag, check=False)
        docker("image", "prune", "-f", check=False)


# --- contexts ---------------------------------------------------------------------------

def setup_special(ctx: Path) -> None:
    """Setuid/setgid files, a hard-link pair, symlinks and a file owned by a user."""
    special = ctx / "special"
    special.mkdir()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2711), ("sticky-dir", 0o1777)):
        path = special / name
        if name.endswith("dir"):
            path.mkdir()
        else:
            path.write_text(f"{name}\n")
        os.chmod(path, mode)
    (special / "hard1").write_text("linked\n")
    os.link(special / "hard1", special / "hard2")
    (special / "rel-link").symlink_to("hard1")
    (special / "abs-link").symlink_to("/etc/motd")
    (special / "dangling").symlink_to("nowhere")
    (special / "owned").write_text("owned by 1000\n")
    os.chown(special / "owned", 1000, 1000)


def setup_archive(ctx: Path) -> None:
    """bundle.tar.gz: dirs, a setuid file, a symlink, a hard link, owners, set mtimes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "",
                uid: int = 0) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = kind, mode, uid, uid
            info.mtime, info.linkname, info.size = MTIME - 1000, link, len(data)
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("pkg", tarfile.DIRTYPE, 0o750)
        add("pkg/bin", tarfile.DIRTYPE, 0o755)
        add("pkg/bin/tool", tarfile.REGTYPE, 0o4755, b"#!/bin/sh\necho tool\n")
        add("pkg/bin/tool-link", tarfile.SYMTYPE, 0o777, link="tool")
        add("pkg/bin/tool-hard", tarfile.LNKTYPE, 0o4755, link="pkg/bin/tool")
        add("pkg/data.txt", tarfile.REGTYPE, 0o640, b"data\n", uid=1000)
    (ctx / "bundle.tar.gz").write_bytes(buf.getvalue())


def setup_tars(ctx: Path) -> None:
    """Uncompressed, xz and bzip2 tars (ADD extracts them all)."""
    for name, mode in (("plain.tar", "w"), ("xz.tar.xz", "w:xz"), ("bz.tar.bz2", "w:bz2")):
        with tarfile.open(ctx / name, mode) as tar:
            data = f"from {name}\n".encode()
            info = tarfile.TarInfo(f"{name.split('.')[0]}/file")
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME - 5
            tar.addfile(info, io.BytesIO(data))


def _member(name: str, data: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o644, MTIME - 50
    if link:
        info.type, info.linkname = tarfile.LNKTYPE, link
    else:
        info.size = len(data)
    return info, data


def _tar_of(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _v7(data: bytes) -> bytes:
    """A tar as the 7th Edition wrote it: no `ustar` magic, only a good checksum."""
    raw = bytearray(data)
    raw[257:329] = bytes(72)  # magic, version, user and group names
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    return bytes(raw)


def setup_files(ctx: Path) -> None:
    """What ADD unpacks and what it copies as is, and hard links for COPY to keep."""
    import bz2
    import gzip
    import lzma

    files = {
        "notatar.txt.gz": gzip.compress(b"hello, not a tar\n", mtime=0),
        "text.xz": lzma.compress(b"xz text\n"), "text.bz2": bz2.compress(b"bzip2 text\n"),
        "empty.gz": gzip.compress(b"", mtime=0), "ends.tar": bytes(1024),
        "badsum.tar": b"w" + _v7(_tar_of(_member("v7/f", b"v7\n")))[1:],
        "real.tar.gz": gzip.compress(_tar_of(_member("gz/tool", b"tool\n"),
                                             _member("gz/tool-hard", link="gz/tool")), mtime=0),
        "real.tar.xz": lzma.compress(_tar_of(_member("xz/f", b"xz\n"))),
        "v7.tar": _v7(_tar_of(_member("v7/f", b"v7\n"), fmt=tarfile.USTAR_FORMAT)),
        "bundle": bz2.compress(_tar_of(_member("bz/" + "n" * 120, b"long name\n"))),
    }
    for name, data in files.items():
        (ctx / name).write_bytes(data)
    (ctx / "hl/sub").mkdir(parents=True)
    (ctx / "hl/a").write_text("linked\n")
    os.link(ctx / "hl/a", ctx / "hl/sub/b")
    for one, two in (("p1", "p2"), ("w1.lnk", "w2.lnk")):
        (ctx / one).write_text(f"{one}\n")
        os.link(ctx / one, ctx / two)


def setup_gitdir(ctx: Path) -> None:
    """A .git directory (one the repository cannot hold), for .dockerignore to leave out."""
    (ctx / ".git").mkdir()
    (ctx / ".git/config").write_text("[core]\n")


def setup_emptydir(ctx: Path) -> None:
    """tree/empty: an empty directory (git keeps none)."""
    (ctx / "tree/empty").mkdir()


def setup_ctxlinks(ctx: Path) -> None:
    """Symlinks named as COPY sources: BuildKit follows them (and keeps their names)."""
    (ctx / "one-link.txt").symlink_to("one.txt")
    (ctx / "one-link").symlink_to("one.txt")
    (ctx / "docs-link").symlink_to("docs")


SETUPS: dict[str, Callable[[Path], None]] = {"special": setup_special,
                                             "archive": setup_archive,
                                             "ctxlinks": setup_ctxlinks,
                                             "emptydir": setup_emptydir,
                                             "tars": setup_tars,
                                             "files": setup_files,
                                             "gitdir": setup_gitdir}


def _fix_mtimes(ctx: Path) -> None:
    for dirpath, dirs, files in os.walk(ctx):
        for name in [*dirs, *files]:
            os.utime(Path(dirpath) / name, (MTIME, MTIME), follow_symlinks=False)
    os.utime(ctx, (MTIME, MTIME))


def make_context(world: World, case: str, spec: dict[str, Any]) -> Path:
    ctx = world.work / case
    shutil.copytree(CASES / case, ctx, symlinks=True)
    (ctx / "case.toml").unlink()
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(NAMES, world.prefix))
    for name in spec.get("setup", "").split():
        SETUPS[name](ctx)
    _fix_mtimes(ctx)
    return ctx


# --- what an image is, as Docker sees it ---------------------------------------------

@dataclass
class Rootfs:
    entries: dict[str, tuple[object, ...]]
    mtimes: dict[str, int]
    hardlinks: list[list[str]]


def _skipped(name: str) -> bool:
    return name in ADDED_BY_DOCKER or name.split("/", 1)[0] in ("dev", "proc", "sys")


def export_rootfs(image: str) -> Rootfs:
    """Every entry of a container made from the image: what Docker would run."""
    cid = docker("create", image, "true").stdout.decode().strip()
    try:
        data = docker("export", cid).stdout
    finally:
        docker("rm", "-f", cid, check=False)
    entries: dict[str, tuple[object, ...]] = {}
    mtimes: dict[str, int] = {}
    digests: dict[str, str] = {}
    links: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            name = m.name.removeprefix("./").rstrip("/")
            if not name or _skipped(name):
                continue
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                digests[name] = hashlib.sha256(f.read()).hexdigest()
                what: object = digests[name]
            elif m.islnk():
                links[name] = m.linkname.removeprefix("./")
                what = None
            elif m.issym():
                what = m.linkname
            elif m.ischr() or m.isblk():
                what = (m.devmajor, m.devminor)
            else:
                what = None
            kind = "file" if m.islnk() else m.type.decode()
            entries[name] = (kind, oct(m.mode), m.uid, m.gid, m.size, what)
            if not m.isdir():
                mtimes[name] = int(m.mtime)
    groups: dict[str, list[str]] = {}
    for name, target in links.items():
        kind, mode, uid, gid, _size, _ = entries[name]
        entries[name] = (kind, mode, uid, gid, entries[target][4], digests[target])
        groups.setdefault(target, [target]).append(name)
    hardlinks = sorted(sorted(g) for g in groups.values())
    return Rootfs(entries, mtimes, hardlinks)


def inspect(image: str) -> dict[str, Any]:
    info = json.loads(docker("image", "inspect", image).stdout)[0]
    config = info["Config"] or {}
    out = {key: config.get(key) or None for key in CONFIG_KEYS}
    out["Author"] = info.get("Author") or None
    return out


def history(image: str) -> list[tuple[str, bool]]:
    """(created_by, empty_layer) of every step after the base image's."""
    with tarfile.open(fileobj=io.BytesIO(docker("save", image).stdout), mode="r:") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    return [(h.get("created_by", ""), bool(h.get("empty_layer")))
            for h in config["history"][1:]]


def layers(image: str) -> list[list[tuple[str, str, str]]]:
    """The entries (name, type, hard link target) of each layer after the base image's."""
    with tarfile.open(fileobj=io.BytesIO(docker("save", image).stdout), mode="r:") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        out = []
        for blob in manifest[0]["Layers"][1:]:
            with tarfile.open(fileobj=tar.extractfile(blob), mode="r:") as layer:
                out.append(sorted((m.name.removeprefix("./"), m.type.decode(),
                                   m.linkname.removeprefix("./") if m.islnk() else "")
                                  for m in layer))
    return out


def run_default(image: str) -> str:
    """What the image prints when Docker runs it as built (its ENTRYPOINT/CMD, USER, WORKDIR);
    an image without either runs `id` and `pwd`."""
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"] or {}
    command = [] if config.get("Cmd") or config.get("Entrypoint") else [
        "/bin/sh", "-c", "id && pwd"]
    proc = docker("run", "--rm", "--network", "none", image, *command, check=False)
    return f"exit {proc.returncode}\n" + proc.stdout.decode() + proc.stderr.decode()


# --- the builds -----------------------------------------------------------------------

def _spec(case: str) -> dict[str, Any]:
    return tomllib.loads((CASES / case / "case.toml").read_text())


def _build_args(spec: dict[str, Any]) -> list[str]:
    out = [f"--build-arg={k}={v}" for k, v in spec.get("build_args", {}).items()]
    if spec.get("target"):
        out.append(f"--target={spec['target']}")
    return out


def build_both(world: World, case: str) -> tuple[str, str]:
    """Build a case with both tools; returns (ours as loaded into Docker, Docker's)."""
    if case in world.built:
        return world.built[case]
    spec = _spec(case)
    if spec.get("requires"):
        build_both(world, spec["requires"])
    ctx = make_context(world, case, spec)
    name = world.image(case)
    ours = world.image(f"lb-{case}")
    args = _build_args(spec)
    compare = spec.get("docker", True)
    proc = None
    if compare:
        world.tags.append(name)
        proc = subprocess.Popen([DOCKER, "build", "--network", "host", "-q", "-t", name,
                                 *args, str(ctx)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    world.lb("build", "-t", name, "-f", str(ctx / "Dockerfile"), *args, str(ctx))
    world.lb("tag", name, ours)
    archive = world.work / f"{case}.tar"
    world.lb("save", ours, "-o", str(archive))
    validate_archive(TarSource(archive))
    world.tags.append(ours)
    docker("load", "-i", str(archive))
    if proc is not None:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"docker build of {case} failed:\n{out.decode()}{err.decode()}"
    world.built[case] = (ours, name if compare else "")
    return world.built[case]


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


@pytest.mark.parametrize("case", _cases())
def test_conformance(world: World, case: str) -> None:
    spec = _spec(case)
    ours, theirs = build_both(world, case)
    mine = export_rootfs(ours)
    for path, text in spec.get("expect", {}).items():
        rel = path.lstrip("/")
        assert rel in mine.entries, f"{path} missing"
        assert mine.entries[rel][5] == hashlib.sha256(text.encode()).hexdigest(), path
    for path in spec.get("absent", []):
        assert path.lstrip("/") not in mine.entries, path
    for path, ids in spec.get("owners", {}).items():
        assert list(mine.entries[path.lstrip("/")][2:4]) == ids, path
    output = run_default(ours)
    if not theirs:
        if "output" in spec:
            assert output == "exit 0\n" + spec["output"]
        return
    docker_fs = export_rootfs(theirs)
    for prefix in (p.strip("/") for p in spec.get("ignore", [])):
        for fs in (mine, docker_fs):
            fs.entries = {p: e for p, e in fs.entries.items()
                          if p != prefix and not p.startswith(prefix + "/")}
    kept = [p.strip("/") for p in spec.get("mtimes", [])]
    mtimes = {p: t for p, t in docker_fs.mtimes.items()
              if any(p == k or p.startswith(k + "/") for k in kept)}
    assert bool(mtimes) == bool(kept), "no files to compare the mtimes of"
    differences = {
        "files": _diff(mine.entries, docker_fs.entries),
        "hard links": _diff({"groups": mine.hardlinks}, {"groups": docker_fs.hardlinks}),
        "mtimes": _diff({p: mine.mtimes.get(p) for p in mtimes}, mtimes),
        "config": _diff(inspect(ours), inspect(theirs)),
        "history": _diff(dict(enumerate(history(ours))), dict(enumerate(history(theirs)))),
        "output": _diff({"run": output}, {"run": run_default(theirs)}),
        "layers": _diff(dict(enumerate(layers(ours))), dict(enumerate(layers(theirs))))
        if spec.get("layers") else {},
    }
    remaining = {k: v for k, v in differences.items() if v}
    assert not remaining, "(layerbuild, Docker):\n" + pprint.pformat(remaining, width=100)
