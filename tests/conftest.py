"""Shared fixtures: stores, a busybox root filesystem, the CLI, Docker and the test registries."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from registrytools import (
    FaultProxy,
    MultiArch,
    Registries,
    load_registries,
    push_multi_arch,
    repository_name,
)
from treeutil import docker_ok, make_busybox_rootfs, make_tar, need, need_root, need_tool

from layerbuild.image import host_platform
from layerbuild.store import Store

Run = Callable[..., subprocess.CompletedProcess[str]]
BUSYBOX = "/bin/busybox"  # static, from Debian's busybox-static


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def busybox_tar(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tar(busybox_rootfs, tmp_path_factory.mktemp("busybox-tar") / "rootfs.tar")


@pytest.fixture
def base(lb: Run, busybox_tar: Path) -> str:
    """The busybox root filesystem imported into the test's store as `base`."""
    need_root()
    lb("import", str(busybox_tar), "base")
    return "base"


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_root: Path) -> Store:
    return Store(store_root)


def run_cli(root: Path, *args: str, check: bool = True, input_: str | None = None,
            timeout: float = 600, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """Run `layerbuild --root ROOT ARGS…` as a user would, in a new process (`env` adds to
    the environment; `input_` is its stdin, else it reads an empty one)."""
    proc = subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout,
                          input=input_ if input_ is not None else "",
                          env={**os.environ, **env} if env else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"layerbuild {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def lb(store_root: Path, tmp_path: Path) -> Iterator[Run]:
    """The CLI on this test's store.

    Afterwards, every image the test built is checked as a user would use it: its archive
    passes `validate_archive`, `docker load` and `docker run` (when an engine runs), the store
    holds no staging debris, and no mount of the store is left behind.
    """
    built: list[str] = []

    def run(*args: str, check: bool = True, env: dict[str, str] | None = None,
            input_: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = run_cli(store_root, *args, check=check, env=env, input_=input_)
        if args and args[0] == "build" and proc.returncode == 0 and "--dry-run" not in args:
            built.append(proc.stdout.split("Successfully built ")[-1].split()[0]
                         if "Successfully built" in proc.stdout else proc.stdout.strip())
        return proc

    yield run
    if (store_root / "tmp").exists():
        assert list((store_root / "tmp").iterdir()) == [], "staging debris left in the store"
    with open("/proc/self/mountinfo") as f:
        leaked = [line for line in f if str(store_root) in line]
    assert leaked == [], f"mounts left behind: {leaked}"
    _check_built(store_root, tmp_path, built)


def _check_built(store_root: Path, tmp_path: Path, built: list[str]) -> None:
    from layerbuild.archive.sources import TarSource
    from layerbuild.validate import validate_archive

    engine = docker_ok()
    present = run_cli(store_root, "images", "-q").stdout.split()
    for image_id in dict.fromkeys(built):
        if not image_id.startswith("sha256:") or image_id[7:19] not in present:
            continue  # removed by the test itself
        archive = tmp_path / f"built-{image_id[7:19]}.tar"
        run_cli(store_root, "save", image_id, "-o", str(archive))
        validate_archive(TarSource(archive))
        if engine:
            loaded = subprocess.run(["docker", "load", "-i", str(archive)],
                                    capture_output=True, text=True)
            assert loaded.returncode == 0, loaded.stderr
            try:
                _docker_run(image_id)
            finally:
                subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)
        archive.unlink()


def _docker_run(image_id: str) -> None:
    """Start a container of the image as its config says (user, workdir, env), with a static
    busybox bound in as the command, so images without a shell (scratch) run too."""
    probe = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{BUSYBOX}:/.probe/busybox:ro",
         "--entrypoint", "/.probe/busybox", image_id, "sh", "-c", 'echo "ran in $PWD"'],
        capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and "ran in /" in probe.stdout, \
        f"docker run {image_id} failed:\n{probe.stdout}{probe.stderr}"


class Docker:
    """The real Docker engine, with every image a test tags removed afterwards."""

    def __init__(self) -> None:
        self.prefix = f"lbtest-{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def name(self, what: str) -> str:
        ref = f"{self.prefix}-{what}:latest"
        self.created.append(ref)
        return ref

    def __call__(self, *args: str, check: bool = True, timeout: float = 300,
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def cleanup(self) -> None:
        for ref in self.created:
            self("rmi", "-f", ref, check=False)
        self("image", "prune", "-f", check=False)


@pytest.fixture
def docker() -> Iterator[Docker]:
    need(docker_ok(), "needs a running Docker engine (scripts/setup starts one)")
    engine = Docker()
    try:
        yield engine
    finally:
        engine.cleanup()


@pytest.fixture(scope="session")
def registries() -> Registries:
    """The test registries scripts/registries started: skipped when they do not answer, a
    failure in CI."""
    found = load_registries()
    need(found is not None and found.all_answer(),
         "needs the test registries on 127.0.0.1:5000-5003 (scripts/registries starts them)")
    assert found is not None
    return found


@pytest.fixture
def repository(request: pytest.FixtureRequest) -> str:
    """A repository name no other test (or earlier run) uses, e.g. `lbtest/test-push-1a2b3c4d`."""
    return repository_name(request.node.name)


@pytest.fixture
def fault_proxy(registries: Registries) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the open registry, with no fault set yet."""
    with FaultProxy(registries.open) as proxy:
        yield proxy


@pytest.fixture
def client_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Docker's client config dir (`DOCKER_CONFIG`, empty) and a registries.toml
    (`LAYERBUILD_REGISTRIES_CONFIG`, absent) of this test's own: no login or mirror of the
    machine's is read, and no login is written there, by layerbuild or docker."""
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("LAYERBUILD_REGISTRIES_CONFIG", str(tmp_path / "registries.toml"))
    return config


@pytest.fixture(scope="session")
def multi_arch(registries: Registries, busybox_tar: Path,
               tmp_path_factory: pytest.TempPathFactory) -> MultiArch:
    """A manifest list in the open registry, made by `docker manifest`, of a busybox image for
    this machine's architecture and one for another (arm64, or amd64 on an arm64 host)."""
    need(docker_ok(), "needs a running Docker engine (docker manifest)")
    need_tool("skopeo")
    host = host_platform()[0]
    return push_multi_arch(busybox_tar, tmp_path_factory.mktemp("multi-arch"),
                           f"{registries.open}/{repository_name('multi-arch')}",
                           (host, "arm64" if host != "arm64" else "amd64"))
