"""Untrusted depth and size, and a full disk: one clear line each, and the store still works."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from treeutil import need_root

from layerbuild import fsutil
from layerbuild.digest import Digest
from layerbuild.image import OCI_LAYER, History, Image
from layerbuild.ingest import ingest_blob
from layerbuild.reference import Reference
from layerbuild.store import Store


def _one_line(proc: subprocess.CompletedProcess[str], *expect: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()  # a build's progress goes there too
    errors = [line for line in lines if line.startswith("layerbuild:")]
    assert errors == lines[-1:], proc.stderr
    for text in expect:
        assert text in errors[0], errors[0]
    return errors[0]


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def _cleanup(tmp_path: Path) -> Iterator[None]:
    """Remove the test's trees itself: pytest's own cleanup recurses, and fails at depth."""
    yield
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(fd):
            if os.path.isdir(os.path.join(tmp_path, name)):
                fsutil.remove_tree(fd, name)
    finally:
        os.close(fd)


def test_import_of_a_file_10000_directories_deep(_cleanup: None, lb, store_root: Path,
                                                 tmp_path: Path) -> None:
    need_root()
    name = "/".join(["d"] * 10_000) + "/f"
    lb("import", str(_tar(tmp_path / "deep.tar", {name: b"deep\n"})), "deep:1")
    assert "deep " in lb("images").stdout
    lb("save", "deep:1", "-o", str(tmp_path / "saved.tar"))
    with tarfile.open(tmp_path / "saved.tar") as saved:
        assert "manifest.json" in saved.getnames()


def test_a_manifest_nesting_200000_arrays_is_one_line(lb, store_root: Path,
                                                     tmp_path: Path) -> None:
    lb("images")
    deep = b"[" * 200_000 + b"]" * 200_000
    archive = _tar(tmp_path / "a.tar", {"manifest.json": deep})
    _one_line(lb("load", "-i", str(archive), check=False), "manifest.json", "nested")
    index = _tar(tmp_path / "i.tar", {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                                      "index.json": deep})
    _one_line(lb("load", "-i", str(index), check=False), "index.json", "nested")
    assert lb("images").stdout.splitlines()[1:] == []


def test_save_of_an_image_with_a_missing_blob(lb, base: str, store_root: Path,
                                             tmp_path: Path) -> None:
    store = Store(store_root)
    layer = store.image_layers(store.get_image(base))[0]
    layer.blob_path.unlink()
    line = _one_line(lb("save", base, "-o", str(tmp_path / "x.tar"), check=False),
                     "is missing from the store", str(layer.digest))
    assert line.startswith("layerbuild: error: image ")
    assert not (tmp_path / "x.tar").exists()


def _context(tmp_path: Path, buildfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Buildfile").write_text(buildfile)
    return ctx


def test_outputs_with_a_missing_parent(lb, base: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"FROM {base}\n")
    missing = tmp_path / "missing" / "parent"
    _one_line(lb("build", "-o", f"type=tar,dest={missing}/x.tar", str(ctx), check=False),
              f"{missing} does not exist")
    _one_line(lb("build", "-o", f"type=docker,dest={missing}/x.tar", str(ctx), check=False),
              f"{missing} does not exist")
    lb("build", "-o", f"type=local,dest={missing}/rootfs", str(ctx))  # made, as BuildKit does
    assert (missing / "rootfs" / "bin" / "busybox").is_file()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    need_root()
    place = tmp_path / "disk"
    place.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(place)], check=True)
    yield place
    subprocess.run(["umount", "-l", str(place)], check=True)


def _shrink_to(place: Path, free: int) -> None:
    """Leave only about `free` bytes free on the tmpfs at `place`."""
    st = os.statvfs(place)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    subprocess.run(["mount", "-o", f"remount,size={used + free}", str(place)], check=True)


def test_a_full_disk_during_save(lb, base: str, small_disk: Path) -> None:
    line = _one_line(lb("save", base, "-o", str(small_disk / "x.tar"), check=False),
                     "writing the archive", str(small_disk / "x.tar"),
                     "no space left on device")
    assert line.endswith(": no space left on device")
    assert os.listdir(small_disk) == []
    print(line)


def test_a_full_disk_during_load_is_not_corrupt_data(busybox_tar: Path, small_disk: Path,
                                                    tmp_path: Path) -> None:
    big = tmp_path / "big"
    run_cli(big, "import", str(busybox_tar), "bb:1")
    run_cli(big, "save", "bb:1", "-o", str(tmp_path / "bb.tar"))
    store = small_disk / "store"
    line = _one_line(run_cli(store, "load", "-q", "-i", str(tmp_path / "bb.tar"), check=False),
                     "no space left on device")
    assert "corrupt" not in line
    print(line)
    assert run_cli(store, "images").returncode == 0


@pytest.mark.parametrize("step", ["RUN head -c 1500000 /dev/urandom > /r",
                                  "COPY r /r"])
def test_a_full_disk_while_storing_a_step(step: str, busybox_tar: Path, small_disk: Path,
                                          tmp_path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    store = small_disk / "store"
    run_cli(store, "import", str(busybox_tar), "base")
    ctx = _context(tmp_path, f"FROM base\n{step}\n")
    (ctx / "r").write_bytes(os.urandom(1_500_000))
    _shrink_to(small_disk, 2_000_000)  # room for the step's files, not for their blob too
    print(_one_line(run_cli(store, "build", "-t", "x", str(ctx), check=False),
                    "no space left on device"))
    assert run_cli(store, "images").returncode == 0


def test_a_base_of_more_than_500_layers(lb, base: str, store_root: Path,
                                        tmp_path: Path) -> None:
    store = Store(store_root)
    image = store.get_image(base)
    config, parent = image.config, store.image_layers(image)[-1].chain_id
    for i in range(501):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo(f"f{i}")
            tf.addfile(info, io.BytesIO(b""))
        data = buf.getvalue()
        diff_id = Digest.of(data)
        parent = ingest_blob(store, parent, diff_id, io.BytesIO(data), OCI_LAYER).record.chain_id
        config = config.with_layer(diff_id, History(created_by=f"layer {i}"))
    store.put_image(Image.from_config(config), [Reference.parse("tall:1")])
    ctx = _context(tmp_path, "FROM tall:1\nRUN true\n")
    _one_line(lb("build", str(ctx), check=False), "too many layers",
              "overlayfs stacks at most 500")
