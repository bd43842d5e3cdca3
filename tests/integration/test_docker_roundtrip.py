"""An image built by Docker goes through layerbuild and back, unchanged."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from treeutil import need_root

from layerbuild.archive.sources import TarSource
from layerbuild.validate import validate_archive

DOCKERFILE = """\
FROM {base}
RUN mkdir -p /data && echo a > /data/a && echo b > /data/b && echo keep > /data/keep
RUN rm /data/b && rm /bin/ls
RUN rm -rf /data && mkdir /data && echo c > /data/c
"""
# What Docker adds to a container that the image does not hold.
RUNTIME = {".dockerenv", "dev", "proc", "sys", "etc/hosts", "etc/hostname", "etc/resolv.conf",
           "etc/mtab"}


def _export_listing(docker, image: str, tmp: Path) -> dict[str, tuple[object, ...]]:
    container = docker("create", image, "/bin/true").stdout.strip()
    try:
        exported = tmp / "export.tar"
        docker("export", "-o", str(exported), container)
    finally:
        docker("rm", container)
    out: dict[str, tuple[object, ...]] = {}
    with tarfile.open(exported) as tar:
        members = tar.getmembers()
    sizes = {m.name: m.size for m in members if m.isreg()}
    for m in members:
        name = m.name.strip("/").removeprefix("./")
        if not name or name in RUNTIME or name.split("/", 1)[0] in RUNTIME:
            continue
        kind = tarfile.REGTYPE if m.islnk() or m.isreg() else m.type
        size = sizes[m.linkname] if m.islnk() else m.size if m.isreg() else 0
        out[name] = (kind, m.mode & 0o7777, m.uid, m.gid, size,
                     m.linkname if m.issym() else None)
    return out


def _mount_listing(root: Path) -> dict[str, tuple[object, ...]]:
    kinds = {stat.S_IFREG: tarfile.REGTYPE, stat.S_IFDIR: tarfile.DIRTYPE,
             stat.S_IFLNK: tarfile.SYMTYPE}
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            kind = kinds[stat.S_IFMT(st.st_mode)]
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if kind == tarfile.REGTYPE else 0,
                        os.readlink(path) if kind == tarfile.SYMTYPE else None)
    return out


def test_docker_image_round_trip(lb, docker, busybox_tar: Path, tmp_path: Path) -> None:
    need_root()
    base = docker.name("base")
    docker("import", str(busybox_tar), base)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    image = docker.name("whiteouts")
    docker("build", "--network", "host", "-t", image, str(context), timeout=600)
    inspect = json.loads(docker("image", "inspect", image).stdout)[0]
    original_id, original_layers = inspect["Id"], inspect["RootFS"]["Layers"]

    saved = tmp_path / "docker-save.tar"
    docker("save", "-o", str(saved), image)
    validate_archive(TarSource(saved))
    load_out = lb("load", "-i", str(saved)).stdout
    assert f"Loaded image: {image}" in load_out

    info = json.loads(lb("inspect", image).stdout)[0]
    assert info["Id"] == original_id
    assert info["RootFS"]["Layers"] == original_layers
    diff_dirs = [Path(layer["DiffDir"]) for layer in info["Store"]["Layers"]]
    rm_layer, refill_layer = diff_dirs[2], diff_dirs[3]
    for gone in (rm_layer / "data/b", rm_layer / "bin/ls"):
        st = os.lstat(gone)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, gone
    assert os.getxattr(refill_layer / "data", "trusted.overlay.opaque") == b"y"
    assert not (refill_layer / "data/.wh..wh..opq").exists()

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lower = ":".join(str(d) for d in reversed(diff_dirs))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}",
                    str(mnt)], check=True)
    try:
        assert sorted(os.listdir(mnt / "data")) == ["c"]
        assert not (mnt / "bin/ls").exists()
        assert _mount_listing(mnt) == _export_listing(docker, image, tmp_path)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

    ours = tmp_path / "layerbuild-save.tar"
    lb("save", image, "-o", str(ours))
    validate_archive(TarSource(ours))
    docker("rmi", image)
    assert f"Loaded image: {image}" in docker("load", "-i", str(ours)).stdout
    again = json.loads(docker("image", "inspect", image).stdout)[0]
    assert again["Id"] == original_id
    assert again["RootFS"]["Layers"] == original_layers
    assert docker("run", "--rm", "--network", "none", image, "cat", "/data/c").stdout == "c\n"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_save_loads_back(lb, busybox_tar: Path, tmp_path: Path,
                                    compression: str) -> None:
    need_root()
    lb("import", str(busybox_tar), "bb:1")
    archive = tmp_path / "bb.tar"
    lb("save", "--compress", compression, "bb:1", "-o", str(archive))
    (image,) = validate_archive(TarSource(archive))
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = tar.extractfile(manifest[0]["Layers"][0]).read(4)  # type: ignore[union-attr]
    magic = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}[compression]
    assert layer.startswith(magic)
    other = tmp_path / "other-store"
    from conftest import run_cli

    out = run_cli(other, "load", "-i", str(archive)).stdout
    assert "Loaded image: bb:1" in out
    assert json.loads(run_cli(other, "inspect", "bb:1").stdout)[0]["Id"] == str(image.id)
