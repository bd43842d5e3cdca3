"""RUN's private network: a network namespace of its own, reached through slirp4netns.

A RUN with the default network gets a new network namespace (its own `lo`, its own abstract
unix sockets, none of the host's interfaces) and a `tap0` that slirp4netns, running on the
host, turns into ordinary host sockets: outbound TCP/UDP and DNS work, as package managers
need, while the host itself stays out of reach. This is how BuildKit's rootless mode wires a
step (rootlesskit's slirp4netns driver): `slirp4netns --configure --mtu=65520
--disable-host-loopback`, the step at 10.0.2.100/24, gateway 10.0.2.2, DNS at 10.0.2.3, which
forwards to the host's resolvers. `--disable-host-loopback` makes 10.0.2.2 refuse to lead to
the host's 127.0.0.1; `--enable-sandbox --enable-seccomp` confine slirp4netns itself.

slirp4netns, not pasta: it has an explicit switch for host loopback (pasta maps the gateway to
the host by default), Debian's version is the one BuildKit and Podman have long used, and its
`--ready-fd`/`--exit-fd` let the step wait for the network and the stack end with the builder.
Without it a default-network RUN fails with one line naming the package, as BuildKit fails
when its network provider is missing: silently running without network (or with the host's)
would change what the step does.

Each RUN gets a namespace and a stack of its own, made for it and ended with it, so nothing of
one step's network (its connections, neighbour and route tables, the stack's NAT state)
reaches the next. What that costs, measured on 2 cores (benchmarks/run_heavy.py), and why it
is spent where it is:
- Starting: the builder (`launch`) starts the stack as soon as the child's namespace exists,
  in parallel with the child's setup; the child waits for the ready byte just before it forks
  the step. `unshare`, slirp4netns with its sandbox and seccomp filter, and tap0 configured
  take ~5 ms, while the child takes ~15 ms to start Python and mount the step's filesystem:
  it finds the byte waiting (median wait 0.04 ms), so the start costs the step nothing.
- Ending was the cost, 15-30 ms a step: slirp4netns's exit closes its tap device, and the
  kernel unregisters the device, waiting for RCU grace periods. Nothing the step returns
  depends on it (the step and every process of it are gone by then), so the stack is killed
  when the step ends, however it ends, and reaped in the background (`reaper`). The engine
  waits for the reaping when the build ends (~10 ms are left of it by then), as does Python's
  exit: no stack outlives the build or the builder. `--exit-fd` ends it if the builder is
  killed.
- A pool of namespaces with their stacks up, made ahead while earlier steps run (BuildKit's
  CNI provider keeps one), would save nothing more, since the child does not wait for the
  stack, and every build would end with a spare stack to tear down: 15-30 ms more of it.
With this, a RUN on the default network takes as long as one on the host's, within noise.
"""

from __future__ import annotations

import os
import time

from layerbuild.errors import StepFailed

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    import subprocess

TOOL = "slirp4netns"
PACKAGE = "slirp4netns"
DNS = "10.0.2.3"
_OPTIONS = ("--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox",
            "--enable-seccomp")
_NETNS_WAIT = 10.0
TUN = "/dev/net/tun"
"""The device slirp4netns opens in the step's namespace."""
_NOT_READY = "the step's network (slirp4netns) did not come up"


def find_tool() -> str:
    """The slirp4netns program, or StepFailed naming the package to install."""
    import shutil  # only here: the sandbox's child imports this module too

    found = shutil.which(TOOL) or next(
        (p for p in (f"/usr/bin/{TOOL}", f"/usr/sbin/{TOOL}") if os.path.exists(p)), None)
    if found is None:
        raise StepFailed(f"RUN's default network needs {TOOL} (Debian package {PACKAGE}); "
                         "install it, or use --network=none")
    return found


class Stack:
    """One slirp4netns serving one step's network namespace, owned by the builder."""

    def __init__(self, proc: subprocess.Popen[bytes], exit_w: int, log: int) -> None:
        self.proc, self.exit_w, self.log = proc, exit_w, log

    def stop(self) -> str:
        """Kill it, to be reaped in the background; what it said if it had already exited.

        Its exit is slow (the kernel tears its tap device down, 15-30 ms) and nothing waits
        for it: the step is over, every process of it gone.
        """
        from layerbuild.sandbox import reaper  # only here: the child imports this module

        early = self.proc.poll() is not None
        os.close(self.exit_w)
        said = b""
        if early:
            os.lseek(self.log, 0, os.SEEK_SET)
            said = os.read(self.log, 1 << 16)
        else:
            self.proc.kill()
            reaper.reap(self.proc)
        os.close(self.log)
        lines = said.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""


def start(tool: str, pid: int, ready_w: int, unshare: str) -> Stack:
    """Start the stack for the network namespace `pid` enters; it writes to `ready_w` once
    `tap0` is configured (or closes it, failing). `ready_w` is closed here.

    It starts in a mount namespace of its own, every mount private (util-linux `unshare` at
    `unshare`): `--enable-sandbox` pivots its root and detaches the old one, and in the
    host's namespace that detach would reach every shared mount, other containers' among them.
    """
    import subprocess
    import tempfile

    if not os.access(TUN, os.R_OK | os.W_OK):
        os.close(ready_w)
        raise StepFailed(f"a private network needs {TUN}, which this user cannot open (most "
                         "hosts make it mode 0666, as udev does): use --network host or none, "
                         "or ask the host's admin to `chmod 0666 /dev/net/tun`")
    try:
        netns = _new_netns(pid)
    except BaseException:
        os.close(ready_w)
        raise
    exit_r, exit_w = os.pipe()
    cmd = [unshare, "--mount", "--propagation", "private", "--", tool, *_OPTIONS,
           f"--ready-fd={ready_w}", f"--exit-fd={exit_r}", "--netns-type=path",
           f"/proc/self/fd/{netns}", "tap0"]
    try:
        with tempfile.TemporaryFile() as log:  # what it says, read only if it fails
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    pass_fds=(ready_w, exit_r, netns), start_new_session=True)
            return Stack(proc, exit_w, os.dup(log.fileno()))
    except OSError as exc:
        os.close(exit_w)
        raise StepFailed(f"cannot start {TOOL}: {exc.strerror}") from None
    finally:
        for fd in (ready_w, exit_r, netns):
            os.close(fd)


def _new_netns(pid: int) -> int:
    """An fd of the network namespace of `pid`, once it is no longer ours.

    `unshare` makes the namespace just after it starts: joining /proc/PID/ns/net before that
    would put tap0 on the host, so the fd is checked, and slirp4netns is handed that very fd.
    """
    own = os.stat("/proc/self/ns/net")
    deadline = time.monotonic() + _NETNS_WAIT
    while True:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            raise StepFailed("the sandbox exited before its network was set up") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino):
            return fd
        os.close(fd)
        if time.monotonic() > deadline:
            raise StepFailed("the sandbox did not make its network namespace")
        time.sleep(0.0005)


def not_ready(message: str) -> bool:
    """Whether a child's failure is that the stack never said its network was up."""
    return message.startswith(_NOT_READY)


def explained(error: StepFailed, said: str) -> StepFailed:
    """The child's failure, with the stack's last words when the network did not come up."""
    if said and not_ready(str(error)):
        return StepFailed(f"{error}: {said}")
    return error


def wait_ready(fd: int) -> None:
    """In the child: block until the stack reports `tap0` configured."""
    try:
        ready = os.read(fd, 1)
    finally:
        os.close(fd)
    if ready != b"1":
        raise StepFailed(_NOT_READY)


def resolv_conf(host: bytes) -> bytes:
    """The host's resolv.conf with its nameservers replaced by the stack's DNS forwarder.

    >>> resolv_conf(b"search lan\\nnameserver 127.0.0.53\\noptions edns0\\n")
    b'search lan\\noptions edns0\\nnameserver 10.0.2.3\\n'
    """
    kept = [line for line in host.splitlines()
            if line.split()[:1] != [b"nameserver"]]
    return b"".join(line + b"\n" for line in kept) + f"nameserver {DNS}\n".encode()
