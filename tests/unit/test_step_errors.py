"""Every error of a build step names the Buildfile, its line and the instruction.

Through the fake sandbox (no root): each way a COPY/ADD source or a bind mount's source can
fail to come from the build context, and an OSError met while reading it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from enginetools import Bench, new_bench

from layerbuild.errors import BuildfileError, LayerbuildError, StepFailed


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    bench = new_bench(tmp_path)
    bench.write("f", "f\n")
    os.symlink("/etc/passwd", bench.context / "abs")  # leads out: absolute
    os.symlink("../..", bench.context / "up")  # leads out: climbs
    os.symlink("loop2", bench.context / "loop1")
    os.symlink("loop1", bench.context / "loop2")
    return bench


def _fails(bench: Bench, buildfile: str, line: int, instruction: str, *said: str,
           ) -> LayerbuildError:
    with pytest.raises(LayerbuildError) as caught:
        bench.build(buildfile)
    message = str(caught.value)
    assert message.startswith(f"{bench.context / 'Buildfile'}:{line}: {instruction}"), message
    for part in said:
        assert part in message, message
    assert "\n" not in message
    assert bench.store.get_image("base")  # the store is as it was
    assert list(bench.store.tmp.iterdir()) == []
    return caught.value


COPY_CASES = [
    ("../../etc/passwd /x", "../../etc/passwd: outside the build context"),
    ("sub/../../f /x", "sub/../../f: outside the build context"),
    ("abs /x", "symlink abs -> /etc/passwd leads outside the build context"),
    ("up/etc/passwd /x", "symlink up -> ../.. leads outside the build context"),
    ("up/* /x/", "symlink up -> ../.. leads outside the build context"),
    ("loop1 /x", "too many levels of symbolic links"),
    ("missing /x", "missing: not found in the build context"),
    ("missing/f /x", "missing/f: not found in the build context"),
    ("*.none /x/", "*.none: no source files were specified"),
    ("f ignored /x/", "ignored: excluded by .dockerignore"),
]


@pytest.mark.parametrize(("args", "said"), COPY_CASES, ids=[c[0] for c in COPY_CASES])
@pytest.mark.parametrize("instruction", ["COPY", "ADD"])
def test_a_source_not_taken_from_the_context_names_its_line(bench: Bench, instruction: str,
                                                            args: str, said: str) -> None:
    bench.write("ignored", "x\n")
    bench.write(".dockerignore", "ignored\n")
    error = _fails(bench, f"FROM base\nENV A=1\n{instruction} {args}\n", 3, instruction, said)
    assert isinstance(error, BuildfileError) and error.line == 3
    assert error.instruction == instruction


def test_a_source_from_a_later_stage_line_is_named(bench: Bench) -> None:
    _fails(bench, "FROM base AS one\nRUN true\n\nFROM base\nCOPY up/etc/passwd /x\n", 5, "COPY",
           "leads outside the build context")


@pytest.mark.parametrize(("flags", "said"), [
    ("--chmod=999", "--chmod=999: not an octal mode such as 0755"),
    ("--chmod=u+x", "--chmod=u+x: not an octal mode"),
    ("--exclude=[", "--exclude: bad pattern '['"),
])
def test_a_bad_flag_value_names_its_line(bench: Bench, flags: str, said: str) -> None:
    _fails(bench, f"FROM base\nCOPY {flags} f /f\n", 2, "COPY", said)


def test_a_path_through_a_file_is_not_found(bench: Bench) -> None:
    _fails(bench, "FROM base\nCOPY f/x /x\n", 2, "COPY", "f/x: not found in the build context")


def test_an_unknown_chown_user_names_its_line(bench: Bench) -> None:
    _fails(bench, "FROM base\nCOPY --chown=nobody-here f /f\n", 2, "COPY",
           "unable to find user nobody-here")


def test_an_unknown_from_names_its_line(bench: Bench) -> None:
    _fails(bench, "FROM base\nCOPY --from=nowhere /f /f\n", 2, "COPY", "--from=nowhere")


def test_an_unreachable_url_names_its_line(bench: Bench) -> None:
    _fails(bench, "FROM base\nADD http://127.0.0.1:9/f /f\n", 2, "ADD",
           "cannot fetch http://127.0.0.1:9/f")


@pytest.mark.parametrize(("source", "said"), [
    ("up", "symlink up -> ../.. leads outside the build context"),
    ("../..", "outside the build context"),
    ("missing", "missing: not found in the build context"),
])
def test_a_bind_mount_source_not_in_the_context_names_its_line(bench: Bench, source: str,
                                                               said: str) -> None:
    _fails(bench, f"FROM base\nRUN --mount=type=bind,source={source},target=/m true\n", 2,
           "RUN", said)


def test_an_os_error_reading_the_context_names_its_line(bench: Bench,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import layerbuild.cache.stat as stat_module

    def unreadable(full: str, st: os.stat_result) -> str:
        raise PermissionError(13, "Permission denied", full)

    monkeypatch.setattr(stat_module, "header_digest", unreadable)
    error = _fails(bench, "FROM base\nCOPY f /f\n", 2, "COPY", "/f: permission denied")
    assert isinstance(error, StepFailed)


def test_an_error_of_the_sandbox_names_its_line(bench: Bench) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise StepFailed("/etc/passwd is not a directory in the image")

    bench.sandbox.copy_into = broken  # type: ignore[method-assign]
    error = _fails(bench, "FROM base\nCOPY f /etc/passwd/f\n", 2, "COPY",
                   "/etc/passwd is not a directory in the image")
    assert isinstance(error, StepFailed)


def test_a_located_error_is_left_as_it_is(bench: Bench) -> None:
    error = _fails(bench, "FROM base\nCOPY a b /x\n", 2, "COPY",
                   "the destination must be a directory")
    assert str(error).count("Buildfile:2") == 1
