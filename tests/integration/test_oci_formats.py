"""OCI layouts made by skopeo (directory and oci-archive, gzip layers) load, and keep digests."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from treeutil import need_root, need_tool

from layerbuild.archive.sources import DirSource, TarSource
from layerbuild.validate import validate_archive


@pytest.mark.parametrize("transport", ["oci-archive", "oci"])
def test_skopeo_layouts_load_with_their_digests(lb, busybox_tar: Path, tmp_path: Path,
                                                transport: str) -> None:
    need_root()
    need_tool("skopeo")
    lb("import", str(busybox_tar), "bb:1")
    ours = tmp_path / "ours.tar"
    lb("save", "bb:1", "-o", str(ours))
    target = tmp_path / ("copy.tar" if transport == "oci-archive" else "copy")
    subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{ours}",
                    f"{transport}:{target}:bb:2"], check=True, capture_output=True)
    source = TarSource(target) if transport == "oci-archive" else DirSource(target)
    (copied,) = validate_archive(source)
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"{transport}:{target}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert raw["layers"][0]["mediaType"].endswith("tar+gzip")

    out = tmp_path / "store2"
    from conftest import run_cli

    loaded = run_cli(out, "load", "-i", str(target)).stdout
    assert "Loaded image: bb:2" in loaded
    info = json.loads(run_cli(out, "inspect", "bb:2").stdout)[0]
    assert info["Id"] == str(copied.id)
    again = tmp_path / "again.tar"
    run_cli(out, "save", "--compress", "gzip", "bb:2", "-o", str(again))
    with tarfile.open(again) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["Layers"] == [f"blobs/sha256/{d['digest'][7:]}" for d in raw["layers"]]
    validate_archive(TarSource(again))
