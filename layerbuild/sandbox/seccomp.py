"""The seccomp filter of RUN steps: compiled once by the builder, loaded by each step's process.

`program()` turns `seccomp_profile`'s rules into a classic BPF program with libseccomp
(through ctypes: `libseccomp.so.2` of Debian's `libseccomp2`, which every distribution that
runs containers has; Debian ships no Python binding for it and PyPI's need a compiler or
pin old versions, so ctypes keeps the sandbox free of dependencies). libseccomp does what is
hard to get right by hand: the syscall numbers of every ABI the kernel runs (on x86_64 the
i386 and x32 tables too), multiplexed calls (`socketcall`, `ipc`) and the architecture check.
The program is compiled in the builder, once per process, and sent with each RUN (a builder
given a directory to keep it in, the store's, compiles it only when what it depends on changed:
see `program`); the step's process loads it with `install`, which needs only libc, just before
dropping capabilities:
as runc does when no_new_privs is off, so setuid programs keep working in a RUN, and it
needs CAP_SYS_ADMIN for that, which the step still holds at that point.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import os

from layerbuild.errors import StepFailed
from layerbuild.sandbox import libc

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from pathlib import Path

    from layerbuild.sandbox.seccomp_profile import Rule

# The step's process imports this module for `install`, and pays for each import at every
# RUN: what only the builder uses (compiling, keeping) is imported where it is used.

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
_SCMP_FLTATR_CTL_NNP = 3
_NR_SCMP_ERROR = -1
_OPS = {"ne": 1, "lt": 2, "eq": 4, "gt": 6, "masked_eq": 7}
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _load_library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise StepFailed("RUN needs libseccomp (Debian package libseccomp2) for its seccomp "
                         "filter; install it, or build with --security-opt seccomp=unconfined "
                         "to run steps without one") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_version.restype = ctypes.POINTER(ctypes.c_uint * 3)
    return lib


def _check(result: int, what: str) -> None:
    if result < 0:
        raise StepFailed(f"cannot build the seccomp filter: {what}: {os.strerror(-result)}")


def _add(lib: ctypes.CDLL, ctx: int, rule: Rule) -> None:
    """Add one rule for each of its calls this libseccomp knows (others exist on no ABI here)."""
    action = _SCMP_ACT_ALLOW if rule.errno is None else _SCMP_ACT_ERRNO | rule.errno
    args = (_ArgCmp * max(1, len(rule.args)))(*[
        _ArgCmp(c.index, _OPS[c.op], *((c.mask, c.value) if c.op == "masked_eq"
                                       else (c.value, 0))) for c in rule.args])
    for name in rule.names:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number == _NR_SCMP_ERROR:
            continue
        _check(lib.seccomp_rule_add_array(ctx, action, number, len(rule.args), args), name)


def compile_filter(caps: frozenset[int], machine: str) -> bytes:
    """The BPF program (`struct sock_filter` array) of the profile for `caps` on `machine`."""
    # Only here: the step's process, which merely installs the program, starts without it.
    from layerbuild.sandbox.seccomp_profile import EPERM, SUB_ARCHES, rules

    lib = _load_library()
    ctx = lib.seccomp_init(_SCMP_ACT_ERRNO | EPERM)
    if not ctx:
        raise StepFailed("cannot build the seccomp filter: seccomp_init failed")
    try:
        # Loading must not set no_new_privs: setuid programs work in a RUN, as under Docker.
        _check(lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 0), "no_new_privs attribute")
        for arch in SUB_ARCHES.get(machine, ()):
            token = lib.seccomp_arch_resolve_name(arch.encode())
            if token:
                _check(lib.seccomp_arch_add(ctx, token), f"architecture {arch}")
        for rule in rules(caps, machine):
            _add(lib, ctx, rule)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "export")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


_compiled: list[bytes] = []
_compiling = _thread.allocate_lock()
_MAX_PROGRAM = 4096 * 8
"""The kernel's limit on a classic BPF program (BPF_MAXINSNS instructions of 8 bytes)."""


def program(keep: Path | None = None) -> bytes:
    """The filter of every RUN step on this machine, compiled on first use (once: a caller
    that comes while another compiles it waits for that one).

    With `keep`, a directory, the program is kept there once compiled, and taken from there
    by later builders: named by a digest of all it is made from (this module's and the
    profile's source, libseccomp's version, the machine and the capabilities), so any change
    to one of them compiles it again. A file that is no whole program is compiled again.
    """
    with _compiling:
        if not _compiled:
            machine = os.uname().machine
            kept = _kept_path(keep, machine) if keep is not None else None
            found = _read_kept(kept) if kept is not None else None
            if found is None:
                found = compile_filter(libc.DEFAULT_CAPS, machine)
                if kept is not None:
                    _keep(kept, found)
            _compiled.append(found)
        return _compiled[0]


def _kept_path(keep: Path, machine: str) -> Path | None:
    """Where the program is kept, or None when what it is made of cannot be read (then it is
    compiled, and not kept)."""
    try:
        return keep / f"{_source_digest(machine)}.bpf"
    except OSError:
        return None


def _source_digest(machine: str) -> str:
    """A digest of what the program is compiled from (see `program`)."""
    import hashlib
    from pathlib import Path

    here = Path(__file__)
    version = _load_library().seccomp_version().contents
    made_of = [here.read_bytes(), here.with_name("seccomp_profile.py").read_bytes(),
               f"{tuple(version)} {machine} {sorted(libc.DEFAULT_CAPS)}".encode()]
    return hashlib.sha256(b"\0".join(made_of)).hexdigest()


def _read_kept(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data and len(data) % 8 == 0 and len(data) <= _MAX_PROGRAM else None


def _keep(path: Path, data: bytes) -> None:
    """Keep the program (a failure only means compiling it again next time), and no other:
    those of earlier versions are never asked for again."""
    from layerbuild.fsutil import write_atomic

    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomic(path, data, durable=False)
        for other in path.parent.glob("*.bpf"):
            if other != path:
                other.unlink(missing_ok=True)


def compiled() -> bool:
    """Whether the filter has been compiled already."""
    return bool(_compiled)


def warm(keep: Path | None = None) -> None:
    """Compile the filter ahead of the RUN steps that will need it (run on a thread of its
    own while another step runs); a failure is left for the step itself to report."""
    with contextlib.suppress(StepFailed):
        program(keep)


def install(program: bytes) -> None:
    """Load a BPF program as the calling thread's seccomp filter (kept across fork and exec)."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
