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

import pytest
from conftest import run_cli
from treeutil import make_tar, need_root, need_tool


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


# --- a kill at every rename ---------------------------------------------------------------
#
# strace stops the command at its N-th rename(2) (the syscall Python's os.rename makes; per
# tracee, so only the main thread is traced and counted) and kills it there with SIGKILL.

RENAMES = "rename,renameat,renameat2"
EPOCH = "1000"  # builds are reproducible, so a build's new image ID is known in advance
META_DIRS = ("image", "blobs", "tmp", "buildcache")
"""Where a killed command's half-written files would be (layer files may be named anything)."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "layerbuild.cli", *args]


def _traced(root: Path, args: tuple[str, ...], kill_at: int | None = None,
            trace: Path | None = None) -> subprocess.CompletedProcess[str]:
    inject = ["-e", f"inject={RENAMES}:signal=KILL:when={kill_at}"] if kill_at else []
    return subprocess.run(["strace", "-o", str(trace or os.devnull), "-e", f"trace={RENAMES}",
                           *inject, *_cli("--root", str(root), *args)],
                          capture_output=True, text=True, timeout=120)


def _names(root: Path) -> dict[str, str]:
    """Every name and the (short) ID of the image it points at, as `images` lists them; no
    tag of repositories.json may name an image that is not there."""
    rows = [line.split() for line in run_cli(root, "images").stdout.splitlines()[1:]]
    names = {f"{repo}:{tag}": image_id for repo, tag, image_id, *_ in rows if tag != "<none>"}
    repos = json.loads((root / "image/overlay2/repositories.json").read_text())
    stored = {t: i[7:19] for per in repos["Repositories"].values() for t, i in per.items()}
    assert stored == names, "a tag names an image that is not stored"
    return names


def _inspected(root: Path, names: dict[str, str]) -> dict[str, str]:
    """The names as `inspect` shows them, with the short IDs of `_names`."""
    shown = json.loads(run_cli(root, "inspect", *names).stdout)
    return {tag: image["Id"][7:19] for image in shown for tag in image["RepoTags"]}


def _no_debris(root: Path) -> None:
    _check_consistent(root)
    temps = [str(p) for d in META_DIRS for p in (root / d).rglob(".*")
             if p.is_file() and p.name.endswith(".tmp")]
    assert temps == [], f"temp files left: {temps}"
    with open("/proc/self/mountinfo") as f:
        assert [line for line in f if str(root) in line] == []


class Store:
    """A prepared store, copied afresh before every kill, and what its names point at."""

    def __init__(self, tmp: Path, busybox_tar: Path) -> None:
        self.tmp = tmp
        self.pristine = tmp / "pristine"
        run_cli(self.pristine, "import", str(busybox_tar), "base")
        self.ctx = tmp / "ctx"
        self.ctx.mkdir()
        (self.ctx / "Buildfile").write_text("FROM base\nCOPY f /f\nRUN cat /f /f > /g\n")
        self.build = ("build", "--source-date-epoch", EPOCH, "-t", "app:1", str(self.ctx))
        (self.ctx / "f").write_text("old\n")
        run_cli(self.pristine, *self.build)
        # Layers that only build cache entries hold: `prune --all` frees them.
        (self.ctx / "f").write_text("dropped\n")
        run_cli(self.pristine, "build", "-t", "dropped:1", str(self.ctx))
        run_cli(self.pristine, "rmi", "dropped:1")
        small = tmp / "small"
        small.mkdir()
        (small / "extra").write_text("extra\n")
        run_cli(self.pristine, "import", str(make_tar(small, tmp / "small.tar")), "extra:1")
        # An archive that gives app:1 another image.
        (small / "loaded").write_text("loaded\n")
        source = tmp / "source"
        run_cli(source, "import", str(make_tar(small, tmp / "loaded.tar")), "app:1")
        self.archive = tmp / "archive.tar"
        run_cli(source, "save", "app:1", "-o", str(self.archive))
        (self.ctx / "f").write_text("new\n")
        time.sleep(0.2)  # settled, so every build of it writes the same files
        self.old = _names(self.pristine)

    def copy(self, name: str) -> Path:
        root = self.tmp / name
        if root.exists():
            subprocess.run(["rm", "-rf", str(root)], check=True)
        subprocess.run(["cp", "-a", str(self.pristine), str(root)], check=True)
        return root


@pytest.fixture(scope="module")
def prepared(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    need_root()
    need_tool("strace")
    return Store(tmp_path_factory.mktemp("kills"), busybox_tar)


COMMANDS = {
    "build": lambda s: s.build,
    "load": lambda s: ("load", "-i", str(s.archive)),
    "rmi": lambda s: ("rmi", "extra:1"),
    "tag": lambda s: ("tag", "extra:1", "app:1"),
    "prune": lambda s: ("prune", "--all"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_kill_at_every_rename_leaves_each_name_at_its_old_or_new_image(
        prepared: Store, command: str) -> None:
    args = COMMANDS[command](prepared)
    # What the command does when it runs to the end: its renames, and the names after it.
    counted = prepared.copy("counted")
    trace = prepared.tmp / "trace"
    assert _traced(counted, args, trace=trace).returncode == 0
    calls = [line for line in trace.read_text().splitlines() if "rename" in line]
    assert calls and all(line.startswith("rename(") for line in calls), calls
    new = _names(counted)
    old = prepared.old
    # The next command after a kill: the same build or load, or any load for the others.
    following = args if command in ("build", "load") else COMMANDS["load"](prepared)
    for n in range(1, len(calls) + 1):
        root = prepared.copy("killed")
        killed = _traced(root, args, kill_at=n)
        assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), \
            f"rename {n} of {len(calls)}: {killed.returncode}\n{killed.stderr}"
        names = _names(root)  # the first command after the kill also cleans its debris
        for name in {*old, *new}:
            assert names.get(name) in {old.get(name), new.get(name)}, \
                f"{command} killed at rename {n}: {name} -> {names.get(name)}"
        assert set(names) <= {*old, *new}
        _no_debris(root)
        run_cli(root, *following)
        after = _inspected(root, names)
        if command in ("build", "load"):
            assert after == {**names, **new}, f"{command} after a kill at rename {n}"
        _no_debris(root)
