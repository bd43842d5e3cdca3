"""Which system calls a RUN step may make: the rules of Docker's default seccomp profile.

This follows moby's `profiles/seccomp/default.json` (the profile `docker run` and BuildKit
apply to every container): calls not named here fail with EPERM; a list of calls is always
allowed; `socket`, `personality` and `clone` only with some arguments; a few calls only when
the step holds the capability they are about; some only on one architecture. The rules are
evaluated here against the capabilities the sandbox grants (Docker's default set, see
`libc.DEFAULT_CAPS`), so the capability-gated rules are kept for completeness but, with that
set, only `chroot` (CAP_SYS_CHROOT) is added: no step gets CAP_SYS_ADMIN, so `mount`,
`unshare`, `setns`, `bpf`, `perf_event_open`, namespace flags of `clone` and all of
`clone3` stay refused, and the kernel keyring (`add_key`, `keyctl`, `request_key`: keyrings
are not namespaced) is never reachable.

Differences from Docker's profile: `socket(AF_PACKET)` is refused too. A step keeps
CAP_NET_RAW (Docker's default set: raw ICMP sockets, so `ping` works), and in its own network
namespace a packet socket sees only the step's interfaces, but nothing a build does needs
link-level capture or injection, and with `--network host` it would see the host's traffic.
Otherwise nothing differs in what is allowed for Docker's default capability set on x86_64
or aarch64. Its `minKernel: 4.8` condition on `ptrace` is dropped (the
sandbox needs a newer kernel anyway, and Docker allows it on those), and the per-architecture
extras are chosen by the machine name `os.uname()` reports rather than Go's GOARCH.

Pure: names and numbers only; `sandbox.seccomp` turns them into a kernel filter.
"""

from __future__ import annotations

from dataclasses import dataclass

EPERM = 1
ENOSYS = 38
AF_PACKET = 17
AF_VSOCK = 40
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: a clone that makes a namespace.
CLONE_NAMESPACE_FLAGS = 0x7E020000
# personality(2) values a step may set: PER_LINUX, UNAME26, PER_LINUX32, and the query.
PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

# Always allowed, grouped by what they are for (the order means nothing).
_ALWAYS = """
    read write readv writev pread64 pwrite64 preadv preadv2 pwritev pwritev2 lseek _llseek
    open openat openat2 creat close close_range dup dup2 dup3 fcntl fcntl64 flock
    fsync fdatasync sync syncfs sync_file_range fadvise64 fadvise64_64 readahead fallocate
    truncate truncate64 ftruncate ftruncate64 copy_file_range sendfile sendfile64 splice tee
    vmsplice

    stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx statfs statfs64
    fstatfs fstatfs64 access faccessat faccessat2 getdents getdents64 getcwd chdir fchdir
    readlink readlinkat name_to_handle_at

    mkdir mkdirat rmdir mknod mknodat link linkat symlink symlinkat unlink unlinkat
    rename renameat renameat2 chmod fchmod fchmodat chown chown32 fchown fchown32 fchownat
    lchown lchown32 umask utime utimes utimensat utimensat_time64 futimesat

    getxattr lgetxattr fgetxattr setxattr lsetxattr fsetxattr listxattr llistxattr
    flistxattr removexattr lremovexattr fremovexattr

    inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
    epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait
    epoll_pwait2 poll ppoll ppoll_time64 select _newselect pselect6 pselect6_time64
    eventfd eventfd2 signalfd signalfd4 timerfd_create timerfd_gettime timerfd_gettime64
    timerfd_settime timerfd_settime64 pipe pipe2 ioctl

    io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
    io_uring_setup io_uring_enter io_uring_register

    brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall
    munlock munlockall remap_file_pages membarrier memfd_create memfd_secret pkey_alloc
    pkey_free pkey_mprotect

    execve execveat fork vfork exit exit_group wait4 waitid waitpid kill tkill tgkill
    pidfd_open pidfd_send_signal process_mrelease restart_syscall rseq
    set_tid_address set_robust_list get_robust_list set_thread_area get_thread_area
    futex futex_time64 futex_waitv prctl seccomp capget capset
    landlock_create_ruleset landlock_add_rule landlock_restrict_self

    getpid getppid gettid getpgid setpgid getpgrp getsid setsid
    getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid
    getresuid32 getresgid getresgid32 getgroups getgroups32 setuid setuid32 setgid setgid32
    setreuid setreuid32 setregid setregid32 setresuid setresuid32 setresgid setresgid32
    setfsuid setfsuid32 setfsgid setfsgid32 setgroups setgroups32

    rt_sigaction rt_sigprocmask rt_sigpending rt_sigsuspend rt_sigtimedwait
    rt_sigtimedwait_time64 rt_sigqueueinfo rt_tgsigqueueinfo rt_sigreturn sigreturn
    sigprocmask sigaltstack pause alarm

    time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64
    clock_nanosleep clock_nanosleep_time64 nanosleep adjtimex clock_adjtime clock_adjtime64
    getitimer setitimer timer_create timer_delete timer_getoverrun timer_gettime
    timer_gettime64 timer_settime timer_settime64 times

    getrlimit setrlimit ugetrlimit prlimit64 getrusage getpriority setpriority ioprio_get
    ioprio_set sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr
    sched_getparam sched_setparam sched_getscheduler sched_setscheduler
    sched_get_priority_max sched_get_priority_min sched_rr_get_interval
    sched_rr_get_interval_time64 getcpu getrandom sysinfo uname

    socketcall socketpair bind connect listen accept accept4 getsockname getpeername
    getsockopt setsockopt shutdown send sendto sendmsg sendmmsg recv recvfrom recvmsg
    recvmmsg recvmmsg_time64

    ipc msgget msgctl msgsnd msgrcv semget semctl semop semtimedop semtimedop_time64 shmget
    shmctl shmat shmdt mq_open mq_unlink mq_notify mq_getsetattr mq_timedsend
    mq_timedsend_time64 mq_timedreceive mq_timedreceive_time64

    ptrace process_vm_readv process_vm_writev
"""

# Allowed when the step holds the capability (number -> calls), as Docker's profile adds them.
_BY_CAPABILITY: dict[int, str] = {
    2: "open_by_handle_at",  # CAP_DAC_READ_SEARCH
    16: "init_module finit_module delete_module",  # CAP_SYS_MODULE
    18: "chroot",  # CAP_SYS_CHROOT
    19: "kcmp pidfd_getfd process_madvise",  # CAP_SYS_PTRACE
    17: "iopl ioperm",  # CAP_SYS_RAWIO
    20: "acct",  # CAP_SYS_PACCT
    21: "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount "
        "mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd "
        "setdomainname sethostname setns syslog umount umount2 unshare",  # CAP_SYS_ADMIN
    22: "reboot",  # CAP_SYS_BOOT
    23: "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",  # CAP_SYS_NICE
    25: "settimeofday stime clock_settime clock_settime64",  # CAP_SYS_TIME
    26: "vhangup",  # CAP_SYS_TTY_CONFIG
    34: "syslog",  # CAP_SYSLOG
    38: "perf_event_open",  # CAP_PERFMON
    39: "bpf",  # CAP_BPF
}
CAP_SYS_ADMIN = 21

# Extras of a machine (as `uname -m` names it), for every architecture its filter covers.
_BY_MACHINE: dict[str, str] = {
    "x86_64": "arch_prctl modify_ldt",
    "i686": "modify_ldt",
    "aarch64": "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush "
               "set_tls",
    "armv7l": "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush "
              "set_tls",
    "ppc64le": "sync_file_range2 swapcontext",
    "s390x": "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
    "riscv64": "riscv_flush_icache",
}

# The other ABIs a machine's kernel runs (libseccomp's names), each filtered alike: without
# them a 32-bit call would dodge the rules (on x86_64, `int 0x80` reaches the i386 table).
SUB_ARCHES: dict[str, tuple[str, ...]] = {
    "x86_64": ("x86", "x32"),
    "aarch64": ("arm",),
    "s390x": ("s390",),
}


@dataclass(frozen=True)
class Cmp:
    """A condition on argument `index`: `op` is "eq", "ne", "lt", "gt" or "masked_eq"
    (arg & mask == value)."""

    index: int
    op: str
    value: int
    mask: int = 0


@dataclass(frozen=True)
class Rule:
    """Calls that get `errno` (None: allowed) when every condition in `args` holds."""

    names: tuple[str, ...]
    errno: int | None = None
    args: tuple[Cmp, ...] = ()


def rules(caps: frozenset[int], machine: str) -> list[Rule]:
    """The profile's rules for a step holding `caps` on `machine`; the default is EPERM.

    >>> any("chroot" in r.names for r in rules(frozenset({18}), "x86_64"))
    True
    """
    out = [Rule(tuple(_ALWAYS.split() + _BY_MACHINE.get(machine, "").split()))]
    gated = sorted({n for cap, names in _BY_CAPABILITY.items() if cap in caps
                    for n in names.split()})
    if gated:
        out.append(Rule(tuple(gated)))
    # Every family but AF_VSOCK (Docker's rule) and AF_PACKET (ours, see above), one
    # comparison a rule: below, between and above the two.
    out += [Rule(("socket",), args=(Cmp(0, "lt", AF_PACKET),)),
            *(Rule(("socket",), args=(Cmp(0, "eq", family),))
              for family in range(AF_PACKET + 1, AF_VSOCK)),
            Rule(("socket",), args=(Cmp(0, "gt", AF_VSOCK),))]
    out += [Rule(("personality",), args=(Cmp(0, "eq", p),)) for p in PERSONALITIES]
    if CAP_SYS_ADMIN not in caps:
        flags_at = 1 if machine == "s390x" else 0  # s390 passes clone's flags second
        out.append(Rule(("clone",), args=(Cmp(flags_at, "masked_eq", 0,
                                              CLONE_NAMESPACE_FLAGS),)))
        # ENOSYS, not EPERM: C libraries then fall back to clone, whose flags can be checked.
        out.append(Rule(("clone3",), errno=ENOSYS))
    return out
