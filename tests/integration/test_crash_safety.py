"""A load killed at any point leaves a consistent store that the next command cleans."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_cli
from treeutil import make_tar, need_root


def _check_consistent(root: Path) -> set[str]:
    """Every layerdb entry is whole and nothing unnamed is left; returns the tags."""
    layerdb = root / "image/overlay2/layerdb/sha256"
    cache_ids = set()
    blobs = set()
    for entry in layerdb.iterdir():
        for name in ("diff", "cache-id", "size", "blobs.json"):
            assert (entry / name).is_file(), f"{entry} lacks {name}"
        cache_ids.add((entry / "cache-id").read_text())
        blobs.update(b["digest"][7:] for b in json.loads((entry / "blobs.json").read_text())
                     ["blobs"])
        assert (root / "overlay2" / (entry / "cache-id").read_text() / "diff").is_dir()
    assert {p.name for p in (root / "overlay2").iterdir()} == cache_ids
    assert {p.name for p in (root / "blobs/sha256").iterdir()} <= blobs
    assert list((root / "tmp").iterdir()) == []
    repos = json.loads((root / "image/overlay2/repositories.json").read_text())
    return {t for per in repos["Repositories"].values() for t in per}


def test_killed_loads_leave_a_clean_store(busybox_rootfs: Path, tmp_path: Path) -> None:
    need_root()
    big = tmp_path / "big-rootfs"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(big)], check=True)
    rng = random.Random(1234)
    (big / "blobs").mkdir()
    for i in range(12):
        (big / "blobs" / f"part{i}").write_bytes(rng.randbytes(6 << 20))
    source_store = tmp_path / "source"
    run_cli(source_store, "import", str(make_tar(big, tmp_path / "big.tar")), "big:1")
    archive = tmp_path / "big-archive.tar"
    run_cli(source_store, "save", "big:1", "-o", str(archive))

    root = tmp_path / "store"
    run_cli(root, "import", str(make_tar(busybox_rootfs, tmp_path / "bb.tar")), "keep:1")
    before = run_cli(root, "images", "-q").stdout
    started = time.monotonic()
    run_cli(tmp_path / "timing", "load", "-i", str(archive))
    duration = time.monotonic() - started

    interrupted = 0
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(root),
                                 "load", "-i", str(archive)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, max(0.2, duration * 0.9)))
        proc.send_signal(signal.SIGKILL)
        finished = proc.wait() == 0
        if not finished and os.listdir(root / "tmp"):
            interrupted += 1  # killed mid-way, with staged debris left behind
        run_cli(root, "images")  # the next command cleans what the killed one left
        tags = _check_consistent(root)
        if finished:
            break
        assert tags == {"keep:1"}, f"attempt {attempt}"
        assert run_cli(root, "images", "-q").stdout == before
        # Whatever layers the killed load had stored were released with it.
        assert len(os.listdir(root / "image/overlay2/layerdb/sha256")) == 1

    assert interrupted >= 3, "the kills did not land inside the load"
    run_cli(root, "load", "-i", str(archive))
    assert _check_consistent(root) == {"keep:1", "big:1"}
