"""RUN's network: a private namespace by default (outbound through slirp4netns, never the
host's loopback, abstract sockets or interfaces), the host's only when allowed, none as asked.

A static probe, compiled here, connects from inside a RUN to what the test listens on."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli
from test_sandbox import need_sandbox, new_root, no_mount_left, sh, wait_gone
from treeutil import need, need_tool

from layerbuild.sandbox import reaper

STACK = "slirp4netns --configure"
MARK = "LAYERBUILD_TEST_MARK"
SO_NETNS_COOKIE = 71
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
PROBE_C = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <sys/time.h>
#include <unistd.h>

/* probe tcp IP PORT | probe abstract NAME: prints "connected" or "refused <errno name>";
   probe netns: prints "netns COOKIE net:[INODE]" for the network namespace it runs in */
int main(int argc, char **argv) {
    int fd, rc;
    if (argc == 2 && !strcmp(argv[1], "netns")) {
        unsigned long long cookie = 0;
        socklen_t size = sizeof cookie;
        char link[64] = {0};
        fd = socket(AF_INET, SOCK_DGRAM, 0);
        rc = getsockopt(fd, SOL_SOCKET, 71 /* SO_NETNS_COOKIE */, &cookie, &size);
        if (rc != 0 || readlink("/proc/self/ns/net", link, sizeof link - 1) < 0)
            return 1;
        printf("netns %llu %s\n", cookie, link);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "tcp")) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else if (argc == 3 && !strcmp(argv[1], "abstract")) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        size_t n = strlen(argv[2]);
        memcpy(a.sun_path + 1, argv[2], n);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        rc = connect(fd, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n);
    } else {
        return 2;
    }
    if (rc == 0) {
        char buf[64] = {0};
        struct timeval t = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
        read(fd, buf, sizeof buf - 1);
        printf("connected %s\n", buf);
    } else {
        printf("refused %s\n", strerror(errno));
    }
    return 0;
}
"""


@pytest.fixture(autouse=True)
def _guard() -> Iterator[None]:
    need_sandbox()
    need_tool("slirp4netns")
    with no_mount_left():
        yield
    assert wait_gone(STACK) == [], f"{STACK} left running"


@pytest.fixture(scope="module")
def probe_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layer holding /probe, a static binary."""
    need_tool("gcc")
    layer = tmp_path_factory.mktemp("probe")
    source = layer.parent / "probe.c"
    source.write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(layer / "probe"), str(source)],
                   check=True)
    return layer


@pytest.fixture
def lower(busybox_rootfs: Path, probe_layer: Path) -> tuple[Path, Path]:
    return probe_layer, busybox_rootfs


class Listener:
    """A TCP server that greets each client with a word."""

    def __init__(self, address: str, word: bytes = b"hello") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.word = word
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.word)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def loopback() -> Iterator[Listener]:
    listener = Listener("127.0.0.1", b"host-loopback")
    yield listener
    listener.close()


def host_address() -> str | None:
    """The host's first global IPv4 address, if it has one."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        return line.split()[3].split("/")[0]
    return None


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def links(out: str) -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if line[:1].isdigit()}


# ---- what a build leaves: processes, network namespaces, namespace files ----

@dataclass(frozen=True)
class Netns:
    """A network namespace: its cookie (never reused) and its link (`net:[inode]`, reusable)."""

    cookie: int
    link: str


def step_namespaces(out: str) -> list[Netns]:
    """The namespaces that `/probe netns` reported in a step's output."""
    return [Netns(int(c), link) for c, link in re.findall(r"netns (\d+) (net:\[\d+\])", out)]


def cookie_of(netns_fd: int | None = None) -> int | None:
    """The cookie of the namespace `netns_fd` refers to (the test's own without one), read in a
    thread of its own: setns moves only the calling thread."""
    found: list[int] = []

    def read() -> None:
        if netns_fd is not None and _libc.setns(netns_fd, CLONE_NEWNET) != 0:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        found.append(int.from_bytes(raw, sys.byteorder))

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return found[0] if found else None


def holders(ns: Netns) -> list[str]:
    """What on the host still refers to the namespace: a process in it, an open fd of it, or
    a mount of it (a namespace file, as `ip netns add` makes one)."""
    candidates = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        candidates.append(f"/proc/{pid}/ns/net")
        with contextlib.suppress(OSError):
            candidates += [f"/proc/{pid}/fd/{n}" for n in os.listdir(f"/proc/{pid}/fd")]
    candidates = [c for c in candidates if _link(c) == ns.link]
    with open("/proc/self/mountinfo") as f:
        candidates += [fields[4] for fields in map(str.split, f) if fields[3] == ns.link]
    return [c for c in candidates if _cookie_at(c) == ns.cookie]


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _cookie_at(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # gone meanwhile
    try:
        return cookie_of(fd)
    finally:
        os.close(fd)


def namespace_files() -> set[str]:
    """The host's namespace files (nsfs mounts), Docker's own aside."""
    with open("/proc/self/mountinfo") as f:
        return {fields[4] for fields in map(str.split, f)
                if fields[fields.index("-") + 1] == "nsfs"
                and not fields[4].startswith("/run/docker/")}


def processes_marked(mark: str) -> list[int]:
    """Live processes whose environment carries `MARK=mark`: a builder started with it and
    what it spawned with its environment (the network stacks)."""
    wanted = f"{MARK}={mark}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def children_named(name: str) -> list[tuple[int, str]]:
    """This process's children called `name`, zombies too: (pid, state letter)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue
        state, ppid = rest.split()[:2]
        if int(ppid) == os.getpid() and head.split("(", 1)[1] == name:
            found.append((int(pid), state))
    return found


def eventually(check: Callable[[], object], seconds: float = 5.0) -> object:
    """`check()` once it is falsy, or its last value after `seconds`."""
    deadline = time.monotonic() + seconds
    while (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


# ---- the default: a private namespace ----

def test_default_cannot_reach_host_loopback(lower: tuple[Path, Path], tmp_path: Path,
                                            loopback: Listener) -> None:
    port = loopback.port
    code, out = sh(new_root(tmp_path, *lower), f"/probe tcp 127.0.0.1 {port}; "
                   f"/probe tcp 10.0.2.2 {port}")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "refused Connection refused"  # the step's own 127.0.0.1
    assert lines[1].startswith("refused "), "the gateway led to the host's loopback"


def test_default_cannot_reach_host_abstract_socket(lower: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    name = f"layerbuild-test-{random.randrange(1 << 30)}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(1)
    try:
        assert sh(new_root(tmp_path, *lower), f"/probe abstract {name}", network="host") \
            == (0, "connected \n"), "the probe must reach the socket from the host's netns"
        code, out = sh(new_root(tmp_path, *lower), f"/probe abstract {name}")
        assert (code, out) == (0, "refused Connection refused\n")
    finally:
        server.close()


def test_default_sees_only_lo_and_tap0(lower: tuple[Path, Path], tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, *lower), "ip -o link; cat /proc/net/dev")
    assert code == 0, out
    assert links(out) == {"lo", "tap0"}
    in_proc = {line.split(":")[0].strip() for line in out.splitlines()[-2:]}
    assert in_proc == {"lo", "tap0"}, "/proc/net/dev lists the host's interfaces"


def test_default_has_a_route_out_and_the_stacks_dns(lower: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, *lower),
                   "ip -4 -o addr show tap0; ip route; ip link show tap0; cat /etc/resolv.conf")
    assert code == 0, out
    assert "inet 10.0.2.100/24" in out
    assert "default via 10.0.2.2 dev tap0" in out
    assert ",UP" in out.split("tap0:")[-1]
    resolv = [line for line in out.splitlines() if line.startswith("nameserver")]
    assert resolv == ["nameserver 10.0.2.3"]


def test_default_reaches_out_through_the_stack(lower: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    address = host_address()
    need(address is not None, "the host has no non-loopback IPv4 address to reach")
    assert address is not None
    listener = Listener(address, b"outside")
    try:
        code, out = sh(new_root(tmp_path, *lower), f"/probe tcp {address} {listener.port}")
    finally:
        listener.close()
    assert (code, out) == (0, "connected outside\n")


def test_none_has_only_lo(lower: tuple[Path, Path], tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, *lower), "ip -o link", network="none")
    assert code == 0, out
    assert links(out) == {"lo"}


def test_host_sees_the_hosts_interfaces(lower: tuple[Path, Path], tmp_path: Path,
                                        loopback: Listener) -> None:
    code, out = sh(new_root(tmp_path, *lower), f"ip -o link; /probe tcp 127.0.0.1 "
                   f"{loopback.port}", network="host")
    assert code == 0, out
    assert "tap0" not in links(out)
    assert (links(out) & host_links()) - {"lo"}, "the host's interfaces are not seen"
    assert out.splitlines()[-1] == "connected host-loopback"


def test_every_run_gets_a_namespace_of_its_own(lower: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    def probe(_: object = None) -> Netns:
        code, out = sh(new_root(tmp_path, *lower), "/probe netns")
        assert code == 0, out
        [ns] = step_namespaces(out)
        return ns

    seen = [probe(), probe()]
    with ThreadPoolExecutor(3) as pool:  # at once, as parallel stages run them
        seen += pool.map(probe, range(3))
    cookies = [ns.cookie for ns in seen]
    assert len(set(cookies)) == len(cookies), "two RUNs shared a network namespace"
    assert cookie_of() not in cookies


def test_a_runs_stack_is_reaped_and_its_namespace_gone(lower: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, *lower), "/probe netns")
    assert code == 0, out
    [ns] = step_namespaces(out)
    assert reaper.settle()
    assert children_named("slirp4netns") == [], "a stack is left, running or as a zombie"
    assert holders(ns) == []


# ---- the command line: --allow network.host, and no stack left behind ----

def _context(tmp_path: Path, buildfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Buildfile").write_text(buildfile)
    return ctx


@pytest.fixture
def store_with_probe(store_root: Path, busybox_tar: Path, probe_layer: Path,
                     tmp_path: Path) -> Path:
    """A store with `base`: busybox and the probe."""
    run_cli(store_root, "import", str(busybox_tar), "bb")
    ctx = tmp_path / "probe-ctx"
    ctx.mkdir()
    (ctx / "probe").write_bytes((probe_layer / "probe").read_bytes())
    (ctx / "Buildfile").write_text("FROM bb\nCOPY --chmod=755 probe /probe\n")
    run_cli(store_root, "build", "-t", "base", str(ctx))
    return store_root


def test_host_network_needs_allow(store_with_probe: Path, tmp_path: Path,
                                  loopback: Listener) -> None:
    ctx = _context(tmp_path, f"FROM base\nRUN /probe tcp 127.0.0.1 {loopback.port}\n")
    denied = run_cli(store_with_probe, "build", "--network=host", str(ctx), check=False)
    assert denied.returncode != 0
    assert denied.stderr.strip().splitlines() == [
        "layerbuild: error: --network=host needs --allow network.host (the step would share "
        "the host's network: its 127.0.0.1 services and interfaces)"]
    built = run_cli(store_with_probe, "build", "--progress=plain", "--no-cache",
                    "--network=host", "--allow", "network.host", str(ctx))
    assert "connected host-loopback" in built.stderr
    default = run_cli(store_with_probe, "build", "--progress=plain", "--no-cache", str(ctx))
    assert "refused Connection refused" in default.stderr


def test_run_network_host_in_the_buildfile_needs_allow(store_with_probe: Path,
                                                       tmp_path: Path,
                                                       loopback: Listener) -> None:
    ctx = _context(tmp_path, f"FROM base\nRUN --network=host /probe tcp 127.0.0.1 "
                   f"{loopback.port}\n")
    denied = run_cli(store_with_probe, "build", str(ctx), check=False)
    assert denied.returncode != 0
    assert denied.stderr.strip().splitlines()[-1] == (
        f"layerbuild: error: {ctx / 'Buildfile'}:2: RUN --network=host needs --allow "
        "network.host (the step would share the host's network: its 127.0.0.1 services "
        "and interfaces)")
    built = run_cli(store_with_probe, "build", "--progress=plain", "--allow=network.host",
                    str(ctx))
    assert "connected host-loopback" in built.stderr


def test_unknown_entitlement_is_refused(store_with_probe: Path, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM base\nRUN true\n")
    proc = run_cli(store_with_probe, "build", "--allow", "network.hots", str(ctx), check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "layerbuild: error: --allow network.hots: unknown entitlement (known: network.host)"]


def test_no_stack_left_after_a_failing_run(store_with_probe: Path, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM base\nRUN echo ok > /ok\nRUN exit 3\n")
    proc = run_cli(store_with_probe, "build", str(ctx), check=False)
    assert proc.returncode != 0 and "exit code 3" in proc.stderr


def test_nothing_left_when_a_build_ends(store_with_probe: Path, tmp_path: Path) -> None:
    mark, files = str(random.randrange(1 << 30)), namespace_files()
    ctx = _context(tmp_path, "FROM base\nRUN /probe netns\nRUN /probe netns\n")
    built = run_cli(store_with_probe, "build", "--progress=plain", "--no-cache", str(ctx),
                    env={MARK: mark})
    namespaces = step_namespaces(built.stderr)
    assert len({ns.cookie for ns in namespaces}) == 2, built.stderr
    assert processes_marked(mark) == [], "a network stack outlived the build"
    assert [holders(ns) for ns in namespaces] == [[], []]
    assert namespace_files() == files


@dataclass
class RunningBuild:
    """A build whose RUN is running: the builder, the RUN's own sleep, its namespace, and the
    mark in the builder's environment."""

    proc: subprocess.Popen[str]
    marker: str
    netns: Netns
    mark: str


def _running_build(store: Path, tmp_path: Path) -> RunningBuild:
    """A build whose RUN is running (its network stack up)."""
    marker = f"sleep {random.randrange(100000, 999999)}"
    mark = str(random.randrange(1 << 30))
    ctx = _context(tmp_path, f"FROM base\nRUN /probe netns; echo $((6*7))go; {marker}\n")
    cmd = [sys.executable, "-m", "layerbuild.cli", "--root", str(store), "build",
           "--progress=plain", str(ctx)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, MARK: mark})
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if "42go" in line:
            break
    [netns] = step_namespaces(seen)
    return RunningBuild(proc, marker, netns, mark)


def _left_behind(build: RunningBuild, files: set[str]) -> None:
    """Fail if the build left a process, its step's namespace or a namespace file."""
    assert wait_gone(build.marker) == [], "the step outlived the builder"
    assert eventually(lambda: processes_marked(build.mark)) == [], \
        "a network stack outlived the builder"
    assert eventually(lambda: holders(build.netns)) == [], "the step's namespace is left"
    assert namespace_files() == files


def test_nothing_left_after_ctrl_c(store_with_probe: Path, tmp_path: Path) -> None:
    files = namespace_files()
    build = _running_build(store_with_probe, tmp_path)
    try:
        assert processes_marked(build.mark)[1:], "the step's network stack is not running"
        build.proc.send_signal(signal.SIGINT)
        assert build.proc.wait(timeout=30) != 0
    finally:
        if build.proc.poll() is None:
            build.proc.kill()
            build.proc.wait()
    _left_behind(build, files)


def test_nothing_left_when_the_builder_is_killed(store_with_probe: Path,
                                                 tmp_path: Path) -> None:
    files = namespace_files()
    build = _running_build(store_with_probe, tmp_path)
    try:
        assert processes_marked(build.mark)[1:], "the step's network stack is not running"
        assert holders(build.netns), "the step's namespace is not found where it is"
    finally:
        build.proc.kill()
        build.proc.wait()
    _left_behind(build, files)
