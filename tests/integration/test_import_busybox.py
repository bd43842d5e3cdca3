"""A busybox rootfs imported, saved, and read by Docker, skopeo and umoci."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tartools import unpack_plain
from treeutil import inode_groups, need_root, need_tool, snapshot

from layerbuild.archive.sources import TarSource
from layerbuild.validate import validate_archive


def test_import_save_then_docker_runs_it(lb, docker, busybox_tar: Path, tmp_path: Path) -> None:
    need_root()
    name = docker.name("busybox")
    image_id = lb("import", str(busybox_tar), name).stdout.strip()
    archive = tmp_path / "bb.tar"
    lb("save", name, "-o", str(archive))
    (image,) = validate_archive(TarSource(archive))
    assert str(image.id) == image_id

    loaded = docker("load", "-i", str(archive)).stdout
    assert f"Loaded image: {name}" in loaded
    assert docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip() == image_id
    out = docker("run", "--rm", "--network", "none", name, "/bin/sh", "-c",
                 "cat /etc/motd; ls -ln /bin/suid-tool /home/user/notes").stdout
    assert "hello from layerbuild" in out
    assert "-rwsr-xr-x" in out
    assert " 1000 " in out


def test_archive_passes_skopeo_and_umoci(lb, busybox_rootfs: Path, busybox_tar: Path,
                                         tmp_path: Path) -> None:
    need_root()
    need_tool("skopeo", "umoci")
    lb("import", str(busybox_tar), "busybox:1.35")
    archive = tmp_path / "bb.tar"
    lb("save", "busybox:1.35", "-o", str(archive))

    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["Os"] == "linux"
    assert len(info["Layers"]) == 1
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{archive}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"

    layout = tmp_path / "layout"
    unpack_plain(archive, layout)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1.35", str(bundle)], check=True,
                   capture_output=True)
    assert snapshot(bundle / "rootfs", with_mtime=True) == snapshot(busybox_rootfs,
                                                                   with_mtime=True)
    assert inode_groups(bundle / "rootfs") == inode_groups(busybox_rootfs)
