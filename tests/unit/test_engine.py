"""The build engine through a fake sandbox (no root): cache, targets, dry runs, ONBUILD."""

from __future__ import annotations

from pathlib import Path

import pytest
from enginetools import Bench, new_bench
from fakesandbox import writes

from layerbuild.events import (
    BuildWarning,
    CacheMiss,
    StepFinished,
    StepStarted,
    WouldRun,
)


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return new_bench(tmp_path)


COPY_RUN = "FROM base\nCOPY f.txt /app/f.txt\nRUN make\n"


def finished(bench: Bench) -> list[tuple[str, bool]]:
    return [(e.step, e.cached) for e in bench.of(StepFinished)]  # type: ignore[attr-defined]


def test_a_build_stores_the_copied_files_and_what_run_wrote(bench: Bench) -> None:
    bench.write("f.txt", "hello")
    bench.sandbox.scripts["make"] = writes({"/app/out": "built"})
    image = bench.build(COPY_RUN)
    assert image is not None
    assert bench.store.get_image("out").id == image.id
    assert bench.read(image, "/app/f.txt") == "hello"
    assert bench.read(image, "/app/out") == "built"
    assert bench.read(image, "/etc/os-release") == "ID=test\n"
    assert [e.text for e in bench.of(StepStarted)] == [  # type: ignore[attr-defined]
        "FROM base", "COPY f.txt /app/f.txt", "RUN make"]
    assert [e.number for e in bench.of(StepStarted)] == [1, 2, 3]  # type: ignore[attr-defined]
    assert bench.of(CacheMiss) == [CacheMiss("COPY f.txt /app/f.txt", "not built before", 0)]


def test_the_second_build_is_cached_and_runs_nothing(bench: Bench) -> None:
    bench.write("f.txt", "hello")
    bench.sandbox.scripts["make"] = writes({"/app/out": "built"})
    first = bench.build(COPY_RUN)
    second = bench.build(COPY_RUN)
    assert second is not None and first is not None and second.id == first.id
    assert finished(bench) == [("FROM base", False), ("COPY f.txt /app/f.txt", True),
                               ("RUN make", True)]
    assert bench.of(CacheMiss) == []
    assert bench.sandbox.calls == []


def test_a_changed_context_file_misses_from_its_step_on(bench: Bench) -> None:
    bench.write("f.txt", "hello")
    bench.sandbox.scripts["make"] = writes({"/app/out": "built"})
    bench.build(COPY_RUN)
    bench.write("f.txt", "changed")
    image = bench.build(COPY_RUN)
    assert image is not None and bench.read(image, "/app/f.txt") == "changed"
    [miss] = bench.of(CacheMiss)
    assert miss.step == "COPY f.txt /app/f.txt"  # type: ignore[attr-defined]
    assert miss.reason.startswith("file f.txt")  # type: ignore[attr-defined]
    assert finished(bench)[1:] == [("COPY f.txt /app/f.txt", False), ("RUN make", False)]
    assert len(bench.sandbox.calls_of("run")) == 1


def test_a_changed_build_arg_misses_the_run_that_sees_it(bench: Bench) -> None:
    buildfile = "FROM base\nARG V\nRUN echo $V > /v\n"
    bench.sandbox.scripts["echo $V > /v"] = writes({"/v": "x"})
    bench.build(buildfile, build_args={"V": "1"})
    bench.build(buildfile, build_args={"V": "1"})
    assert bench.of(CacheMiss) == []
    bench.build(buildfile, build_args={"V": "2"})
    assert bench.of(CacheMiss) == [CacheMiss("RUN echo $V > /v",
                                             "build arg or variable V changed", 0)]
    [spec] = bench.sandbox.calls_of("run")
    assert "V=2" in spec.env  # type: ignore[attr-defined]


def test_a_failing_run_fails_the_build(bench: Bench) -> None:
    from layerbuild.errors import StepFailed

    bench.sandbox.scripts["false"] = writes({}, code=1)
    with pytest.raises(StepFailed, match="exit code 1"):
        bench.build("FROM base\nRUN false\n")


def test_the_sandbox_is_settled_when_a_build_ends_however_it_ends(bench: Bench) -> None:
    from layerbuild.errors import StepFailed

    bench.sandbox.scripts["make"] = writes({"/app/out": "built"})
    bench.sandbox.scripts["false"] = writes({}, code=1)
    bench.write("f.txt", "hello")
    bench.build(COPY_RUN)
    assert bench.sandbox.settled == 1
    with pytest.raises(StepFailed):
        bench.build("FROM base\nRUN false\n")
    assert bench.sandbox.settled == 2


def test_no_cache_reruns_every_step_without_a_miss_reason(bench: Bench) -> None:
    bench.write("f.txt", "hello")
    bench.sandbox.scripts["make"] = writes({"/app/out": "built"})
    bench.build(COPY_RUN)
    bench.build(COPY_RUN, no_cache=True)
    assert finished(bench)[1:] == [("COPY f.txt /app/f.txt", False), ("RUN make", False)]
    assert bench.of(CacheMiss) == []
    assert len(bench.sandbox.calls_of("run")) == 1


TWO_STAGES = ("FROM base AS one\nRUN one\n"
              "FROM base AS two\nRUN two\n"
              "FROM base\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n")


def test_no_cache_filter_reruns_only_that_stages_steps(bench: Bench) -> None:
    bench.sandbox.scripts.update(one=writes({"/one": "1"}), two=writes({"/two": "2"}))
    bench.build(TWO_STAGES)
    image = bench.build(TWO_STAGES, no_cache_filter=("two",))
    assert [spec.argv[-1] for spec in bench.sandbox.calls_of("run")] == ["two"]  # type: ignore
    assert ("RUN one", True) in finished(bench)
    assert ("RUN two", False) in finished(bench)
    assert image is not None and bench.read(image, "/two") == "2"


def test_target_builds_only_the_stages_it_needs(bench: Bench) -> None:
    bench.sandbox.scripts.update(one=writes({"/one": "1"}), two=writes({"/two": "2"}))
    image = bench.build(TWO_STAGES + "FROM one AS last\nRUN three\n", target="two")
    assert {e.stage for e in bench.of(StepStarted)} == {1}  # type: ignore[attr-defined]
    assert [spec.argv[-1] for spec in bench.sandbox.calls_of("run")] == ["two"]  # type: ignore
    assert image is not None and bench.read(image, "/two") == "2"


def test_a_dry_run_reports_what_would_run_and_stores_nothing(bench: Bench) -> None:
    bench.write("f.txt", "hello")
    images = bench.store.images()
    assert bench.build(COPY_RUN, dry_run=True) is None
    assert bench.of(WouldRun) == [WouldRun("COPY f.txt /app/f.txt", 0),
                                  WouldRun("RUN make", 0)]
    assert bench.sandbox.calls == []
    assert bench.store.images() == images
    bench.sandbox.scripts["make"] = writes({})
    bench.build(COPY_RUN)  # the dry run cached nothing
    assert finished(bench)[1:] == [("COPY f.txt /app/f.txt", False), ("RUN make", False)]


def test_a_dry_run_after_a_build_would_run_nothing(bench: Bench) -> None:
    bench.write("f.txt", "hello")
    bench.sandbox.scripts["make"] = writes({})
    bench.build(COPY_RUN)
    assert bench.build(COPY_RUN, dry_run=True) is None
    assert bench.of(WouldRun) == []
    assert finished(bench)[1:] == [("COPY f.txt /app/f.txt", True), ("RUN make", True)]


def test_onbuild_triggers_of_the_base_run_in_the_child(bench: Bench) -> None:
    bench.write("a.txt", "from the trigger")
    bench.build("FROM base\nONBUILD COPY a.txt /a.txt\n", tag="parent")
    assert bench.sandbox.calls_of("copy_into") == []  # ONBUILD only records the trigger
    bench.sandbox.scripts["make"] = writes({})
    image = bench.build("FROM parent\nRUN make\n")
    assert [e.text for e in bench.of(StepStarted)] == [  # type: ignore[attr-defined]
        "FROM parent", "ONBUILD COPY a.txt /a.txt", "RUN make"]
    assert image is not None and bench.read(image, "/a.txt") == "from the trigger"
    assert not image.config.config.get("OnBuild")


def test_a_build_arg_no_arg_uses_is_a_warning(bench: Bench) -> None:
    bench.build("FROM base\nENV A=1\n", build_args={"NOPE": "1"})
    assert bench.of(BuildWarning) == [
        BuildWarning("warning: build args not used by any ARG: NOPE")]


def shown_steps(bench: Bench) -> list[tuple[str, int, int, str]]:
    """Each step as the progress view labels it: (stage name, number, total, text)."""
    return [(e.stage_name, e.number, e.total, e.text)  # type: ignore[attr-defined]
            for e in bench.of(StepStarted)]


def test_steps_are_numbered_per_stage_and_show_expanded_arguments(bench: Bench) -> None:
    bench.write("f.txt", "hello")
    bench.sandbox.scripts["make $SRC"] = writes({})
    bench.build("ARG BASE=base\nARG SRC=f.txt\n"
                "FROM $BASE AS build\nARG SRC\nARG DIR=/app\nWORKDIR $DIR\n"
                "COPY --chown=${UID:-0} $SRC ${DIR}/\nRUN make $SRC\n"
                "FROM ${BASE}\nCOPY --from=build /app/f.txt /x\n")
    assert shown_steps(bench) == [
        ("build", 1, 6, "FROM base"), ("build", 2, 6, "ARG SRC"),
        ("build", 3, 6, "ARG DIR=/app"), ("build", 4, 6, "WORKDIR /app"),
        ("build", 5, 6, "COPY --chown=0 f.txt /app/"),
        ("build", 6, 6, "RUN make $SRC"),  # the shell expands RUN's, in the step
        ("stage-1", 1, 2, "FROM base"), ("stage-1", 2, 2, "COPY --from=build /app/f.txt /x")]
    assert bench.of(CacheMiss)[0] == CacheMiss("ARG SRC", "not built before", 0)


def test_the_only_stage_shows_no_name_unless_it_copies_from_an_image(bench: Bench) -> None:
    bench.write("f.txt", "hello")
    bench.build("FROM base AS only\nCOPY f.txt /f\n")
    assert shown_steps(bench) == [("", 1, 2, "FROM base"), ("", 2, 2, "COPY f.txt /f")]
    bench.build("FROM base\nCOPY --from=base /etc/group /g\n")  # BuildKit counts the image
    assert [step[0] for step in shown_steps(bench)] == ["stage-0", "stage-0"]


def test_onbuild_triggers_count_in_their_stage(bench: Bench) -> None:
    bench.build("FROM base\nONBUILD ENV A=1\n", tag="parent")
    bench.build("FROM base AS a\nFROM parent\nENV B=2\n")
    assert shown_steps(bench) == [("stage-1", 1, 2, "FROM parent"),
                                  ("stage-1", 2, 3, "ONBUILD ENV A=1"),
                                  ("stage-1", 3, 3, "ENV B=2")]
