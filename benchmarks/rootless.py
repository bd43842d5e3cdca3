"""Rootless against root: the same builds, same run, side by side.

Root builds in a store of its own; the user `lbrootless` (which scripts/setup makes, with a
subordinate id range) builds the same Buildfile and context in a user namespace, into a store
of its own, from the same base (root imports it and saves it; the user loads that archive).
For each, per run: every step's time (from `--progress plain`), the whole cold build, and
`save` of the image (export MB/s). The two image IDs must be equal: the benchmark stops if
they are not. Prints medians side by side. Needs root, /bin/busybox, setpriv, newuidmap, and a
python3 the user can run with layerbuild's dependencies (/opt/layerbuild-unit-venv, made by
scripts/unit-unprivileged, if this one is out of its reach). With `--fuse`, a third column:
rootless through fuse-overlayfs, the fallback for kernels before 5.11.

Usage: python benchmarks/rootless.py [--runs 3] [--files 2000] [--mb 200] [--fuse]
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import layerbuild

USER = "lbrootless"
VENV_PYTHON = "/opt/layerbuild-unit-venv/bin/python"
BUILDFILE = """\
FROM base
COPY src/ /src/
RUN dd if=/dev/zero of=/big bs=1M count={mb} 2>/dev/null && chown 1000:1000 /big
RUN mkdir /many && cd /many && for i in $(seq 1 {files}); do echo $i > f$i; done
RUN rm -rf /src/d1 && chown -R 1000:1000 /many
USER 1000
RUN id -u > /tmp/who
"""
STEP = re.compile(r"^\[\s*(\d+)/(\d+)\] (.*)$")
TIME = re.compile(r"^  (\d+\.\d+)s$")


def _timed(argv: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[-6:])} failed:\n{done.stdout}{done.stderr}")
    return took, done.stdout + done.stderr


def _steps(output: str) -> dict[str, float]:
    found, current = {}, None
    for line in output.splitlines():
        if (m := STEP.match(line)) is not None:
            current = f"{m.group(1)}/{m.group(2)} {m.group(3)[:40]}"
        elif current is not None and (t := TIME.match(line)) is not None:
            found[current] = float(t.group(1))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--fuse", action="store_true",
                        help="also rootless through fuse-overlayfs (LAYERBUILD_OVERLAY=fuse)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run it as root: it builds both as root and as the user " + USER)
    entry = pwd.getpwnam(USER)
    python = next((p for p in (sys.executable, VENV_PYTHON) if subprocess.run(
        ["setpriv", f"--reuid={USER}", f"--regid={entry.pw_gid}", "--clear-groups", "--", p,
         "-c", "import isal, zstandard, jinja2, urllib3"], capture_output=True).returncode == 0),
        None)
    if python is None:
        sys.exit(f"no python3 {USER} can run with layerbuild's dependencies")
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="lb-rootless-bench-") as tmp:
        work = Path(tmp)
        package = work / "pkg"
        shutil.copytree(Path(layerbuild.__file__).parent, package / "layerbuild",
                        ignore=shutil.ignore_patterns("__pycache__"))
        rootfs = work / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        (rootfs / "tmp").chmod(0o1777)
        shutil.copy2("/bin/busybox", rootfs / "bin/busybox")
        for applet in ("sh", "dd", "chown", "mkdir", "seq", "rm", "id", "echo"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf",
                        str(work / "base.tar"), "."], check=True)
        context = work / "ctx"
        for i in range(args.files):
            d = context / "src" / f"d{i % 20}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i}.txt").write_text(f"file {i}\n" * 16)
        (context / "Buildfile").write_text(BUILDFILE.format(mb=args.mb, files=args.files))
        home = work / "home"
        home.mkdir()
        for path in (work, *work.rglob("*")):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home),
               "PYTHONPATH": str(package)}

        def as_root(store: Path, *cli: str) -> list[str]:
            return [sys.executable, "-m", "layerbuild.cli", "--root", str(store), *cli]

        def as_user(store: Path, *cli: str, overlay: str = "kernel") -> list[str]:
            return ["setpriv", f"--reuid={USER}", f"--regid={entry.pw_gid}", "--init-groups",
                    "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                    f"LAYERBUILD_OVERLAY={overlay}", python, "-m", "layerbuild.cli",
                    "--root", str(store), *cli]

        def as_fuse(store: Path, *cli: str) -> list[str]:
            return as_user(store, *cli, overlay="fuse")

        seed = work / "seed"
        subprocess.run(as_root(seed, "import", str(work / "base.tar"), "base"), check=True,
                       capture_output=True)
        subprocess.run(as_root(seed, "save", "-o", str(work / "base-image.tar"), "base"),
                       check=True, capture_output=True)
        modes = {"root": as_root, "rootless": as_user}
        if args.fuse:
            modes["fuse"] = as_fuse
        results: dict[str, dict[str, list[float]]] = {mode: {} for mode in modes}
        for n in range(args.runs):
            ids = {}
            for mode, argv in modes.items():
                store = (work if mode == "root" else home) / f"store-{mode}-{n}"
                _timed(argv(store, "load", "-i", str(work / "base-image.tar")), home)
                took, out = _timed(argv(store, "build", "-t", "bench", "--network", "none",
                                        "--source-date-epoch", "0", "--progress", "plain",
                                        str(context)), home)
                ids[mode] = out.split("Successfully built ")[1].split()[0]
                archive = home / f"{mode}-{n}.tar"
                saved, _ = _timed(argv(store, "save", "-o", str(archive), "bench"), home)
                mb = archive.stat().st_size / 1e6
                row = results[mode]
                row.setdefault("build (all steps)", []).append(took)
                for step, seconds in _steps(out).items():
                    row.setdefault(step, []).append(seconds)
                row.setdefault("save MB/s", []).append(mb / saved)
                archive.unlink()
                subprocess.run(["rm", "-rf", str(store)], check=True)
            if len(set(ids.values())) != 1:
                sys.exit(f"the image IDs differ: {ids}")
        print(f"rootless against root, {args.files} files, {args.mb} MB, median of "
              f"{args.runs} (the same image ID every way):")
        print(f"  {'':44}" + "".join(f" {mode:>9}" for mode in modes))
        for name in results["root"]:
            unit = "" if name.endswith("MB/s") else " s"
            print(f"  {name:44}" + "".join(
                f" {statistics.median(results[mode].get(name, [float('nan')])):7.2f}{unit:2}"
                for mode in modes))


if __name__ == "__main__":
    main()
