"""Peer runner: the same workloads built by layerbuild and by Docker's BuildKit, phase by phase.

Workloads, on a base made from /bin/busybox, or with ``--debian-rootfs DIR`` on a Debian
root filesystem made beforehand (``debootstrap --variant=minbase bookworm DIR MIRROR``):

1. ``copy-run``: a COPY of N small files (default 2,000) and 3 RUN steps;
2. ``copy-large``: a COPY of 25 x N small files (default 50,000);
3. ``run10``: a COPY of one stamp file, then 10 steps ``RUN echo N > /fN`` (no network).

Phases, per builder: ``cold`` (layerbuild from a fresh store holding only the imported base;
BuildKit with ``--no-cache``, which leaves the engine's cache, shared with other users, alone),
``no-op`` (the same build again), ``one-file`` (one context file changed: in ``copy-*`` a copied
file, in ``run10`` the stamp, so every RUN runs again) and ``export`` (``layerbuild save -o``
against ``docker save -o``, both uncompressed tars). Builders are interleaved (the order flips
each run), each command is a new process under ``/usr/bin/time -v``, and the table shows
medians and the ratio layerbuild / BuildKit. RUN has no network in either (``--network
none``: the test engine has no bridge).

With ``--venv`` the layerbuild timed is a fresh virtualenv's install of this checkout (``pip
install``, not editable), the command a user runs; without it, ``python -m layerbuild.cli`` of
the interpreter running the runner, with whatever its site-packages load at every start.

BuildKit does its work in dockerd and containerd, so its CPU-seconds are the docker CLI's
user+sys plus what those daemons (and their reaped children) used meanwhile, read from
/proc; its peak RSS is the CLI's only, since the daemons' share of one build cannot be
isolated: read that column as a lower bound.

Stores and contexts are removed only when the runner ends (see `Peer.phases`): leave a few
minutes between two runs of it, or after deleting many files, before timing file creation.

Needs root, /bin/busybox (busybox-static), /usr/bin/time (package ``time``) and a Docker
engine at the default socket.

Usage: python benchmarks/peer.py [--runs 3] [--workloads copy-run run10] [--files 2000]
                                [--debian-rootfs DIR] [--venv]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DOCKER = shutil.which("docker", path="/usr/bin") or "docker"
TIME = "/usr/bin/time"
BASE = "lbpeer-base"
APPLETS = ("sh", "ls", "wc", "echo", "cat")
PHASES = ("cold", "no-op", "one-file", "export")
BUILDERS = ("layerbuild", "buildkit")
STARTED = time.time_ns()
REPO = Path(__file__).resolve().parents[1]
LAYERBUILD = [sys.executable, "-m", "layerbuild.cli"]
"""The layerbuild command timed (`--venv`: the one a fresh install gives)."""
COPY_RUN = f"""\
FROM {BASE}
WORKDIR /app
COPY . /app/
RUN ls -R /app | wc -l > /count
RUN echo built > /built
RUN cat /count /built > /summary
"""
COPY_LARGE = f"FROM {BASE}\nWORKDIR /app\nCOPY . /app/\n"
RUN10 = f"FROM {BASE}\nCOPY stamp /stamp\n" + "".join(
    f"RUN echo {n} > /f{n}\n" for n in range(1, 11))


@dataclass(frozen=True)
class Workload:
    """A Buildfile, how many context files it copies, and which file a one-file change edits."""

    name: str
    buildfile: str
    files: int
    changed: str


@dataclass(frozen=True)
class Sample:
    """One command's wall time, CPU-seconds (user+sys) and peak RSS."""

    wall: float
    cpu: float
    rss_kib: int


def make_base(work: Path, debian: Path | None = None) -> Path:
    """The base image's tar: busybox's applets, or a Debian root filesystem made before."""
    tar = work / "rootfs.tar"
    if debian is not None:
        subprocess.run(["tar", "-C", str(debian), "-cf", str(tar), "."], check=True)
        return tar
    root = work / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    return tar


def install(work: Path) -> list[str]:
    """The layerbuild command of a fresh virtualenv with this checkout installed in it (not
    editable), as a user installs it: its interpreter starts without the development
    environment's path hooks."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", str(REPO)], check=True)
    return [str(venv / "bin/layerbuild")]


def make_context(path: Path, workload: Workload) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(workload.files):
        d = path / f"dir{i % 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}.txt").write_text(f"content of file {i}\n" * 4)
    (path / "stamp").write_text("stamp\n")
    (path / "Dockerfile").write_text(workload.buildfile)


def workloads(files: int) -> dict[str, Workload]:
    return {w.name: w for w in (
        Workload("copy-run", COPY_RUN, files, "dir7/file7.txt"),
        Workload("copy-large", COPY_LARGE, 25 * files, "dir7/file7.txt"),
        Workload("run10", RUN10, 0, "stamp"),
    )}


def daemon_ticks() -> int:
    """CPU ticks used so far by dockerd and containerd, their reaped children included."""
    found = subprocess.run(["pgrep", "-x", "dockerd|containerd"], capture_output=True,
                           text=True).stdout.split()
    total = 0
    for pid in found:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total


def measure(cmd: list[str], env: dict[str, str], work: Path, daemons: bool) -> Sample:
    """Run cmd under /usr/bin/time -v; with daemons, add the Docker daemons' CPU meanwhile."""
    report = work / "time.txt"
    ticks = daemon_ticks() if daemons else 0
    start = time.perf_counter()
    subprocess.run([TIME, "-v", "-o", str(report), *cmd], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    extra = (daemon_ticks() - ticks) / os.sysconf("SC_CLK_TCK") if daemons else 0.0
    values = dict(line.strip().rsplit(": ", 1) for line in report.read_text().splitlines()
                  if ": " in line)
    cpu = float(values["User time (seconds)"]) + float(values["System time (seconds)"])
    return Sample(wall, cpu + extra, int(values["Maximum resident set size (kbytes)"]))


class Peer:
    """Runs the four phases of one workload for one builder."""

    def __init__(self, work: Path, base_tar: Path, ctx: Path, workload: Workload) -> None:
        self.work, self.base_tar, self.ctx = work, base_tar, ctx
        self.name = workload.name
        self.tag, self.changed = f"lbpeer:{workload.name}", ctx / workload.changed
        self.env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed layerbuild has bytecode
        self.store = work / "store"

    def lb(self, *args: str) -> list[str]:
        return [*LAYERBUILD, "--root", str(self.store), *args]

    def phases(self, builder: str, run: int) -> dict[str, Sample]:
        ours = builder == "layerbuild"
        if ours:
            # A new store per run, none removed before the runner ends: ext4 passes over
            # inodes freed in the last 60-360 s when it allocates one, so a mass delete
            # slows the file creation of builds after it (BuildKit's --no-cache deletes
            # nothing).
            self.store = self.work / f"store-{self.name}-{run}"
            subprocess.run(self.lb("import", str(self.base_tar), BASE), check=True,
                           env=self.env, stdout=subprocess.DEVNULL)
            build = self.lb("build", "--network", "none", "-t", self.tag, str(self.ctx))
            cold = build
            save = self.lb("save", "-o", str(self.work / "out.tar"), self.tag)
        else:
            build = [DOCKER, "build", "--network", "none", "-t", self.tag, str(self.ctx)]
            cold = [*build[:2], "--no-cache", *build[2:]]
            save = [DOCKER, "save", "-o", str(self.work / "out.tar"), self.tag]

        def go(cmd: list[str]) -> Sample:
            return measure(cmd, self.env, self.work, daemons=not ours)

        out = {"cold": go(cold), "no-op": go(build)}
        # Unique to this runner's start too: BuildKit keeps its cache across runners, and a
        # change it has seen before would be a cache hit.
        self.changed.write_text(f"changed by {builder} in run {run} of {STARTED}\n")
        out["one-file"] = go(build)
        out["export"] = go(save)
        (self.work / "out.tar").unlink()
        return out


def bench(work: Path, base_tar: Path, workload: Workload,
          runs: int) -> dict[str, dict[str, list[Sample]]]:
    ctx = work / f"ctx-{workload.name}"
    make_context(ctx, workload)
    peer = Peer(work, base_tar, ctx, workload)
    samples: dict[str, dict[str, list[Sample]]] = {
        b: {p: [] for p in PHASES} for b in BUILDERS}
    for run in range(runs):
        order = BUILDERS if run % 2 == 0 else BUILDERS[::-1]
        for builder in order:
            for phase, sample in peer.phases(builder, run).items():
                samples[builder][phase].append(sample)
    subprocess.run([DOCKER, "rmi", "-f", peer.tag], capture_output=True)
    return samples


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs > 0 else "n/a"


def rows(name: str, samples: dict[str, dict[str, list[Sample]]]) -> list[str]:
    out = []
    for phase in PHASES:
        med = {b: Sample(statistics.median(s.wall for s in samples[b][phase]),
                         statistics.median(s.cpu for s in samples[b][phase]),
                         int(statistics.median(s.rss_kib for s in samples[b][phase])))
               for b in BUILDERS}
        lb, bk = med["layerbuild"], med["buildkit"]
        out.append(
            f"| {name} | {phase} | {lb.wall:.2f} | {bk.wall:.2f} | {ratio(lb.wall, bk.wall)} "
            f"| {lb.cpu:.2f} | {bk.cpu:.2f} | {ratio(lb.cpu, bk.cpu)} "
            f"| {lb.rss_kib / 1024:.0f} | {bk.rss_kib / 1024:.0f} "
            f"| {ratio(lb.rss_kib, bk.rss_kib)} |")
    return out


def header(runs: int, base: str, command: str) -> list[str]:
    engine = subprocess.run([DOCKER, "version", "-f", "{{.Server.Version}}"],
                            capture_output=True, text=True).stdout.strip()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Machine: {len(os.sched_getaffinity(0))} CPUs (nproc), Linux {platform.release()}; "
        f"Docker engine {engine}; {date}; base: {base}; median of {runs} run(s), "
        f"builders interleaved; layerbuild: {command}.",
        "",
        "| workload | phase | layerbuild s | BuildKit s | ratio | layerbuild CPU s "
        "| BuildKit CPU s | ratio | layerbuild RSS MiB | BuildKit RSS MiB¹ | ratio |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000,
                        help="files of copy-run; copy-large copies 25 times as many")
    parser.add_argument("--workloads", nargs="+", choices=list(workloads(0)),
                        default=list(workloads(0)))
    parser.add_argument("--debian-rootfs", type=Path,
                        help="a Debian root filesystem (debootstrap) as the base of every "
                             "workload, instead of busybox")
    parser.add_argument("--venv", action="store_true",
                        help="time layerbuild installed into a fresh virtualenv (pip install "
                             "of this checkout), as users run it, not this interpreter's")
    args = parser.parse_args()
    if subprocess.run([DOCKER, "info"], capture_output=True).returncode != 0:
        sys.exit("peer: no Docker engine answers at the default socket")
    if not os.access(TIME, os.X_OK):
        sys.exit(f"peer: {TIME} is missing (apt-get install time)")
    chosen = workloads(args.files)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        if args.venv:
            LAYERBUILD[:] = install(work)
        base_tar = make_base(work, args.debian_rootfs)
        subprocess.run([DOCKER, "import", str(base_tar), BASE], check=True,
                       stdout=subprocess.DEVNULL)
        lines = header(args.runs, "Debian (debootstrap minbase)" if args.debian_rootfs
                       else "busybox", "a fresh virtualenv's install" if args.venv
                       else f"{sys.executable} -m layerbuild.cli")
        try:
            for name in args.workloads:
                lines += rows(f"{name} ({chosen[name].files} files)" if chosen[name].files
                              else name, bench(work, base_tar, chosen[name], args.runs))
        finally:
            subprocess.run([DOCKER, "rmi", "-f", BASE], capture_output=True)
    lines += ["", "¹ the docker CLI's peak RSS only: BuildKit's own memory is in dockerd."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
