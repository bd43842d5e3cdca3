"""Shared fixtures: stores, a busybox root filesystem, the CLI and Docker."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from treeutil import docker_ok, make_busybox_rootfs, make_tar, need

from layerbuild.store import Store

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def busybox_tar(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tar(busybox_rootfs, tmp_path_factory.mktemp("busybox-tar") / "rootfs.tar")


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_root: Path) -> Store:
    return Store(store_root)


def run_cli(root: Path, *args: str, check: bool = True, input_: bytes | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `layerbuild --root ROOT ARGS…` as a user would, in a new process."""
    proc = subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"layerbuild {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def lb(store_root: Path) -> Run:
    """The CLI on this test's store."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(store_root, *args, check=check)

    return run


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
