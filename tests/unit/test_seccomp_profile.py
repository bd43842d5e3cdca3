"""The seccomp profile's rules for the sandbox's capabilities, and the CLI's way to opt out."""

from __future__ import annotations

import pytest

from layerbuild.cli import _seccomp
from layerbuild.errors import LayerbuildError
from layerbuild.sandbox.libc import DEFAULT_CAPS
from layerbuild.sandbox.seccomp_profile import CLONE_NAMESPACE_FLAGS, ENOSYS, Cmp, rules


def _allowed(caps: frozenset[int]) -> set[str]:
    return {n for r in rules(caps, "x86_64") if r.errno is None and not r.args for n in r.names}


def test_default_caps_get_no_namespace_mount_keyring_bpf_or_perf_calls() -> None:
    allowed = _allowed(DEFAULT_CAPS)
    for name in ("mount", "umount2", "unshare", "setns", "bpf", "perf_event_open", "add_key",
                 "keyctl", "request_key", "clone", "clone3", "open_by_handle_at", "reboot"):
        assert name not in allowed, name
    assert {"chroot", "execve", "openat", "arch_prctl", "setresuid"} <= allowed


def test_clone_only_without_namespace_flags_and_clone3_says_enosys() -> None:
    conditional = {r.names: (r.errno, r.args) for r in rules(DEFAULT_CAPS, "x86_64")}
    assert conditional[("clone",)] == (None, (Cmp(0, "masked_eq", 0, CLONE_NAMESPACE_FLAGS),))
    assert conditional[("clone3",)] == (ENOSYS, ())



def test_socket_allows_every_family_but_packet_and_vsock() -> None:
    conditions = [r.args for r in rules(DEFAULT_CAPS, "x86_64") if r.names == ("socket",)]

    def allowed(family: int) -> bool:
        checks = {"lt": family.__lt__, "gt": family.__gt__, "eq": family.__eq__}
        return any(all(checks[c.op](c.value) for c in args) for args in conditions)

    assert [f for f in range(64) if not allowed(f)] == [17, 40]  # AF_PACKET, AF_VSOCK


def test_cap_sys_admin_would_allow_namespaces_unconditionally() -> None:
    with_admin = rules(DEFAULT_CAPS | {21}, "x86_64")
    assert {"mount", "unshare", "clone", "clone3"} <= _allowed(DEFAULT_CAPS | {21})
    assert not any(r.names == ("clone3",) for r in with_admin)


def test_only_seccomp_unconfined_is_an_option() -> None:
    assert _seccomp([]) is True
    assert _seccomp(["seccomp=unconfined"]) is False
    with pytest.raises(LayerbuildError, match="seccomp=unconfined"):
        _seccomp(["seccomp=profile.json"])
