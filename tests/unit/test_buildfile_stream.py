"""A Buildfile from a stream (stdin, a pipe) is read once: the build record and the engine get
the same bytes."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
from enginetools import Bench, new_bench

from layerbuild import api
from layerbuild.builder.engine import build
from layerbuild.builder.stepcontext import layer_dirs
from layerbuild.buildfile import MAX_BUILDFILE_BYTES
from layerbuild.cache.records import fingerprint
from layerbuild.digest import chain_ids
from layerbuild.events import RecordingEvents, StepFinished
from layerbuild.reference import Reference
from layerbuild.request import BuildRequest

TEXT = b"FROM base\nCOPY f /f\nCOPY <<EOF /doc\nhello\nEOF\n"


def _pipe(data: bytes) -> Path:
    """A pipe with `data` written into it (from a thread, past the pipe's buffer)."""
    read, write = os.pipe()

    def writer() -> None:
        with open(write, "wb") as f, contextlib.suppress(BrokenPipeError):
            f.write(data)

    threading.Thread(target=writer, daemon=True).start()
    return Path(f"/proc/self/fd/{read}")


def test_a_pipe_is_read_once_and_a_regular_file_not_at_all(tmp_path: Path) -> None:
    assert api.read_stream(_pipe(TEXT)) == TEXT
    (tmp_path / "Buildfile").write_bytes(TEXT)
    assert api.read_stream(tmp_path / "Buildfile") is None
    assert api.read_stream(tmp_path / "missing") is None


def test_an_endless_stream_is_read_one_byte_past_the_limit() -> None:
    assert len(api.read_stream(_pipe(b"#" * (MAX_BUILDFILE_BYTES + 4096))) or b"") == \
        MAX_BUILDFILE_BYTES + 1


def test_a_streamed_buildfile_counts_by_its_bytes(tmp_path: Path) -> None:
    def request(data: bytes | None) -> BuildRequest:
        return BuildRequest(tmp_path, Path("/dev/stdin"), buildfile_data=data)

    assert fingerprint(request(TEXT)) == fingerprint(request(TEXT)) is not None
    assert fingerprint(request(TEXT)) != fingerprint(request(TEXT + b"ENV A=1\n"))


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    bench = new_bench(tmp_path)
    bench.write("f", "f\n")
    return bench


def _streamed(bench: Bench, data: bytes, **request: object) -> BuildRequest:
    return BuildRequest(bench.context, Path("/dev/stdin"), tags=(Reference.parse("out"),),
                        buildfile_data=data, **request)  # type: ignore[arg-type]


def test_the_engine_builds_the_bytes_it_is_given(bench: Bench) -> None:
    events = RecordingEvents()
    image = build(bench.store, _streamed(bench, TEXT), events, bench.sandbox)
    assert image is not None
    assert bench.read(image, "/doc") == "hello\n"
    assert bench.read(image, "/f") == "f\n"
    assert len(events.of(StepFinished)) == 3
    events = RecordingEvents()
    again = build(bench.store, _streamed(bench, TEXT), events, bench.sandbox)
    assert again is not None and again.id == image.id
    assert [e.cached for e in events.of(StepFinished)] == [  # type: ignore[attr-defined]
        False, True, True]


def test_a_streamed_heredoc_is_as_new_as_the_step_before(bench: Bench) -> None:
    """Not as new as the pipe, which is new on every build: the same bytes give the same
    layer. The step before is `COPY f /f`, as new as f."""
    bench.write("f", "f\n", mtime=5000)
    image = build(bench.store, _streamed(bench, TEXT), RecordingEvents(), bench.sandbox)
    assert image is not None
    [layer] = [d for d in layer_dirs(bench.store, chain_ids(image.config.diff_ids)[-1])
               if (d / "doc").exists()]
    assert (layer / "doc").stat().st_mtime == 5000
