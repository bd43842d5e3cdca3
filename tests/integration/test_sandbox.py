"""RUN in the sandbox: the layer it leaves, the process it runs, the mounts it gets and ends."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from treeutil import need_root, need_tool

from layerbuild.errors import StepFailed
from layerbuild.sandbox import Mount, RunSpec, StepRoot, run_step
from layerbuild.users import UnknownUser

DOCKER_CAPS = "00000000a80425fb"
ENV = ("PATH=/usr/bin:/bin", "HOME=/root")


# ---- helpers shared by the test_sandbox_* files ----

def need_sandbox() -> None:
    need_root()
    need_tool("unshare")


def new_root(tmp_path: Path, *lowers: Path) -> StepRoot:
    """A step root over `lowers` (top first) with a fresh upper and workdir."""
    step = Path(tempfile.mkdtemp(dir=tmp_path, prefix="step-"))
    (step / "upper").mkdir()
    (step / "work").mkdir()
    return StepRoot(tuple(lowers), step / "upper", step / "work")


def sh(root: StepRoot, script: str, **kwargs: object) -> tuple[int, str]:
    """Run a shell script as a RUN step; its exit code and output."""
    return run(root, ("/bin/sh", "-c", script), **kwargs)


def run(root: StepRoot, argv: tuple[str, ...], env: tuple[str, ...] = ENV,
        **kwargs: object) -> tuple[int, str]:
    chunks: list[bytes] = []
    code = run_step(root, RunSpec(argv, env, **kwargs), chunks.append)  # type: ignore[arg-type]
    return code, b"".join(chunks).decode()


def entries(directory: Path) -> set[str]:
    """Every path below a directory, relative."""
    out = set()
    for dirpath, dirs, files in os.walk(directory):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(dirpath, name), directory))
    return out


def mount_points() -> set[tuple[str, str]]:
    """(mount point, fs type) of every mount the host sees, Docker's own aside."""
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point, fstype = fields[4], fields[fields.index("-") + 1]
            if not point.startswith(("/var/lib/docker", "/run/docker", "/run/netns")):
                out.add((point, fstype))
    return out


@contextmanager
def no_mount_left() -> Iterator[None]:
    """Fail if the host's mount table gained anything."""
    before = mount_points()
    yield
    added = mount_points() - before
    assert not added, f"mounts left on the host: {sorted(added)}"


def processes_with(text: str) -> list[int]:
    """Host processes whose command line contains `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read().replace(b"\0", b" "):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def wait_gone(text: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_with(text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def make_layer(path: Path, entries: dict[str, object]) -> Path:
    """A layer dir: "text" is a file, ("link", t) a symlink, ("dir",) a directory,
    ("whiteout",) an overlay whiteout, ("opaque",) an opaque directory."""
    path.mkdir(parents=True, exist_ok=True)
    for rel, what in entries.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, str):
            target.write_text(what)
        elif what[0] == "link":  # type: ignore[index]
            target.symlink_to(what[1])  # type: ignore[index]
        elif what[0] == "whiteout":  # type: ignore[index]
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        else:
            target.mkdir()
            if what[0] == "opaque":  # type: ignore[index]
                os.setxattr(target, "trusted.overlay.opaque", b"y")
    return path


@pytest.fixture
def sentinel() -> Iterator[Path]:
    """An empty host directory no step may touch."""
    path = Path(tempfile.mkdtemp(prefix="lb-sentinel-", dir="/tmp"))
    try:
        yield path
        assert os.listdir(path) == [], "a step wrote to the host"
        assert not any(str(path) in point for point, _ in mount_points())
    finally:
        for dirpath, dirs, files in os.walk(path, topdown=False):
            for name in files:
                os.unlink(os.path.join(dirpath, name))
            for name in dirs:
                os.rmdir(os.path.join(dirpath, name))
        path.rmdir()


# ---- tests ----

@pytest.fixture(autouse=True)
def _guard() -> Iterator[None]:
    need_sandbox()
    with no_mount_left():
        yield


@pytest.fixture
def base(busybox_rootfs: Path) -> Path:
    """Busybox with /etc but no /proc, /dev, /sys, /etc/hosts or /etc/resolv.conf."""
    for missing in ("proc", "dev", "sys", "etc/hosts", "etc/resolv.conf"):
        assert not os.path.lexists(busybox_rootfs / missing)
    return busybox_rootfs


def test_run_writes_only_its_changes(base: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    code, out = sh(root, "echo hi > /out; rm /bin/cat; ls / >/dev/null; echo done")
    assert (code, out) == (0, "done\n")
    assert entries(root.upper) == {"out", "bin", "bin/cat"}
    assert (root.upper / "out").read_text() == "hi\n"
    st = os.lstat(root.upper / "bin/cat")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def test_true_leaves_the_upper_dir_empty(base: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    assert run(root, ("/bin/true",)) == (0, "")
    assert os.listdir(root.upper) == []


def test_failing_command_returns_code_and_output(base: Path, tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, base), "echo out; echo err >&2; exit 3")
    assert code == 3
    assert out == "out\nerr\n"


def test_etc_hosts_is_buildkits_fixed_file_not_the_hosts(base: Path, tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, base), "cat /etc/hosts")
    assert code == 0
    assert out == ("127.0.0.1\tlocalhost buildkitsandbox\n"
                   "::1\tlocalhost ip6-localhost ip6-loopback\n")


def test_exact_environment(base: Path, tmp_path: Path) -> None:
    code, out = run(new_root(tmp_path, base), ("/bin/env",), env=("A=1 2", "PATH=/bin"))
    assert code == 0
    assert sorted(out.splitlines()) == ["A=1 2", "PATH=/bin"]


def test_missing_workdir_is_created_0755(base: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    assert sh(root, "pwd", cwd="/work/dir") == (0, "/work/dir\n")
    assert entries(root.upper) == {"work", "work/dir"}
    for d in ("work", "work/dir"):
        st = os.stat(root.upper / d)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)


def test_workdir_resolves_inside_the_image(base: Path, tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    name = f"lbtest-{random.getrandbits(32):x}"
    (top / "work").symlink_to("/etc")
    root = new_root(tmp_path, top, base)
    assert sh(root, "pwd", cwd=f"/work/{name}") == (0, f"/etc/{name}\n")
    assert (root.upper / "etc" / name).is_dir()
    assert not os.path.lexists(f"/etc/{name}")


def test_user_and_groups(base: Path, tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, base),
                   "id -u; id -g; id -G; grep CapEff /proc/self/status", user="1000:1000:10,20")
    assert code == 0, out
    uid, gid, groups, caps = out.splitlines()
    assert (uid, gid) == ("1000", "1000")
    assert {"10", "20"} <= set(groups.split())
    assert caps.split() == ["CapEff:", "0000000000000000"]


def test_user_and_home_are_looked_up_in_the_image(base: Path, tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    (top / "srv").mkdir()
    (top / "srv/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                    "svc:x:2000:2100::/var/svc:/bin/sh\n")
    (top / "etc/passwd").symlink_to("/srv/passwd")  # absolute: from the image's root
    (top / "etc/group").write_text("svc:x:2100:\nextra:x:2200:svc\n")
    root = new_root(tmp_path, top, base)
    code, out = sh(root, "id -u; id -g; id -G", image_user="svc")
    assert code == 0, out
    uid, gid, groups = out.splitlines()
    assert (uid, gid, groups.split()) == ("2000", "2100", ["2100", "2200"])
    # cat's own environment, as the step's process got it: HOME goes where asked
    assert run(root, ("/bin/cat", "/proc/self/environ"), env=("PATH=/usr/bin:/bin", "A=1"),
               image_user="svc", home_at=1) == (0, "PATH=/usr/bin:/bin\0HOME=/var/svc\0A=1\0")
    assert sh(root, "id -u; echo $HOME", env=("PATH=/bin",), image_user="", home_at=1) == (
        0, "0\n/root\n")
    with pytest.raises(UnknownUser, match=r"^unable to find user nobody-here: no matching "):
        sh(root, "true", image_user="nobody-here")
    assert entries(root.upper) == set()


def test_signals_and_umask_as_a_fresh_process(base: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    code, out = run(root, ("/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"))
    assert code == 0, out
    assert out.split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]
    assert sh(root, "yes | head -n 1; umask") == (0, "y\n0022\n")


def test_step_holds_only_stdio(base: Path, tmp_path: Path) -> None:
    code, out = run(new_root(tmp_path, base), ("/bin/ls", "/proc/self/fd"))
    assert code == 0
    assert out.split() == ["0", "1", "2", "3"]  # 3: the directory ls is reading
    code, out = sh(new_root(tmp_path, base), "readlink /proc/1/fd/0; readlink /proc/1/fd/1")
    assert out.split()[0] == "/dev/null" and out.split()[1].startswith("pipe:")


def test_docker_default_capabilities(base: Path, tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, base), "grep -E '^(Cap|NoNewPrivs)' /proc/self/status")
    assert code == 0
    got = dict(line.split(":\t") for line in out.splitlines())
    assert got == {"CapInh": "0000000000000000", "CapPrm": DOCKER_CAPS, "CapEff": DOCKER_CAPS,
                   "CapBnd": DOCKER_CAPS, "CapAmb": "0000000000000000", "NoNewPrivs": "0"}


def test_hostname(base: Path, tmp_path: Path) -> None:
    assert sh(new_root(tmp_path, base), "hostname") == (0, "buildkitsandbox\n")
    code, out = sh(new_root(tmp_path, base), "hostname; grep -w b1 /etc/hosts", hostname="b1")
    assert code == 0
    assert out.splitlines() == ["b1", "127.0.0.1\tlocalhost b1"]


def test_network_none_has_only_loopback(base: Path, tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, base), "tail -n +3 /proc/net/dev; ip link show lo",
                   network="none")
    assert code == 0, out
    lines = out.splitlines()
    assert [line.split(":")[0].strip() for line in lines[:1]] == ["lo"]
    assert ",UP" in lines[1] or "<LOOPBACK,UP" in lines[1]
    _, host = sh(new_root(tmp_path, base), "tail -n +3 /proc/net/dev", network="host")
    assert len(host.splitlines()) == len(Path("/proc/net/dev").read_text().splitlines()) - 2


def test_step_is_pid_1_of_its_own_namespace(base: Path, tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, base),
                   "echo $$; tr '\\0' ' ' </proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'")
    assert code == 0
    pid, cmdline, count = out.splitlines()
    assert pid == "1"
    assert cmdline.startswith("/bin/sh -c echo $$")
    assert int(count) <= 3  # sh, and the pipeline's ls and grep


def test_devices_work_but_new_nodes_do_not(base: Path, tmp_path: Path) -> None:
    code, out = sh(new_root(tmp_path, base),
                   "head -c 5 /dev/zero | wc -c; echo x >/dev/null && echo null-ok; "
                   "head -c 4 /dev/urandom | wc -c; ls /dev/pts/ptmx /dev/shm >/dev/null && "
                   "echo pts-ok; mknod /tmp/sda b 8 0 && cat /tmp/sda")
    assert code != 0
    assert out.splitlines()[:4] == ["5", "null-ok", "4", "pts-ok"]
    assert "Permission denied" in out


def test_proc_protections(base: Path, tmp_path: Path) -> None:
    masked = [p for p in ("kcore", "keys", "timer_list") if os.path.exists(f"/proc/{p}")]
    read_only = [p for p in ("sys/kernel/domainname", "sysrq-trigger")
                 if os.path.exists(f"/proc/{p}")]
    assert masked and read_only, "nothing to check on this kernel"
    script = "".join(f"wc -c </proc/{p}; " for p in masked) + "ls -A /proc/acpi | wc -l; "
    script += "".join(f"echo 0 >/proc/{p} || echo {p}-ro; " for p in read_only)
    code, out = sh(new_root(tmp_path, base), script + "touch /sys/x || echo sysfs-ro")
    assert code == 0, out
    lines = [line for line in out.splitlines() if ": " not in line]  # drop error messages
    assert lines == ["0"] * len(masked) + ["0"] + [f"{p}-ro" for p in read_only] + ["sysfs-ro"]
    assert out.count("Read-only file system") == len(read_only) + 1


def test_resolv_conf_and_hosts_come_from_the_host_read_only(base: Path, tmp_path: Path) -> None:
    root = new_root(tmp_path, base)
    code, out = sh(root, "cat /etc/resolv.conf; { echo x >>/etc/hosts; } 2>/dev/null || echo ro",
                   network="host")
    assert code == 0
    host = Path("/etc/resolv.conf").read_text() if os.path.exists("/etc/resolv.conf") else ""
    assert out == host + "ro\n"
    assert os.listdir(root.upper) == []


def test_run_mounts(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("context\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    root = new_root(tmp_path, base)
    mounts = (Mount("bind", "/src", ctx), Mount("bind", "/rw", ctx, readonly=False),
              Mount("cache", "/var/cache/x", cache, readonly=False, uid=1000, gid=1000),
              Mount("tmpfs", "/scratch", None, readonly=False, size=1 << 20),
              Mount("secret", "/run/secrets/token", secret))
    code, out = sh(root, "cat /src/f; touch /src/g || echo src-ro; echo w >/rw/f && cat /rw/f; "
                   "echo c >/var/cache/x/c; echo t >/scratch/t; cat /run/secrets/token; echo; "
                   "stat -c '%a %u' /run/secrets/token /var/cache/x", mounts=mounts)
    assert code == 0, out
    lines = [line for line in out.splitlines() if ": " not in line]  # drop error messages
    assert lines == ["context", "src-ro", "w", "s3cret", "400 0", "755 1000"]
    assert (ctx / "f").read_text() == "context\n"  # a read-write bind's writes are the step's
    assert not (ctx / "g").exists()
    assert (cache / "c").read_text() == "c\n"  # a cache mount keeps them
    assert os.listdir(root.upper) == []  # no mount point, no tmpfs content


def test_scratch_root_with_a_bound_program(tmp_path: Path) -> None:
    need_tool("busybox")
    root = new_root(tmp_path)
    mounts = (Mount("bind", "/busybox", Path("/bin/busybox")),)
    code, out = run(root, ("/busybox", "sh", "-c", "/busybox echo hi; /busybox ls /"),
                    mounts=mounts)
    assert code == 0, out
    assert out.split() == ["hi", "busybox", "dev", "etc", "proc", "sys"]
    assert os.listdir(root.upper) == []


def test_timeout_kills_the_whole_tree(base: Path, tmp_path: Path) -> None:
    marker = f"sleep {random.randrange(100000, 999999)}"
    started = time.monotonic()
    with pytest.raises(StepFailed, match="timed out after 1s"):
        sh(new_root(tmp_path, base), f"{marker} & {marker}; echo never", timeout=1)
    assert time.monotonic() - started < 8
    assert wait_gone(marker) == []


def test_interrupt_while_streaming_kills_the_tree(base: Path, tmp_path: Path) -> None:
    marker = f"sleep {random.randrange(100000, 999999)}"

    def on_output(data: bytes) -> None:
        raise KeyboardInterrupt

    spec = RunSpec(("/bin/sh", "-c", f"echo started; {marker}"), ENV)
    with pytest.raises(KeyboardInterrupt):
        run_step(new_root(tmp_path, base), spec, on_output)
    assert wait_gone(marker) == []


def test_killed_by_signal_reports_128_plus_n(base: Path, tmp_path: Path) -> None:
    code, _ = sh(new_root(tmp_path, base), "sh -c 'kill -9 $$'; exit $?")
    assert code == 137


def test_setup_failures_are_step_failed(base: Path, tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="executable file not found"):
        run(new_root(tmp_path, base), ("nosuchprogram",))
    with pytest.raises(StepFailed, match="No such file"):
        run(new_root(tmp_path, base), ("/nosuch/program",))
    with pytest.raises(StepFailed, match="not a directory"):
        sh(new_root(tmp_path, base), "true", cwd="/etc/passwd")
    with pytest.raises(StepFailed, match="user"):
        sh(new_root(tmp_path, base), "true", user="nobody")


def test_ctrl_c_kills_the_tree(base: Path, tmp_path: Path) -> None:
    marker = f"sleep {random.randrange(100000, 999999)}"
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sh(new_root(tmp_path, base), f"{marker} & {marker}")
    finally:
        timer.cancel()
    assert wait_gone(marker) == []


def test_builder_death_kills_the_tree(base: Path, tmp_path: Path) -> None:
    marker = f"sleep {random.randrange(100000, 999999)}"
    root = new_root(tmp_path, base)
    script = (f"import sys; sys.path[:0] = {sys.path!r}\n"
              "from pathlib import Path\n"
              "from layerbuild.sandbox import RunSpec, StepRoot, run_step\n"
              f"root = StepRoot((Path({str(base)!r}),), Path({str(root.upper)!r}), "
              f"Path({str(root.work)!r}))\n"
              f"spec = RunSpec(('/bin/sh', '-c', 'echo started; {marker} & {marker}'), ())\n"
              "run_step(root, spec, lambda data: print(data.decode(), flush=True))\n")
    builder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert builder.stdout is not None
        assert builder.stdout.readline() == b"started\n"
        assert processes_with(marker)
    finally:
        builder.kill()
        builder.wait()
    assert wait_gone(marker) == []


def test_long_layer_stacks(base: Path, tmp_path: Path) -> None:
    layers = [make_layer(tmp_path / f"l{i}", {f"layers/{i}": f"{i}\n"}) for i in range(300)]
    root = new_root(tmp_path, *reversed(layers), base)
    code, out = sh(root, "ls /layers | wc -l; cat /layers/299")
    assert (code, out.split()) == (0, ["300", "299"])
