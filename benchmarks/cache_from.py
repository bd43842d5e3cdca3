"""A cold CI runner with `--cache-from`: layerbuild against Docker's BuildKit, same registry.

One "machine" builds a multi-stage Buildfile (a context of small files, a few RUN steps) and
exports its cache to the local test registry (layerbuild: `--cache-to type=registry,mode=max`;
BuildKit of Docker 20.10: an inline cache, the only registry cache its `docker build` has, in
a pushed image). Then, per run, a cold runner builds the same Buildfile and context with
`--cache-from`: layerbuild from a fresh store holding only the base (pulled), BuildKit after
`docker builder prune -af` and the removal of the images it built. RUN has no network in
either (`--network none`: the test engine has no bridge). Prints the median
times side by side. Needs root, /bin/busybox, a Docker engine and the registries that
`scripts/registries` starts (127.0.0.1:5000).

Usage: python benchmarks/cache_from.py [--files 2000] [--runs 3]
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

REGISTRY = "127.0.0.1:5000"
DOCKER = shutil.which("docker", path="/usr/bin") or "docker"
BUILDFILE = """\
FROM {base} AS build
COPY src/ /src/
RUN find /src -type f | wc -l > /count && tar -cf /bundle.tar /src
FROM {base}
COPY --from=build /bundle.tar /bundle.tar
COPY --from=build /count /count
RUN tar -xf /bundle.tar && rm /bundle.tar
CMD ["cat", "/count"]
"""


def run(*cmd: str, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)
    return time.perf_counter() - start


def layerbuild(root: Path, *args: str) -> float:
    return run(sys.executable, "-m", "layerbuild.cli", "--root", str(root), *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs" / "bin"
        rootfs.mkdir(parents=True)
        shutil.copy2("/bin/busybox", rootfs / "busybox")
        for applet in ("sh", "find", "wc", "tar", "rm", "cat"):
            (rootfs / applet).symlink_to("busybox")
        subprocess.run(["tar", "-C", str(work / "rootfs"), "-cf", str(work / "base.tar"), "."],
                       check=True)
        base = f"{REGISTRY}/lbbench/cachefrom-base:1"
        seed = work / "seed"
        layerbuild(seed, "import", str(work / "base.tar"), base)
        layerbuild(seed, "push", base)
        context = work / "ctx"
        for i in range(args.files):
            d = context / "src" / f"d{i % 50}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i}.txt").write_text(f"file {i}\n" * 8)
        (context / "Dockerfile").write_text(BUILDFILE.format(base=base))
        cache = f"{REGISTRY}/lbbench/cachefrom-cache:lb"
        layerbuild(seed, "build", "--network", "none", "-t", "bench:lb", "--cache-to",
                   f"type=registry,ref={cache},mode=max", str(context))
        env = {"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
        bk_image = f"{REGISTRY}/lbbench/cachefrom-bk:1"
        run(DOCKER, "pull", base)
        run(DOCKER, "build", "--network", "none", "--build-arg", "BUILDKIT_INLINE_CACHE=1",
            "-t", bk_image,
            str(context), env=env)
        run(DOCKER, "push", bk_image)
        ours, theirs = [], []
        for n in range(args.runs):
            cold = work / f"cold{n}"
            layerbuild(cold, "pull", base)
            ours.append(layerbuild(cold, "build", "--network", "none", "-t", "bench:cold",
                                   "--cache-from", cache, str(context)))
            subprocess.run([DOCKER, "rmi", "-f", bk_image, "bench:bkcold"],
                           capture_output=True)
            run(DOCKER, "builder", "prune", "-af")
            theirs.append(run(DOCKER, "build", "--network", "none", "--cache-from", bk_image,
                              "-t", "bench:bkcold", str(context), env=env))
            shutil.rmtree(cold)
        print(f"cold runner with --cache-from, {args.files} files, median of {args.runs}:")
        print(f"  layerbuild  {statistics.median(ours):6.2f} s   (runs: "
              f"{', '.join(f'{t:.2f}' for t in ours)})")
        print(f"  BuildKit    {statistics.median(theirs):6.2f} s   (runs: "
              f"{', '.join(f'{t:.2f}' for t in theirs)})")
        subprocess.run([DOCKER, "rmi", "-f", bk_image, "bench:bkcold"], capture_output=True)


if __name__ == "__main__":
    main()
