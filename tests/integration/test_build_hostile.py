"""A hostile base image: its symlinks are followed inside the image, never on the host."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from treeutil import make_tar, need_root

import layerbuild


def test_symlinks_of_the_image_never_reach_the_host(lb, busybox_rootfs: Path, tmp_path: Path,
                                                    ) -> None:
    need_root()
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "victim").write_text("untouched")
    rootfs = tmp_path / "hostile"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(rootfs)], check=True)
    host_target = f"/tmp/layerbuild-hostile-{os.getpid()}"
    os.symlink(host_target, rootfs / "app")  # absolute: /app -> a host path
    os.symlink("../../../../../..", rootfs / "up")  # climbs as far as it can
    os.symlink(f"{sentinel}/victim", rootfs / "etc/resolv.conf")
    os.symlink(f"{sentinel}/other", rootfs / "etc/hosts")
    lb("import", str(make_tar(rootfs, tmp_path / "hostile.tar")), "hostile:1")

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "payload").write_text("payload\n")
    (ctx / "Buildfile").write_text(
        "FROM hostile:1\n"
        "COPY payload /app/payload\n"
        "COPY payload /up/etc/payload-up\n"
        f"WORKDIR /up/lbwork-{os.getpid()}\n"
        "RUN cat /app/payload && pwd && (echo pwned > /etc/resolv.conf || true)\n")
    out = lb("build", "-t", "after:1", str(ctx))
    assert "payload" in out.stderr
    assert not os.path.lexists(host_target)
    assert not Path("/etc/payload-up").exists()
    assert not Path(f"/lbwork-{os.getpid()}").exists()
    assert sorted(os.listdir(sentinel)) == ["victim"]
    assert (sentinel / "victim").read_text() == "untouched"

    layers = json.loads(lb("inspect", "after:1").stdout)[0]["Store"]["Layers"]
    first_copy = Path(layers[1]["DiffDir"])
    assert (first_copy / host_target.lstrip("/") / "payload").read_text() == "payload\n"
    assert (Path(layers[2]["DiffDir"]) / "etc/payload-up").read_text() == "payload\n"


def test_a_step_that_fails_before_its_network_is_made_says_why(
        busybox_rootfs: Path, tmp_path: Path, store_root: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A spare child sets its step up at once: it can fail, and be gone, before the builder
    makes its network. Its own error is the one told, not the missing network's."""
    need_root()
    from layerbuild.sandbox import network

    rootfs = tmp_path / "hostile"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(rootfs)], check=True)
    os.symlink("/bin", rootfs / "etc/hosts")  # a dir where a file goes: the step fails
    layerbuild.import_rootfs(make_tar(rootfs, tmp_path / "hostile.tar"), "hostile:3",
                             store=store_root)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text("FROM hostile:3\nRUN true\n")
    real = network.start

    def late(*args: Any, **kwargs: Any) -> network.Stack:
        time.sleep(1.0)  # the child has failed, and exited, by now
        return real(*args, **kwargs)

    monkeypatch.setattr(network, "start", late)
    with pytest.raises(layerbuild.LayerbuildError) as failed:
        layerbuild.build(ctx, store=store_root, network="private")
    assert "/etc/hosts" in str(failed.value)
    assert "network" not in str(failed.value)


def test_a_mount_target_of_the_wrong_kind_fails_clearly(lb, busybox_rootfs: Path,
                                                        tmp_path: Path) -> None:
    need_root()
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    rootfs = tmp_path / "hostile"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(rootfs)], check=True)
    os.symlink("/bin", rootfs / "etc/hosts")  # in the image: a dir where a file goes
    lb("import", str(make_tar(rootfs, tmp_path / "hostile.tar")), "hostile:2")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text("FROM hostile:2\nRUN true\n")
    proc = lb("build", str(ctx), check=False)
    assert proc.returncode == 1
    assert "/etc/hosts" in proc.stderr.strip().splitlines()[-1]
    assert os.listdir(sentinel) == []
