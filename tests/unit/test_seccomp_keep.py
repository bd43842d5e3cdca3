"""The compiled seccomp filter of RUN steps is kept in the store, so later builders load it
instead of compiling it; anything it is made of that changes has it compiled again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbuild.sandbox import seccomp
from layerbuild.sandbox.libc import DEFAULT_CAPS


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a builder that has compiled nothing yet."""
    monkeypatch.setattr(seccomp, "_compiled", [])


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    compile_filter = seccomp.compile_filter

    def counted(caps: frozenset[int], machine: str) -> bytes:
        calls.append(1)
        return compile_filter(caps, machine)

    monkeypatch.setattr(seccomp, "compile_filter", counted)
    return calls


def _next_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seccomp, "_compiled", [])


def test_a_kept_filter_is_the_compiled_one_and_the_next_builder_loads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = tmp_path / "seccomp"
    calls = _counted(monkeypatch)
    made = seccomp.program(keep)
    [kept] = keep.glob("*.bpf")
    assert kept.read_bytes() == made == seccomp.compile_filter(DEFAULT_CAPS, os.uname().machine)
    assert oct(keep.stat().st_mode & 0o777) == oct(0o700)
    calls.clear()
    for _ in range(2):
        _next_builder(monkeypatch)
        assert seccomp.program(keep) == made
    assert calls == []


@pytest.mark.parametrize("damage", [b"", b"\x06" * 7, bytes(seccomp._MAX_PROGRAM + 8)])
def test_a_kept_file_that_is_no_whole_program_is_compiled_again(
        damage: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = tmp_path / "seccomp"
    made = seccomp.program(keep)
    [kept] = keep.glob("*.bpf")
    kept.write_bytes(damage)
    _next_builder(monkeypatch)
    calls = _counted(monkeypatch)
    assert seccomp.program(keep) == made and calls == [1]
    assert kept.read_bytes() == made


def test_a_changed_profile_or_libseccomp_compiles_again_and_drops_the_old_program(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = tmp_path / "seccomp"
    machine = os.uname().machine
    seccomp.program(keep)
    [old] = keep.glob("*.bpf")
    assert old.name == f"{seccomp._source_digest(machine)}.bpf"
    read_bytes = Path.read_bytes

    def edited(self: Path) -> bytes:
        data = read_bytes(self)
        return data + b"\n# edited\n" if self.name == "seccomp_profile.py" else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert seccomp._source_digest(machine) != old.name.removesuffix(".bpf")
    _next_builder(monkeypatch)
    calls = _counted(monkeypatch)
    seccomp.program(keep)
    assert calls == [1]
    [new] = keep.glob("*.bpf")
    assert new != old
    monkeypatch.undo()

    class _Version:
        def __init__(self, lib: object) -> None:
            self._lib = lib

        def __getattr__(self, name: str) -> object:
            return getattr(self._lib, name)

        def seccomp_version(self) -> object:
            class _Pointer:
                contents = (9, 9, 9)
            return _Pointer()

    load = seccomp._load_library
    monkeypatch.setattr(seccomp, "_load_library", lambda: _Version(load()))
    assert seccomp._source_digest(machine) != old.name.removesuffix(".bpf")



def test_sources_that_cannot_be_read_mean_compiling_and_keeping_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(As from a zip archive, say.) The filter is still made; only the keeping is lost."""
    def unreadable(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    keep = tmp_path / "seccomp"
    calls = _counted(monkeypatch)
    monkeypatch.setattr(Path, "read_bytes", unreadable)
    assert seccomp.program(keep)
    assert calls == [1] and not keep.exists()
