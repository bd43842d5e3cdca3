"""Fully cached rebuilds: layerbuild against Docker's BuildKit on the same Buildfile and context.

For contexts of 2,000 and 50,000 small files (and a one-file change), times the second and
later `layerbuild build` runs (a new process each, as a user runs it) and, when a Docker
engine answers, `DOCKER_BUILDKIT=1 docker build` of the same Buildfile from the same base.
Needs root and /bin/busybox (busybox-static).

Usage: python benchmarks/cached_rebuild.py [--files 2000 50000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILDFILE = "FROM lbbench-base\nWORKDIR /app\nCOPY . /app/\nRUN ls -R /app | wc -l > /count\n"
DOCKER = shutil.which("docker", path="/usr/bin") or "docker"


def make_base(work: Path) -> Path:
    root = work / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "ls", "wc"):
        (root / "bin" / applet).symlink_to("busybox")
    tar = work / "rootfs.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    return tar


def make_context(path: Path, files: int) -> None:
    for i in range(files):
        d = path / f"dir{i % 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}.txt").write_text(f"content of file {i}\n" * 4)
    (path / "Dockerfile").write_text(BUILDFILE)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[2000, 50000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    docker = subprocess.run([DOCKER, "info"], capture_output=True).returncode == 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "LAYERBUILD_ROOT": str(work / "store"), "DOCKER_BUILDKIT": "1"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed layerbuild has its bytecode
        tar = make_base(work)
        lb = [sys.executable, "-m", "layerbuild.cli"]
        subprocess.run([*lb, "import", str(tar), "lbbench-base"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        if docker:
            subprocess.run([DOCKER, "import", str(tar), "lbbench-base"], check=True,
                           stdout=subprocess.DEVNULL)
        print(f"{'context':>14} {'tool':>10} {'first':>8} {'cached (median)':>16} "
              f"{'one file changed':>17}")
        for files in args.files:
            ctx = work / f"ctx{files}"
            make_context(ctx, files)
            tools = {"layerbuild": [*lb, "build", "-t", f"lbbench:{files}", str(ctx)]}
            if docker:
                tools["buildkit"] = [DOCKER, "build", "--network", "host", "-t",
                                     f"lbbench:{files}", str(ctx)]
            for name, cmd in tools.items():
                first = timed(cmd, env)
                cached = statistics.median(timed(cmd, env) for _ in range(args.runs))
                (ctx / "dir7" / "file7.txt").write_text(f"changed by {name}\n")
                changed = timed(cmd, env)
                print(f"{files:>8} files {name:>10} {first:8.2f} {cached:16.3f} {changed:17.2f}")
        if docker:
            for files in args.files:
                subprocess.run([DOCKER, "rmi", "-f", f"lbbench:{files}"], capture_output=True)
            subprocess.run([DOCKER, "rmi", "-f", "lbbench-base"], capture_output=True)


if __name__ == "__main__":
    main()
