"""Registry push and pull: layerbuild against skopeo, side by side, on the same image.

Makes a ~500 MB image of 7 layers (seeded, so every run makes the same content: a "distro"
base of small files and a few libraries, then layers of large binaries, thousands of small
text files, incompressible assets, large text files, mixed medium files and a little config),
stores it with `layerbuild import` (the base) and a Buildfile of COPY steps (the rest), and
writes it out once as an OCI layout (`layerbuild save --compress gzip`, the stored blobs as
they are, so both tools move the same bytes). Then, each `--runs` times, interleaved so load
on the machine hits every row alike, each in a new process:

    layerbuild push     store -> a fresh repository (no mount hints: the store's are cleared)
    skopeo push         `skopeo copy oci:LAYOUT docker://…` to a fresh repository
    layerbuild pull     registry -> a fresh store: verifies and keeps each blob, and also
                        unpacks every layer into the store (what a build or run needs)
    skopeo pull oci     `skopeo copy docker://… oci:DIR`: verifies and writes blobs only
    skopeo pull dir     `skopeo copy docker://… dir:DIR`: the same, simplest layout
    skopeo pull c/s     `skopeo copy docker://… containers-storage:[overlay@DIR…]`: blobs
                        unpacked into a store of its own (podman's pull), the same job as ours
    layerbuild load     the layout -> a fresh store, no network: our verify + unpack alone

and prints the medians: seconds, MB/s (compressed bytes moved / seconds, process start
included), CPU seconds (user + system) and the peak RSS of the process (its `ru_maxrss`,
from `wait4`; this process's own is printed too: a child starts from it). skopeo runs in a
private mount namespace with a fresh, empty blob-info cache (a tmpfs over
/var/lib/containers/cache), or it would mount blobs from the repositories of earlier runs
instead of uploading them. Needs root, skopeo, `unshare`, and a registry speaking plain HTTP
(default: the open one of scripts/registries at 127.0.0.1:5000; any `docker-registry serve`
will do). Every push goes to a new repository, so nothing is "already exists"; the registry
keeps one copy of the blobs (~300 MB) whatever the number of runs. What a round writes is
deleted after it, and the next round waits a minute: on ext4 without a journal, creating files
within a minute of deleting many costs up to 10x the CPU (the inode allocator passes over
recently freed inodes, one by one, for every new one), which would land on the rows that
create many files (the unpacking ones). Keeping everything instead is no better on a VM:
page cache in memory the guest never touched costs a host fault per page. Others deleting
files on the same filesystem still hit the unpacking rows; a work dir at the top level (the
default) keeps clear of the block groups of /tmp and /var/tmp, where test runs churn.

Usage: python benchmarks/registry.py [--runs 3] [--registry 127.0.0.1:5000]
                                     [--workdir /lbbench-registry] [--keep]
                                     [--only push|pull] [--baseline TREE]

With `--keep` the work dir (image, store, layout) is left for the next run, which then skips
making the image. `--baseline TREE` also runs the layerbuild rows from another checkout (say
`git worktree add /tmp/base main`), interleaved with ours, to see what a change did on a
machine whose load comes and goes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

IMAGE = "lbbench/registry:1"
BLOB_CACHE = Path("/var/lib/containers/cache")
RECENT = 61
"""Seconds ext4 without a journal passes over the inodes of deleted files before reusing them
(60 once their inode table block is written back, which the sync before the wait does; 360
while it is dirty)."""
WORDS = ("layer", "image", "build", "cache", "store", "registry", "blob", "digest", "manifest",
         "config", "push", "pull", "tar", "gzip", "index", "the", "of", "and", "to", "in", "is",
         "for", "with", "on", "as", "by", "it", "at", "from", "this", "that", "error", "info",
         "warning", "debug", "request", "response", "status", "token", "scope", "upload")

# (layer, kind of content, file count, bytes per file): ~500 MB in all.
Plan = list[tuple[str, int, int]]
LAYERS: dict[str, Plan] = {
    "base": [("text", 2000, 12_000), ("skewed", 500, 40_000), ("skewed", 8, 3_000_000)],
    "runtime": [("skewed", 8, 10_000_000), ("text", 200, 50_000)],
    "packages": [("text", 12_000, 6_000)],
    "assets": [("random", 3, 40_000_000)],
    "data": [("text", 2, 40_000_000)],
    "app": [("skewed", 200, 150_000), ("text", 200, 150_000)],
    "config": [("text", 20, 5_000)],
}


class Content:
    """Seeded file content: text lines, skewed binary (compresses ~40%) or random bytes."""

    def __init__(self, seed: int = 42) -> None:
        self.rng = random.Random(seed)
        self.lines = [(" ".join(self.rng.choices(WORDS, k=self.rng.randint(4, 14))) +
                       f" {self.rng.randint(0, 99999)}\n").encode() for _ in range(8192)]
        alphabet = bytes(self.rng.choices(range(256), k=24)) + b"\x00" * 8
        self.skew = bytes(alphabet[i % len(alphabet)] for i in range(256))

    def block(self, kind: str, n: int) -> bytes:
        if kind == "random":
            return self.rng.randbytes(n)
        if kind == "skewed":
            return self.rng.randbytes(n).translate(self.skew)
        out = b"".join(self.rng.choices(self.lines, k=n // 40 + 1))
        return out[:n]

    def write(self, path: Path, kind: str, size: int) -> None:
        with open(path, "wb") as f:  # in pieces: this process must stay small (see main)
            left = size
            while left:
                n = min(left, 1 << 20)
                f.write(self.block(kind, n))
                left -= n


def make_tree(root: Path, plan: Plan, content: Content) -> int:
    """Fill `root` as `plan` says; returns the bytes written."""
    total = 0
    for group, (kind, count, size) in enumerate(plan):
        for i in range(count):
            d = root / f"{kind}{group}" / f"d{i % 64}"
            d.mkdir(parents=True, exist_ok=True)
            content.write(d / f"f{i}", kind, size)
            total += size
    return total


def layerbuild(root: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(root), *args],
                          check=True, capture_output=True, text=True).stdout


def make_image(work: Path) -> None:
    """The image in a store at work/store, and its OCI layout at work/layout."""
    content = Content()
    src = work / "src"
    total = 0
    for name, plan in LAYERS.items():
        total += make_tree(src / name, plan, content)
    with tarfile.open(work / "base.tar", "w") as tar:
        tar.add(src / "base", arcname=".")
    store = work / "store"
    layerbuild(store, "import", str(work / "base.tar"), "lbbench/base:1")
    steps = "".join(f"COPY {name}/ /srv/{name}/\n" for name in LAYERS if name != "base")
    (src / "Buildfile").write_text("FROM lbbench/base:1\n" + steps)
    layerbuild(store, "build", "-q", "-t", IMAGE, str(src))
    layerbuild(store, "save", "--compress", "gzip", "-o", str(work / "image.tar"), IMAGE)
    (work / "layout").mkdir()  # our own archive, unpacked by tar (3.11.2 has no tar filters)
    subprocess.run(["tar", "-C", str(work / "layout"), "-xf", str(work / "image.tar")],
                   check=True)
    (work / "image.tar").unlink()
    (work / "base.tar").unlink()
    shutil.rmtree(src)
    print(f"made {IMAGE}: {total / 1e6:.0f} MB of files in {len(LAYERS)} layers")


def in_child(work: Callable[[Path], None], arg: Path) -> None:
    """Run `work(arg)` in a forked child, and fail if it fails."""
    pid = os.fork()
    if pid == 0:
        try:
            work(arg)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
        sys.exit("making the image failed")


def blob_bytes(layout: Path) -> tuple[int, list[str]]:
    """Bytes a copy moves (layers + config) and the layer digests, from the layout."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / digest).read_text())
    layers = [d["digest"] for d in manifest["layers"]]
    return manifest["config"]["size"] + sum(d["size"] for d in manifest["layers"]), layers


@dataclass(frozen=True)
class Measured:
    """One run of one row."""

    seconds: float
    cpu: float
    """User + system CPU seconds of the process (and the children it waited for)."""
    rss_mb: float


def measured(cmd: list[str]) -> Measured:
    """Run a command as a new process: its wall time, CPU time and peak RSS (ru_maxrss, from
    wait4: the process's own, or its largest child's; a child starts from this process's
    peak, as exec keeps it)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd)} failed:\n{err.read().decode(errors='replace')[-2000:]}")
    return Measured(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def skopeo(*args: str) -> list[str]:
    """skopeo with an empty blob-info cache of its own (see the module's docstring)."""
    script = f'mount -t tmpfs -o size=64m lbbench {BLOB_CACHE} && exec "$0" "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "skopeo",
            *args]


def lb(root: Path, *args: str, tree: str | None = None) -> list[str]:
    """A layerbuild command; with `tree`, run from that checkout instead (env(1) sets its
    PYTHONPATH, so the process measured is still python's: env execs it)."""
    cmd = [sys.executable, "-m", "layerbuild.cli", "--root", str(root), *args]
    return cmd if tree is None else ["env", f"PYTHONPATH={tree}", *cmd]


class Bench:
    """The rows, each run as a fresh process into fresh places."""

    def __init__(self, work: Path, store: Path, registry: str) -> None:
        self.work, self.store, self.registry = work, store, registry
        self.layout = work / "layout"
        self.stamp = f"{int(time.time())}-{os.getpid()}"
        self.pushed: str | None = None
        self.count = 0

    def fresh(self, what: str) -> tuple[str, Path]:
        """A new repository name and a new, not yet existing path under runs/."""
        self.count += 1
        name = f"{self.registry}/lbbench/{what}-{self.stamp}-{self.count}"
        path = self.work / "runs" / f"{what}-{self.count}"
        return name, path

    def lb_push(self, tree: str | None = None) -> Measured:
        repo, _ = self.fresh("lbpush")
        shutil.rmtree(self.store / "image/overlay2/distribution", ignore_errors=True)
        result = measured(lb(self.store, "push", IMAGE, f"{repo}:1", tree=tree))
        self.pushed = f"{repo}:1"
        return result

    def skopeo_push(self) -> Measured:
        repo, _ = self.fresh("skpush")
        return measured(skopeo("copy", "-q", "--dest-tls-verify=false",
                               f"oci:{self.layout}", f"docker://{repo}:1"))

    def lb_pull(self, tree: str | None = None) -> Measured:
        _, path = self.fresh("lbpull")
        return measured(lb(path, "pull", self.source(), tree=tree))

    def skopeo_pull(self, transport: str) -> Measured:
        _, path = self.fresh(f"sk-{transport}")
        dest = f"{transport}:{path}"
        if transport == "containers-storage":  # a store of its own, overlay as podman's
            dest = f"{transport}:[overlay@{path}/root+{path}/run]{IMAGE}"
        return measured(skopeo("copy", "-q", "--src-tls-verify=false",
                               f"docker://{self.source()}", dest))

    def lb_load(self, tree: str | None = None) -> Measured:
        _, path = self.fresh("lbload")
        return measured(lb(path, "load", "-i", str(self.layout), tree=tree))

    def source(self) -> str:
        """What the pull rows pull: the image as layerbuild pushed it last."""
        if self.pushed is None:
            self.lb_push()
        assert self.pushed is not None
        return self.pushed

    def rows(self, baseline: str | None) -> dict[str, dict[str, Callable[[], Measured]]]:
        """The rows by group; with a baseline checkout, its layerbuild rows come after ours."""
        def ours(name: str, run: Callable[[str | None], Measured]
                 ) -> dict[str, Callable[[], Measured]]:
            rows = {f"layerbuild {name}": lambda: run(None)}
            if baseline is not None:
                rows[f"layerbuild {name}, baseline"] = lambda: run(baseline)
            return rows
        return {
            "push": {
                **ours("push", self.lb_push),
                "skopeo copy oci: -> docker://": self.skopeo_push,
            },
            "pull": {
                **ours("pull (blobs kept + unpacked)", self.lb_pull),
                "skopeo copy docker:// -> oci: (blobs only)":
                    lambda: self.skopeo_pull("oci"),
                "skopeo copy docker:// -> dir: (blobs only)":
                    lambda: self.skopeo_pull("dir"),
                "skopeo copy docker:// -> containers-storage: (unpacked)":
                    lambda: self.skopeo_pull("containers-storage"),
                **ours("load of the layout (unpack alone, no network)", self.lb_load),
            },
        }


def check_same_bytes(bench: Bench, expected: list[str]) -> None:
    """Both tools push the layers the layout has (the same bytes move)."""
    repo, _ = bench.fresh("check")
    subprocess.run(skopeo("copy", "-q", "--dest-tls-verify=false", f"oci:{bench.layout}",
                          f"docker://{repo}:1"), check=True, capture_output=True)
    for ref in (bench.source(), f"{repo}:1"):
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{ref}"], check=True, capture_output=True).stdout
        got = [d["digest"] for d in json.loads(raw)["layers"]]
        if got != expected:
            sys.exit(f"{ref}: its layers are not the layout's: {got}")


def settle(runs: Path) -> None:
    """An empty runs/, with the inodes and memory of what was there free for reuse."""
    if runs.exists() and any(runs.iterdir()):
        shutil.rmtree(runs)
        subprocess.run(["sync"], check=True)
        time.sleep(RECENT)
    runs.mkdir(exist_ok=True)


def report(results: dict[str, list[Measured]], size: int, layers: int, runs: int) -> None:
    mb = size / 1e6
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{layers} layers, {mb:.0f} MB of gzip blobs moved per copy; median of {runs} runs "
          f"(this process: {own:.0f} MB, a floor for the RSS column)")
    print("| operation | seconds | MB/s | CPU s | peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    for name, got in results.items():
        secs = statistics.median(m.seconds for m in got)
        cpu = statistics.median(m.cpu for m in got)
        rss = statistics.median(m.rss_mb for m in got)
        print(f"| {name} | {secs:.2f} | {mb / secs:.0f} | {cpu:.2f} | {rss:.0f} MB |")
    print(json.dumps({name: [round(m.seconds, 2) for m in got]
                      for name, got in results.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument("--workdir", default="/lbbench-registry")
    parser.add_argument("--keep", action="store_true", help="keep the image for the next run")
    parser.add_argument("--only", choices=["push", "pull"], help="only these rows")
    parser.add_argument("--baseline", metavar="TREE",
                        help="a layerbuild checkout to run too (its rows interleaved with ours)")
    args = parser.parse_args()
    work = Path(args.workdir)
    if not (work / "layout/index.json").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        in_child(make_image, work)  # so that this process stays small (see measured)
        time.sleep(RECENT)  # the files it was made from are gone
    settle(work / "runs")
    BLOB_CACHE.mkdir(parents=True, exist_ok=True)
    size, layers = blob_bytes(work / "layout")
    bench = Bench(work, work / "store", args.registry)
    check_same_bytes(bench, layers)
    baseline = str(Path(args.baseline).resolve()) if args.baseline else None
    rows = {name: run for group, items in bench.rows(baseline).items()
            if args.only in (None, group) for name, run in items.items()}
    results: dict[str, list[Measured]] = {name: [] for name in rows}
    for _ in range(args.runs):  # interleaved, so load on the machine hits every row alike
        for name, run in rows.items():
            subprocess.run(["sync"], check=True)  # no row pays for an earlier one's writes
            results[name].append(run())
        settle(work / "runs")
    report(results, size, len(layers), args.runs)
    shutil.rmtree(work / "runs")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
