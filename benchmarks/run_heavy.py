"""A RUN-heavy build under each network: none, the default private one, and the host's; and
as RUN was before its private network and seccomp filter (the host's network, unconfined).

Ten `RUN echo N > /fN` steps on a busybox base, none of them using the network, built cold
(a fresh store holding only the base, `--no-cache`) as a new `layerbuild build` process each
time; prints the median of the runs for each setting and its cost against the "before" one.
Needs root, /bin/busybox (busybox-static) and slirp4netns.

Usage: python benchmarks/run_heavy.py [--runs 3] [--steps 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NETWORKS = {"none": ["--network=none"], "default": [],
            "host": ["--network=host", "--allow", "network.host"],
            "before (host, no seccomp)": ["--network=host", "--allow", "network.host",
                                          "--security-opt", "seccomp=unconfined"]}
BEFORE = "before (host, no seccomp)"


def make_base(work: Path) -> Path:
    root = work / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    tar = work / "rootfs.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    return tar


def layerbuild(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(root), *args],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cold_build(work: Path, base: Path, context: Path, flags: list[str]) -> float:
    """One build in a fresh store holding only the base; its wall time."""
    store = Path(tempfile.mkdtemp(dir=work, prefix="store-"))
    layerbuild(store, "import", str(base), "lbbench-base")
    start = time.perf_counter()
    layerbuild(store, "build", "--no-cache", *flags, str(context))
    elapsed = time.perf_counter() - start
    shutil.rmtree(store)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = make_base(work)
        context = work / "ctx"
        context.mkdir()
        steps = "".join(f"RUN echo {n} > /f{n}\n" for n in range(args.steps))
        (context / "Buildfile").write_text("FROM lbbench-base\n" + steps)
        times: dict[str, list[float]] = {name: [] for name in NETWORKS}
        for _ in range(args.runs):  # interleaved, so load on the machine hits all alike
            for name, flags in NETWORKS.items():
                times[name].append(cold_build(work, base, context, flags))
    host = statistics.median(times[BEFORE])
    print(f"{args.steps} RUN steps, cold, median of {args.runs}")
    print("| network | build | per RUN | vs before |")
    print("| --- | --- | --- | --- |")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"| {name} | {median:.2f} s | {median / args.steps * 1000:.0f} ms "
              f"| {(median / host - 1) * 100:+.1f}% |")


if __name__ == "__main__":
    main()
