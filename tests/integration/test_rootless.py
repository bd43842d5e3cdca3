"""layerbuild run by users who are not root: one with a subordinate id range builds in a user
namespace of its own the same images root builds (same image IDs; Docker loads and runs
them), in a private store of its own, leaving no process or mount; one without a range works
for root-owned images and is told in one line what to add for the others."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Docker, run_cli
from treeutil import need, need_root, need_tool

import layerbuild

USER = "lbrootless"  # scripts/setup makes it, with a subordinate id range
VENV_PYTHON = "/opt/layerbuild-unit-venv/bin/python"  # scripts/unit-unprivileged makes it
DEPENDENCIES = "import isal, zstandard, jinja2, urllib3"
EPOCH = ("--source-date-epoch", "0", "--progress", "plain")
# As the installed `layerbuild` script runs the CLI. (Run by `python -m`, some interrupted
# builds end by SIGINT instead of exit code 130, which a shell shows as 130 all the same.)
CONSOLE_SCRIPT = "import sys; from layerbuild.cli import main; sys.argv[0] = 'layerbuild'; " \
                 "sys.exit(main())"

BUILDFILE = """\
FROM base
RUN mkdir -p /d/sub /d/keep && touch /d/sub/a /d/b /d/keep/k && ln /d/b /d/hard \\
 && chmod 4755 /d/b && chown 1000:1000 /d/keep/k
RUN rm /d/sub/a /etc/motd && rm -rf /d/sub && mkdir /d/sub && touch /d/sub/new \\
 && chown 123:456 /d/sub/new
COPY --chown=1000:1000 f.txt /home/user/f.txt
COPY --chmod=4755 tool.sh /usr/local/bin/tool
USER 1000
RUN id -u > /home/user/id && touch /home/user/made-by-user && ls -ln /home/user
USER root
RUN rm /home/user/notes
CMD ["sh"]
"""

CHECK = ("test \"$(cat /home/user/id)\" = 1000 && test ! -e /home/user/notes "
         "&& test ! -e /d/sub/a && test -e /d/sub/new && test ! -e /etc/motd "
         "&& test -u /d/b && test -u /usr/local/bin/tool && test /d/b -ef /d/hard "
         "&& stat -c '%u:%g' /home/user/f.txt /home/user/made-by-user /d/keep/k /d/sub/new")


@dataclass
class User:
    """Runs the CLI as a user who is not root, from a world-readable copy of the package."""

    name: str
    home: Path
    python: str
    package: Path
    overlay: str = ""
    """LAYERBUILD_OVERLAY for its runs ("" for the default: the kernel's where it mounts)."""

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.home),
                "PYTHONPATH": str(self.package), "LANG": "C.UTF-8",
                **({"LAYERBUILD_OVERLAY": self.overlay} if self.overlay else {})}

    def argv(self, *args: str) -> list[str]:
        gid = pwd.getpwnam(self.name).pw_gid
        return ["setpriv", f"--reuid={self.name}", f"--regid={gid}", "--init-groups",
                "--", "env", "-i", *(f"{k}={v}" for k, v in self.env().items()), self.python,
                "-c", CONSOLE_SCRIPT, *args]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=600,
                              cwd=self.home, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: layerbuild {' '.join(args)} failed "
                                 f"({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    @property
    def store(self) -> Path:
        return self.home / ".local/share/layerbuild"

    def give(self, path: Path) -> Path:
        """`path` (a file or tree) made this user's."""
        for p in (path, *(path.rglob("*") if path.is_dir() else ())):
            os.chown(p, pwd.getpwnam(self.name).pw_uid, pwd.getpwnam(self.name).pw_gid,
                     follow_symlinks=False)
        return path


def _python_for(name: str) -> str | None:
    """An interpreter `name` can run with layerbuild's dependencies (this one is often under
    /root, out of its reach)."""
    for python in (sys.executable, VENV_PYTHON):
        probe = subprocess.run(["setpriv", f"--reuid={name}",
                                f"--regid={pwd.getpwnam(name).pw_gid}", "--clear-groups",
                                "--", python, "-c", DEPENDENCIES], capture_output=True)
        if probe.returncode == 0:
            return python
    return None


@pytest.fixture(scope="module")
def package() -> Iterator[Path]:
    """A world-readable copy of the package."""
    work = Path(tempfile.mkdtemp(prefix="layerbuild-pkg-", dir="/var/tmp"))
    try:
        shutil.copytree(Path(layerbuild.__file__).parent, work / "layerbuild",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in (work, *work.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _user(name: str, package: Path) -> Iterator[User]:
    need_root()
    need_tool("setpriv", "newuidmap", "newgidmap")
    try:
        pwd.getpwnam(name)
    except KeyError:
        need(False, f"needs the user {name} (scripts/setup makes it)")
    python = _python_for(name)
    need(python is not None, f"needs a python3 {name} can run with layerbuild's dependencies "
         f"({VENV_PYTHON}, made by scripts/unit-unprivileged)")
    assert python is not None
    home = Path(tempfile.mkdtemp(prefix=f"layerbuild-{name}-", dir="/var/tmp"))
    user = User(name, home, python, package)
    user.give(home)
    try:
        yield user
    finally:
        if name == USER:  # only these tests run as it (nobody's are not all ours: no pkill)
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        # Files of the subordinate ids are the namespace's: root removes them.
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def rootless(package: Path) -> Iterator[User]:
    yield from _user(USER, package)


@pytest.fixture
def nobody(package: Path) -> Iterator[User]:
    yield from _user("nobody", package)


def _context(user: User) -> Path:
    context = user.home / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text(BUILDFILE)
    (context / "f.txt").write_text("for the user\n")
    (context / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    return user.give(context)


def _image_id(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout.split("Successfully built ")[1].split()[0]


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(path) in line]


def _processes_of(name: str) -> str:
    return subprocess.run(["pgrep", "-a", "-u", name], capture_output=True, text=True).stdout


def _written_outside(user: User) -> list[str]:
    """Files the user owns in the shared temp dirs, other than under its home."""
    found = subprocess.run(["find", "/tmp", "/var/tmp", "/dev/shm", "-xdev", "-user", user.name,
                            "-not", "-path", f"{user.home}*", "-not", "-path",
                            f"{user.package}*"], capture_output=True, text=True)
    return found.stdout.split()


@pytest.mark.parametrize("overlay", ["", "fuse"])
def test_a_rootless_build_is_roots_build(rootless: User, busybox_tar: Path, tmp_path: Path,
                                         docker: Docker, overlay: str) -> None:
    """With the kernel's overlayfs, and with fuse-overlayfs (the fallback for kernels before
    5.11, forced here): the same image as root's, whichever overlay made its layers."""
    rootless.overlay = overlay
    # The same base in both stores: root imports it and saves it; the user loads that.
    root_store = tmp_path / "store"
    run_cli(root_store, "import", str(busybox_tar), "base")
    run_cli(root_store, "save", "-o", str(tmp_path / "base.tar"), "base")
    archive = rootless.give(Path(shutil.copy(tmp_path / "base.tar", rootless.home)))
    rootless("load", "-i", str(archive))
    context = _context(rootless)
    mine = rootless("build", "-t", "app", *EPOCH, str(context))
    roots = run_cli(root_store, "build", "-t", "app", *EPOCH, str(context))
    assert _image_id(mine) == _image_id(roots), mine.stdout + mine.stderr
    # RUN as USER 1000 sees the image's ids, not the host's it is mapped to.
    assert re.search(r" 1000 +1000 .* f\.txt\n", mine.stderr), mine.stderr
    # The user's store is theirs alone, and marked rootless.
    assert rootless.store.stat().st_mode & 0o777 == 0o700
    assert (rootless.store / "userxattr").is_file()
    assert not _mounts_under(rootless.home) and not _processes_of(rootless.name)
    assert not any((rootless.store / "tmp").iterdir())
    assert _written_outside(rootless) == []
    # Docker loads what the user saved, and the files are as built.
    saved = rootless("save", "-o", str(rootless.home / "app.tar"), "app")
    assert saved.returncode == 0
    loaded = docker("load", "-i", str(rootless.home / "app.tar")).stdout
    ref = docker.name("rootless")
    docker("tag", _image_id(mine), ref)
    assert "app:latest" in loaded, loaded
    docker.created.append("app:latest")
    ran = docker("run", "--rm", "--network", "none", ref, "sh", "-c", CHECK)
    assert ran.stdout.split() == ["1000:1000", "1000:1000", "1000:1000", "123:456"], ran.stdout


def test_info_says_rootless_and_what_works(rootless: User, nobody: User) -> None:
    said = rootless("info").stdout
    assert "Mode:             rootless (user lbrootless, ids 0-65536 mapped)" in said, said
    assert "Overlay:          kernel overlayfs with userxattr" in said, said
    assert f"Store:            {rootless.store}" in said, said
    assert "fix:" not in said.split("RUN network")[0], said
    rootless.overlay = "fuse"
    forced = rootless("info").stdout
    assert re.search(r"Overlay: +fuse-overlayfs /\S+/fuse-overlayfs \(LAYERBUILD_OVERLAY=fuse\)\n",
                     forced), forced
    rootless.overlay = ""
    lacking = nobody("info").stdout
    assert "Subordinate uids: none\n" in lacking, lacking
    assert "fix: add a range for nobody to /etc/subuid and /etc/subgid" in lacking, lacking


def test_a_user_without_a_range_builds_root_owned_images_and_is_told_what_to_add(
        nobody: User, busybox_tar: Path, tmp_path: Path) -> None:
    # Owners other than root cannot be mapped: one line says what to add.
    tar = nobody.give(Path(shutil.copy(busybox_tar, nobody.home / "rootfs.tar")))
    refused = nobody("import", str(tar), "base", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines() == [refused.stderr.strip()], refused.stderr
    assert "'./home/user' needs the owner 1000:1000" in refused.stderr, refused.stderr
    assert "add a range for nobody to /etc/subuid and /etc/subgid" in refused.stderr
    # A root-only rootfs imports and builds (RUN, COPY) with the one id there is.
    only_root = _rootfs_of(busybox_tar, tmp_path)
    subprocess.run(["chown", "-R", "-h", "0:0", str(only_root)], check=True)
    plain = nobody.home / "plain.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(only_root), "-cf", str(plain), "."],
                   check=True)
    nobody.give(plain)
    nobody("import", str(plain), "base")
    context = nobody.home / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text("FROM base\nRUN echo made > /made\nCOPY f /f\n")
    (context / "f").write_text("f\n")
    nobody.give(context)
    built = nobody("build", "-t", "app", "--progress", "plain", str(context))
    assert "Successfully tagged app:latest" in built.stdout, built.stdout + built.stderr
    # A copy given another owner says so in one line too.
    (context / "Buildfile").write_text("FROM base\nCOPY --chown=1000 f /f\n")
    chown = nobody("build", "--progress", "plain", str(context), check=False)
    last = chown.stderr.strip().splitlines()[-1]
    assert chown.returncode == 1 and last.startswith("layerbuild: error: "), chown.stderr
    assert "needs the owner 1000:1000" in last and "add a range for nobody" in last, last


def _rootfs_of(tar: Path, tmp_path: Path) -> Path:
    out = tmp_path / "unpacked"
    out.mkdir()
    subprocess.run(["tar", "-C", str(out), "-xf", str(tar)], check=True)
    return out


def test_stores_of_the_other_kind_are_refused(rootless: User) -> None:
    rootless("images")  # makes the user's store
    proc = run_cli(rootless.store, "images", check=False)
    assert proc.returncode == 1 and "is a rootless one" in proc.stderr, proc.stderr
    roots = rootless.home / "roots"
    run_cli(roots, "images")  # root's, out of the user's reach
    reach = rootless("--root", str(roots), "images", check=False)
    assert reach.returncode == 1 and "it is another user's" in reach.stderr, reach.stderr
    rootless.give(roots)
    refused = rootless("--root", str(roots), "images", check=False)
    assert refused.returncode == 1 and "was made by root" in refused.stderr, refused.stderr
    theirs = rootless("--root", "/var/lib/layerbuild", "images", check=False)
    assert theirs.returncode == 1 and "it is " in theirs.stderr, theirs.stderr
    assert "Traceback" not in theirs.stderr and len(theirs.stderr.splitlines()) == 1


@pytest.mark.parametrize("overlay", ["", "fuse"])
def test_an_interrupted_rootless_build_leaves_nothing(rootless: User, busybox_tar: Path,
                                                     tmp_path: Path, overlay: str) -> None:
    rootless.overlay = overlay
    root_store = tmp_path / "store"
    run_cli(root_store, "import", str(busybox_tar), "base")
    run_cli(root_store, "save", "-o", str(rootless.home / "base.tar"), "base")
    rootless("load", "-i", str(rootless.give(rootless.home / "base.tar")))
    context = rootless.home / "slow"
    context.mkdir()
    (context / "Buildfile").write_text("FROM base\nRUN echo started && sleep 60\n")
    rootless.give(context)
    proc = subprocess.Popen(rootless.argv("build", "--progress", "plain", str(context)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=rootless.home, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "started" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    deadline = time.monotonic() + 10
    while _processes_of(rootless.name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_of(rootless.name)
    assert not _mounts_under(rootless.home)
    assert not any((rootless.store / "tmp").iterdir())
    # A failing step leaves nothing either.
    (context / "Buildfile").write_text("FROM base\nRUN echo failing && false\n")
    failed = rootless("build", "--progress", "plain", str(context), check=False)
    assert failed.returncode == 1 and "exit code 1" in failed.stderr, failed.stderr
    assert not _processes_of(rootless.name) and not _mounts_under(rootless.home)
    assert not any((rootless.store / "tmp").iterdir())
    # A COPY (no PID namespace of its own) leaves no fuse daemon either.
    (context / "f.txt").write_text("copied\n")
    (context / "Buildfile").write_text("FROM base\nCOPY f.txt /f.txt\n")
    rootless.give(context)
    rootless("build", "--progress", "plain", str(context))
    assert not _processes_of(rootless.name) and not _mounts_under(rootless.home)
