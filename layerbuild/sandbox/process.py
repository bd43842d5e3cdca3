"""The step's process: PID 1 of a new PID namespace, pivoted into the image, Docker's privileges.

The init forks it; before `execve` it mounts /proc (only a member of the namespace can), moves
the staged mounts into the image, `pivot_root`s into the merged dir and detaches the host's
root (a chroot alone can be escaped with CAP_SYS_CHROOT, which Docker's set keeps), drops to
Docker's default capabilities and switches user; the seccomp filter is loaded just before the
capabilities are dropped. It never sets no_new_privs: setuid programs work in a RUN, as they
do under Docker.
"""

from __future__ import annotations

# signal's C module: `signal` adds IntEnums, and its import (enum with it, 4-6 ms) is paid
# by every step's child (see tests/unit/test_child_imports.py).
import _signal as signal  # type: ignore[import-not-found]
import os
import select

from layerbuild.errors import StepFailed
from layerbuild.sandbox import libc, mounts, seccomp
from layerbuild.sandbox.mounts import Staged

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from typing import NoReturn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Launch:
    """What the step process needs once forked."""

    def __init__(self, argv: list[str], env: list[str], cwd: str, uid: int, gid: int,
                 groups: list[int], last_cap: int, staged: list[Staged],
                 seccomp: bytes | None = None) -> None:
        self.argv, self.env, self.cwd = argv, env, cwd
        self.uid, self.gid, self.groups = uid, gid, groups
        self.last_cap, self.staged = last_cap, staged
        self.seccomp = seccomp


def start(launch: Launch) -> tuple[int, int, int]:
    """Fork the step; returns its pid, the read end of its error pipe and the keep-alive fd."""
    err_r, err_w = os.pipe()
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        os.close(alive_w)
        _child(launch, err_w, alive_r)
    os.close(err_w)
    os.close(alive_r)
    return pid, err_r, alive_w


def supervise(pid: int, err_r: int, lifeline: int) -> tuple[int, str]:
    """Wait for the step; kill it if the builder goes away (EOF on `lifeline`).

    Returns its exit code (128+N for signal N, as shells report) and any setup error text.
    """
    pidfd = os.pidfd_open(pid)
    message = bytearray()
    watching = [pidfd, err_r, lifeline]
    while True:
        ready, _, _ = select.select(watching, [], [])
        if err_r in ready and not _drain(err_r, message):
            watching.remove(err_r)
        if lifeline in ready and not os.read(lifeline, 4096):
            # PID 1 of its namespace: the kernel takes every other process down with it.
            os.kill(pid, signal.SIGKILL)
            watching.remove(lifeline)
        if pidfd in ready:
            _, status = os.waitpid(pid, 0)
            while err_r in watching and _drain(err_r, message):
                pass
            code = os.waitstatus_to_exitcode(status)
            return (128 - code if code < 0 else code), message.decode("utf-8", "replace")


def _drain(fd: int, into: bytearray) -> bool:
    chunk = os.read(fd, 4096)
    into += chunk
    return bool(chunk)


def _child(launch: Launch, err_w: int, alive_r: int) -> NoReturn:
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([alive_r], [], [], 0)[0]:
            os._exit(1)  # the init died before the death signal was armed
        os.setsid()
        libc.unshare(libc.CLONE_NEWNS)
        root_fd = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mounts.mount_proc()
        mounts.move_into(root_fd, launch.staged)
        os.fchdir(root_fd)
        libc.pivot_root(".", ".")
        libc.umount(".", libc.MNT_DETACH)
        os.chdir("/")
        os.chdir(launch.cwd)
        _stdio()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; exec would keep that
            signal.signal(sig, signal.SIG_DFL)
        os.umask(0o022)
        if launch.seccomp is not None:  # while CAP_SYS_ADMIN is held: no no_new_privs needed
            seccomp.install(launch.seccomp)
        libc.drop_capabilities(launch.last_cap)
        try:
            os.setgroups(launch.groups)
        except PermissionError:
            # A rootless namespace that maps only the user's own ids denies setgroups: the
            # step keeps the groups it has (none that the namespace maps).
            if _read("/proc/self/setgroups").strip() != b"deny":
                raise
        os.setgid(launch.gid)
        os.setuid(launch.uid)
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)  # a change of user disarms it
        env = _environ(launch.env)
        path = _lookup(launch.argv[0], env.get("PATH", DEFAULT_PATH))
        try:
            os.execve(path, launch.argv, env)
        except OSError as exc:
            raise StepFailed(f"cannot run {launch.argv[0]!r}: {exc.strerror}") from None
    except StepFailed as exc:
        text = str(exc)
    except OSError as exc:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror)
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}"
    os.write(err_w, text.encode("utf-8", "replace") or b"step setup failed")
    os._exit(127)


def _stdio() -> None:
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(1, 2)


def _environ(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in env:
        key, sep, value = entry.partition("=")
        if sep and key:
            out[key] = value
    return out


def _lookup(name: str, path: str) -> str:
    """The program to run, searched on PATH inside the image as the step's user."""
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise StepFailed(f"cannot run {name!r}: executable file not found in $PATH")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""
