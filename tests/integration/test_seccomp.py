"""RUN under Docker's default seccomp profile: what a step cannot reach, what still works, and
the explicit way out (`--security-opt seccomp=unconfined`).

A static probe, compiled here from C with the machine's gcc, tries each call in a RUN and
prints one `check: result` line (`ok` or the errno's name). It is only ever run inside the
sandbox: some of its checks (a tmpfs mount on /tmp) would change the host if run as root.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from treeutil import need_root, need_tool

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *result(long rc) { return rc >= 0 ? "ok" : strerrorname_np(errno); }

/* Each check runs in a child of its own: one that changes the process (unshare) cannot
   change the next. */
static void check(const char *name, long (*fn)(const char *), const char *arg) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        long rc = fn(arg);
        printf("%s: %s\n", name, result(rc));
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status)) printf("%s: died\n", name);
}

static long keyctl_read(const char *desc) {
    long serial = syscall(SYS_keyctl, 10 /* KEYCTL_SEARCH */, -4 /* @u */, "user", desc, 0);
    if (serial < 0) return serial;
    char buf[256] = {0};
    long n = syscall(SYS_keyctl, 11 /* KEYCTL_READ */, serial, buf, sizeof buf - 1);
    if (n >= 0) printf("payload: %s\n", buf);
    return n;
}
static long add_key(const char *desc) {
    return syscall(SYS_add_key, "user", desc, "planted", 7, -4 /* @u */);
}
static long unshare_user(const char *a) { return unshare(CLONE_NEWUSER); }
static long userns_mount(const char *a) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) return -1;
    return mount("none", "/tmp", "tmpfs", 0, NULL);
}
static long reap(long pid) {
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    return pid;
}
static long clone_newuser(const char *a) {
    return reap(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
}
static long clone3(const char *a) {
    unsigned long args[11] = {0};  /* struct clone_args */
    args[4] = SIGCHLD;             /* exit_signal */
    return reap(syscall(SYS_clone3, args, sizeof args));
}
static long compat_unshare(const char *a) {
    long rc;  /* the i386 table through int 0x80: unshare is 310 there */
    __asm__ volatile("int $0x80" : "=a"(rc) : "a"(310), "b"(CLONE_NEWUSER) : "memory");
    if (rc < 0) { errno = -rc; return -1; }
    return rc;
}
static long perf(const char *a) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    return syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
}
static long bpf(const char *a) { return syscall(SYS_bpf, 9999, NULL, 0); }
static long do_mount(const char *a) { return mount("none", "/tmp", "tmpfs", 0, NULL); }
static long vsock(const char *a) { return socket(40 /* AF_VSOCK */, SOCK_STREAM, 0); }
static long packet(const char *a) { return socket(17 /* AF_PACKET */, SOCK_RAW, 0); }
static long norandom(const char *a) { return personality(ADDR_NO_RANDOMIZE); }
static long query(const char *a) { return personality(0xffffffff); }
static long write_file(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "written\n", 8) != 8) return -1;
    return close(fd);
}
static long fork_exec(const char *a) {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", "exit 7", (char *)NULL);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 7) { errno = ECHILD; return -1; }
    return 0;
}
static long sockets(const char *a) {
    int pair[2];
    char c;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0 || write(pair[0], "x", 1) != 1
            || read(pair[1], &c, 1) != 1)
        return -1;
    if (socket(AF_INET, SOCK_STREAM, 0) < 0) return -1;
    return socket(AF_INET6, SOCK_DGRAM, 0);
}
static long do_chroot(const char *a) { return chroot("/"); }

int main(int argc, char **argv) {
    check("keyctl_read", keyctl_read, argc > 1 ? argv[1] : "none");
    check("add_key", add_key, argc > 2 ? argv[2] : "none");
    check("unshare_user", unshare_user, NULL);
    check("userns_mount", userns_mount, NULL);
    check("clone_newuser", clone_newuser, NULL);
    check("clone3", clone3, NULL);
    check("compat_unshare", compat_unshare, NULL);
    check("perf_event_open", perf, NULL);
    check("bpf", bpf, NULL);
    check("mount", do_mount, NULL);
    check("vsock", vsock, NULL);
    check("packet", packet, NULL);
    check("personality_norandom", norandom, NULL);
    check("personality_query", query, NULL);
    check("write_file", write_file, "/written");
    check("fork_exec", fork_exec, NULL);
    check("sockets", sockets, NULL);
    check("chroot", do_chroot, NULL);
    return 0;
}
"""

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_SYS_ADD_KEY, _SYS_KEYCTL = 248, 250  # x86_64
_KEY_SPEC_USER_KEYRING = -4
_KEYCTL_SEARCH, _KEYCTL_INVALIDATE = 10, 21


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe, statically linked (gcc and libc6-dev)."""
    need_root()
    need_tool("gcc")
    out = tmp_path_factory.mktemp("probe")
    (out / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O1", "-w", "-o", str(out / "probe"),
                    str(out / "probe.c")], check=True)
    return out / "probe"


@pytest.fixture
def host_key() -> Iterator[str]:
    """A key in the host root's user keyring (keyrings are not namespaced); its description."""
    desc = f"layerbuild-test-{uuid.uuid4().hex[:8]}"
    serial = _libc.syscall(_SYS_ADD_KEY, b"user", desc.encode(), b"host-secret", 11,
                           _KEY_SPEC_USER_KEYRING)
    assert serial > 0, os.strerror(ctypes.get_errno())
    try:
        yield desc
    finally:
        _libc.syscall(_SYS_KEYCTL, _KEYCTL_INVALIDATE, serial)


def _key_exists(desc: str) -> bool:
    serial = _libc.syscall(_SYS_KEYCTL, _KEYCTL_SEARCH, _KEY_SPEC_USER_KEYRING, b"user",
                           desc.encode(), 0)
    if serial > 0:
        _libc.syscall(_SYS_KEYCTL, _KEYCTL_INVALIDATE, serial)
    return serial > 0


def _probe_build(lb, tmp_path: Path, probe: Path, host_key: str, planted: str,
                 *flags: str) -> dict[str, str]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    shutil.copy2(probe, ctx / "probe")
    (ctx / "Buildfile").write_text(f"FROM base\nCOPY probe /probe\n"
                                   f"RUN /probe {host_key} {planted} && cat /written\n")
    log = lb("build", "--no-cache", "--progress", "plain", *flags, str(ctx)).stderr
    return dict(re.findall(r"\b([a-z_0-9]+): (\S+)$", log, re.MULTILINE))


def test_run_cannot_reach_what_docker_refuses(lb, base: str, tmp_path: Path, probe: Path,
                                              host_key: str) -> None:
    planted = f"layerbuild-planted-{uuid.uuid4().hex[:8]}"
    seen = _probe_build(lb, tmp_path, probe, host_key, planted)
    assert "payload" not in seen  # the host's key was never read
    assert not _key_exists(planted)  # nor a key left on the host
    for check in ("keyctl_read", "add_key", "unshare_user", "userns_mount", "clone_newuser",
                  "compat_unshare", "perf_event_open", "bpf", "mount", "vsock", "packet",
                  "personality_norandom"):
        assert seen[check] == "EPERM", (check, seen)
    assert seen["clone3"] == "ENOSYS"  # so that C libraries fall back to clone
    for check in ("write_file", "fork_exec", "sockets", "chroot", "personality_query"):
        assert seen[check] == "ok", (check, seen)


def test_unconfined_only_when_asked(lb, base: str, tmp_path: Path, probe: Path,
                                    host_key: str) -> None:
    planted = f"layerbuild-planted-{uuid.uuid4().hex[:8]}"
    seen = _probe_build(lb, tmp_path, probe, host_key, planted,
                        "--security-opt", "seccomp=unconfined")
    assert seen["payload"] == "host-secret"  # what the filter is there to stop
    assert seen["keyctl_read"] == "ok"
    assert seen["unshare_user"] == "ok"
    assert seen["userns_mount"] == "ok"
    for check in ("bpf", "vsock", "clone_newuser", "personality_norandom"):
        assert seen[check] != "EPERM", (check, seen)
    assert _key_exists(planted)
    for check in ("write_file", "fork_exec", "sockets", "chroot", "packet"):
        assert seen[check] == "ok", (check, seen)


def test_an_unknown_security_opt_is_refused(lb, base: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text("FROM base\nRUN true\n")
    proc = lb("build", "--security-opt", "seccomp=/some/profile.json", str(ctx), check=False)
    assert proc.returncode != 0
    assert "seccomp=unconfined" in proc.stderr and "Traceback" not in proc.stderr
