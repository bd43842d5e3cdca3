"""The builder's side of a sandbox child: start it in namespaces, stream its output, end it.

The child is `unshare … -- python -I -S -c <boot> <dir>`, running `child.main`. Its stdin
carries the request and then stays open as a lifeline; its stdout is the step's output, its
stderr diagnostics, and one extra fd its JSON replies. A timeout, Ctrl-C or an exception in the
output callback kills the step's PID 1 (taking its whole PID namespace) and the init (taking
its mount namespace, hence every mount); the call returns only once the output pipe is closed,
that is, once no process of the step is left holding it. With `network_stack`, the child's
new network namespace is served by a slirp4netns (`network`) for as long: it is killed then,
and reaped in the background (`reaper`), its slow exit kept off the step's time.

Starting a child costs the interpreter and its imports (tens of ms), so the builder asks for
spares of a kind of child (one command line) ahead of the steps that will need them
(`prepare`): a spare starts while the step before runs, then waits on stdin for its request.
Spares know nothing of any step until then; `discard_spares` (at the end of a build, on
Ctrl-C, at exit) ends them, and a spare whose builder dies reads end-of-file and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import marshal
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from layerbuild.errors import StepFailed, UnsafePath
from layerbuild.nsmap import facts, in_user_namespace
from layerbuild.sandbox import fuse, network, reaper
from layerbuild.users import UnknownUser

_PACKAGE_DIR = str(Path(__file__).resolve().parents[2])
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from layerbuild.sandbox.child import main; main()")
_DRAIN_AFTER_KILL = 10.0
_HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_RUNNING: set[_Session] = set()
_RUNNING_LOCK = threading.Lock()


def stop_all() -> None:
    """Kill every step this process is running, in any thread (the build is stopping); each
    `call` then returns as a killed step does."""
    with _RUNNING_LOCK:  # held while signalling, so no session closes its fds meanwhile
        for session in _RUNNING:
            session.signal()
    discard_spares()


class _Child:
    """A started child that has not been sent its request: its process and the builder's ends
    of its pipes, and the numbers of the fds it holds (named in the request)."""

    def __init__(self, proc: subprocess.Popen[bytes], out_r: int, ctl_r: int, ctl_w: int,
                 ready: tuple[int, int]) -> None:
        self.proc, self.out_r, self.ctl_r, self.ctl_w = proc, out_r, ctl_r, ctl_w
        self.ready_r, self.ready_w = ready

    def discard(self) -> None:
        """End an unused child: end-of-file on its stdin, then SIGKILL if it lingers."""
        for stream in (self.proc.stdin, self.proc.stderr):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        for fd in (self.out_r, self.ctl_r, self.ready_w):
            if fd >= 0:
                os.close(fd)
        _reap(self.proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a child to exit (SIGKILL it after _DRAIN_AFTER_KILL s) and reap it: woken by its
    pidfd the moment it exits, where `Popen.wait(timeout)` would poll with sleeps."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # reaped already, or no pidfds: wait as Popen does
        pidfd = -1
    try:
        if pidfd >= 0:
            ready, _, _ = select.select([pidfd], [], [], _DRAIN_AFTER_KILL)
            if not ready:
                proc.kill()
        else:
            try:
                proc.wait(timeout=_DRAIN_AFTER_KILL)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
    finally:
        if pidfd >= 0:
            os.close(pidfd)


_SPARES: dict[tuple[str, ...], list[_Child]] = {}
_SPARES_LOCK = threading.Lock()


def discard_spares() -> None:
    """End every spare child (a build ended or is stopping)."""
    with _SPARES_LOCK:
        spares = [child for kind in _SPARES.values() for child in kind]
        _SPARES.clear()
    for child in spares:
        child.discard()


atexit.register(discard_spares)


def _kind(cmd: list[str], stack: bool) -> tuple[str, ...]:
    return (*cmd, "stack" if stack else "")


def _child(cmd: list[str], stack: bool) -> _Child:
    """A child for `cmd`: a spare of that kind if one was started, else a new one."""
    while True:
        with _SPARES_LOCK:
            spares = _SPARES.get(_kind(cmd, stack))
            found = spares.pop(0) if spares else None
        if found is None:
            return _start(cmd, stack)
        if found.proc.poll() is None:
            return found
        found.discard()  # died meanwhile


def _start(cmd: list[str], stack: bool) -> _Child:
    out_r, out_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    ready_r, ready_w = os.pipe() if stack else (-1, -1)
    child_fds = (ctl_w, ready_r) if stack else (ctl_w,)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out_w,
                                stderr=subprocess.PIPE, pass_fds=child_fds,
                                start_new_session=True, env={"PATH": _HOST_PATH})
    except OSError as exc:
        for fd in (out_r, out_w, ctl_r, *child_fds, *((ready_w,) if stack else ())):
            os.close(fd)
        raise StepFailed(f"cannot start the sandbox: {exc.strerror}") from None
    for fd in (out_w, *child_fds):
        os.close(fd)
    return _Child(proc, out_r, ctl_r, ctl_w, (ready_r, ready_w))


def _unshare() -> str:
    found = shutil.which("unshare") or ("/usr/bin/unshare" if os.path.exists(
        "/usr/bin/unshare") else None)
    if found is None:
        raise StepFailed("the sandbox needs util-linux's unshare on PATH")
    return found


def _command(namespaces: Sequence[str], overlay: fuse.Driver) -> list[str]:
    """The command line of a child in `namespaces` (besides its own mount namespace)."""
    if overlay.kind == "fuse" and "--pid" in namespaces:
        # The init becomes PID 1 of the new namespace, so its fuse daemons live and die
        # there; killing `unshare` kills the init (`--kill-child`), and so all of them.
        namespaces = [*namespaces, "--fork", "--kill-child"]
    return [_unshare(), "--mount", "--propagation", "private", *namespaces, "--",
            sys.executable, "-I", "-S", "-c", _BOOT, _PACKAGE_DIR]


def prepare(namespaces: Sequence[str], network_stack: bool = False, count: int = 1) -> None:
    """Start spares of the child `call` would start with these arguments until `count` of
    them are there: asked for before the steps that need them, they start while the step
    before runs. Quiet when it cannot: the step's own call then says why."""
    if os.geteuid() != 0:
        return
    try:
        stack = network_stack and network.find_tool() is not None
        cmd = _command(namespaces, fuse.driver())
    except (StepFailed, OSError):
        return
    kind = _kind(cmd, stack)
    with _SPARES_LOCK:
        missing = count - len(_SPARES.get(kind, ()))
    for _ in range(missing):
        try:
            spare = _start(cmd, stack)
        except StepFailed:
            return
        with _SPARES_LOCK:
            _SPARES.setdefault(kind, []).append(spare)


def call(request: dict[str, Any], namespaces: Sequence[str],
         on_output: Callable[[bytes], None] | None = None,
         timeout: float | None = None, network_stack: bool = False) -> dict[str, Any]:
    """Run one request in a fresh child; its final reply, or StepFailed/UnsafePath."""
    if os.geteuid() != 0:
        raise StepFailed("the sandbox needs root (overlay mounts, namespaces)")
    tool = network.find_tool() if network_stack else None
    overlay = fuse.driver()
    child = _child(_command(namespaces, overlay), tool is not None)
    proc, ctl_w, ready_r, ready_w = child.proc, child.ctl_w, child.ready_r, child.ready_w
    session = _Session(proc, child.out_r, child.ctl_r, on_output)
    with _RUNNING_LOCK:
        _RUNNING.add(session)
    stack, said = None, ""
    try:
        # The child sets its step up while the stack starts; it waits for the stack only
        # just before the step runs.
        if in_user_namespace():
            request = {**request, "rootless": facts()}
        if overlay.program is not None:
            request = {**request, "fuse": overlay.program}
        session.send({**request, "control_fd": ctl_w,
                      **({"network_fd": ready_r} if tool else {})})
        unstarted: StepFailed | None = None
        if tool:
            try:
                stack = network.start(tool, proc.pid, ready_w, _unshare())
            except StepFailed as exc:
                # A child that fails before its step runs (a spare sets up at once) may be
                # gone before its network could be made: its own reply then says why.
                unstarted = exc
        session.pump(None if timeout is None else time.monotonic() + timeout)
        if unstarted is not None and not session.failed_on_its_own():
            raise unstarted
    except BaseException:
        session.kill()
        raise
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(session)
        session.close()
        if stack is not None:
            said = stack.stop()
    if session.timed_out:
        raise StepFailed(f"timed out after {timeout:g}s; the step and all its processes "
                         "were killed")
    try:
        return session.result()
    except StepFailed as exc:
        raise network.explained(exc, said) from None


def _plain(value: Any) -> Any:
    """A request as JSON would carry it (tuples as lists), for `marshal`, which keeps types."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Session:
    """One running child and the pipes it is read through."""

    def __init__(self, proc: subprocess.Popen[bytes], out_r: int, ctl_r: int,
                 on_output: Callable[[bytes], None] | None) -> None:
        self.proc = proc
        self.on_output = on_output
        self.replies = bytearray()
        self.diagnostics = bytearray()
        self.step_pidfd: int | None = None
        self.timed_out = False
        self.sel = selectors.DefaultSelector()
        assert proc.stderr is not None
        for fd, kind in ((out_r, "out"), (ctl_r, "ctl"), (proc.stderr.fileno(), "err")):
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, kind)
        self.fds = [out_r, ctl_r]

    def send(self, request: dict[str, Any]) -> None:
        """Write the request line; stdin stays open as the child's lifeline."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # its stderr will say why
            data = marshal.dumps(_plain(request))
            self.proc.stdin.write(len(data).to_bytes(8, "big") + data)
            self.proc.stdin.flush()

    def pump(self, deadline: float | None, quiet: bool = False) -> None:
        """Read until every pipe is closed; past the deadline, kill and keep draining."""
        while self.sel.get_map():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = self.sel.select(wait)
            if not events and deadline is not None and time.monotonic() >= deadline:
                if quiet:
                    return  # gave up waiting for a child that would not die
                self.timed_out = True
                self.signal()
                deadline, quiet = time.monotonic() + _DRAIN_AFTER_KILL, True
                continue
            for key, _ in events:
                self._read(key.fd, key.data, quiet)

    def _read(self, fd: int, kind: str, quiet: bool) -> None:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.sel.unregister(fd)
            return
        if kind == "out":
            if self.on_output is not None and not quiet:
                self.on_output(chunk)
        elif kind == "err":
            self.diagnostics += chunk
            del self.diagnostics[:-8192]
        else:
            self.replies += chunk
            self._note_pid()

    def _note_pid(self) -> None:
        if self.step_pidfd is not None or b'"pid"' not in self.replies:
            return
        for line in self.replies.split(b"\n")[:-1]:  # complete lines only
            message = json.loads(line)
            if "pid" in message and "status" not in message:
                with contextlib.suppress(OSError):
                    self.step_pidfd = os.pidfd_open(message["pid"])

    def kill(self) -> None:
        """End the child at once, then drain its pipes (output is no longer passed on)."""
        self.signal()
        if self.sel.get_map():
            self.pump(time.monotonic() + _DRAIN_AFTER_KILL, quiet=True)

    def signal(self) -> None:
        """SIGKILL the step's PID 1 (and so its namespace) and the init (and its mounts)."""
        if self.step_pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.step_pidfd, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.proc.kill()

    def close(self) -> None:
        """Close the lifeline and the pipes, and reap the init: in the background once it
        has sent its final reply (its exit may still be unmounting the step's overlay, which
        nothing here waits for; `reaper.settle` does, as a build ends)."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fd)
        self.sel.close()
        for fd in self.fds:
            os.close(fd)
        if self._final() is not None and self.proc.poll() is None:
            reaper.reap(self.proc)
        else:
            _reap(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        if self.step_pidfd is not None:
            os.close(self.step_pidfd)

    def _final(self) -> dict[str, Any] | None:
        """The final reply, if the child sent it."""
        final: dict[str, Any] | None = None
        if b'"status"' not in self.replies:
            return None
        for line in self.replies.splitlines():
            if line.strip():
                message = json.loads(line)
                if "status" in message:
                    final = message
        return final

    def failed_on_its_own(self) -> bool:
        """Whether the child's final reply is a failure of its own, not its network's."""
        final = self._final()
        return final is not None and final.get("status") != "ok" \
            and not network.not_ready(str(final.get("message", "")))

    def result(self) -> dict[str, Any]:
        """The final reply, turned into an exception when it reports one."""
        final = self._final()
        if final is None:
            lines = self.diagnostics.decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else f"exit status {self.proc.returncode}"
            raise StepFailed(f"the sandbox failed: {why}")
        if final["status"] == "ok":
            return final
        if final.get("kind") == "unsafe":
            raise UnsafePath(final["message"])
        if final.get("kind") == "user":
            raise UnknownUser(final["message"])
        raise StepFailed(final["message"])
