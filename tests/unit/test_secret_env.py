"""`RUN --mount=type=secret,…,env=NAME` through the fake sandbox, as BuildKit gives secrets.

BuildKit (dockerfile2llb `dispatchSecret`, the exec op's `loadSecretEnv`): the id is `id` (or
`source`), else the target's base name; with `env` the value is in $NAME, and a file is mounted
only when a target is named as well; without `env`, the file is at the target or
/run/secrets/<id>. A missing optional secret mounts nothing and sets $NAME empty. The value is
never in the image, its history or the step's cache key.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from enginetools import Bench, new_bench
from fakesandbox import writes

from layerbuild.errors import BuildfileError
from layerbuild.events import StepFinished
from layerbuild.sandbox.spec import RunSpec

VALUE = "s3cr3t-value\n"


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return new_bench(tmp_path)


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token.txt"
    path.write_text(VALUE)
    return path


def _run(bench: Bench, mount: str, secrets: dict[str, Path], env: str = "") -> RunSpec:
    bench.sandbox.scripts["make"] = writes({"/done": "yes"})
    image = bench.build(f"FROM base\n{env}RUN --mount={mount} make\n", secrets=secrets)
    assert image is not None
    [spec] = bench.sandbox.calls_of("run")
    assert isinstance(spec, RunSpec)
    return spec


def _environ(spec: RunSpec) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in spec.env)


def _secret_mounts(spec: RunSpec) -> list[tuple[str, Path | None]]:
    return [(m.target, m.source) for m in spec.mounts if m.kind == "secret"]


def test_env_puts_the_value_in_the_variable_and_mounts_no_file(bench: Bench,
                                                               token: Path) -> None:
    spec = _run(bench, "type=secret,id=tok,env=TOK", {"tok": token})
    assert _environ(spec)["TOK"] == VALUE
    assert _secret_mounts(spec) == []


def test_env_and_a_target_give_both(bench: Bench, token: Path) -> None:
    spec = _run(bench, "type=secret,id=tok,env=TOK,target=/etc/tok", {"tok": token})
    assert _environ(spec)["TOK"] == VALUE
    assert _secret_mounts(spec) == [("/etc/tok", token)]


@pytest.mark.parametrize(("mount", "target"), [
    ("type=secret,id=tok", "/run/secrets/tok"),
    ("type=secret,source=tok", "/run/secrets/tok"),
    ("type=secret,target=/etc/tok", "/etc/tok"),
    ("type=secret,id=tok,target=/x/y", "/x/y"),
])
def test_without_env_the_secret_is_a_file(bench: Bench, token: Path, mount: str,
                                          target: str) -> None:
    spec = _run(bench, mount, {"tok": token})
    assert _secret_mounts(spec) == [(target, token)]
    assert VALUE not in "".join(spec.env)


def test_a_secret_wins_over_an_env_of_the_same_name(bench: Bench, token: Path) -> None:
    spec = _run(bench, "type=secret,id=tok,env=TOK", {"tok": token}, env="ENV TOK=plain\n")
    assert _environ(spec)["TOK"] == VALUE
    assert [e for e in spec.env if e.startswith("TOK=")] == [f"TOK={VALUE}"]


def test_a_missing_optional_secret_sets_the_variable_empty(bench: Bench) -> None:
    spec = _run(bench, "type=secret,id=tok,env=TOK,target=/etc/tok", {})
    assert _environ(spec)["TOK"] == ""
    assert _secret_mounts(spec) == []


def test_a_missing_required_secret_fails_on_its_line(bench: Bench) -> None:
    with pytest.raises(BuildfileError, match=r"Buildfile:2: RUN: secret 'tok' is required"):
        bench.build("FROM base\nRUN --mount=type=secret,id=tok,env=TOK,required make\n")


def test_a_secret_with_a_nul_byte_cannot_be_a_variable(bench: Bench, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"a\0b")
    with pytest.raises(BuildfileError, match="NUL byte"):
        bench.build("FROM base\nRUN --mount=type=secret,id=tok,env=TOK make\n",
                    secrets={"tok": bad})


def test_the_value_reaches_neither_the_image_nor_its_history_nor_the_cache_key(
        bench: Bench, token: Path, tmp_path: Path) -> None:
    buildfile = "FROM base\nRUN --mount=type=secret,id=tok,env=TOK make\n"
    bench.sandbox.scripts["make"] = writes({"/done": "yes"})
    image = bench.build(buildfile, secrets={"tok": token})
    assert image is not None
    assert VALUE.strip() not in image.config_bytes.decode()
    for dirpath, _dirs, files in os.walk(bench.store.root):
        for name in files:
            assert VALUE.strip().encode() not in (Path(dirpath) / name).read_bytes(), name
    other = tmp_path / "other.txt"
    other.write_text("another value")
    again = bench.build(buildfile, secrets={"tok": other})
    assert again is not None and again.id == image.id
    assert [(e.step, e.cached) for e in bench.of(StepFinished)][-1] == (  # type: ignore[attr-defined]
        "RUN --mount=type=secret,id=tok,env=TOK make", True)
