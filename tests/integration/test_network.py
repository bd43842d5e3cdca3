"""RUN's network: a private namespace by default (outbound through slirp4netns, never the
host's loopback, abstract sockets or interfaces), the host's only when allowed, none as asked.

A static probe, compiled here, connects from inside a RUN to what the test listens on."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from test_sandbox import need_sandbox, new_root, no_mount_left, processes_with, sh, wait_gone
from treeutil import need, need_tool

STACK = "slirp4netns --configure"
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

/* probe tcp IP PORT | probe abstract NAME: prints "connected" or "refused <errno name>" */
int main(int argc, char **argv) {
    int fd, rc;
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


def _running_build(store: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """A build whose RUN is running (its network stack up), and the RUN's own sleep."""
    marker = f"sleep {random.randrange(100000, 999999)}"
    ctx = _context(tmp_path, f"FROM base\nRUN echo $((6*7))go; {marker}\n")
    cmd = [sys.executable, "-m", "layerbuild.cli", "--root", str(store), "build",
           "--progress=plain", str(ctx)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "42go" in line:
            break
    return proc, marker


def test_no_stack_left_after_ctrl_c(store_with_probe: Path, tmp_path: Path) -> None:
    proc, marker = _running_build(store_with_probe, tmp_path)
    try:
        assert processes_with(STACK), "the step's network stack is not running"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_gone(marker) == []


def test_no_stack_left_when_the_builder_is_killed(store_with_probe: Path,
                                                  tmp_path: Path) -> None:
    proc, marker = _running_build(store_with_probe, tmp_path)
    try:
        assert processes_with(STACK), "the step's network stack is not running"
    finally:
        proc.kill()
        proc.wait()
    assert wait_gone(marker) == []
    assert wait_gone(STACK) == [], f"{STACK} outlived the builder"
