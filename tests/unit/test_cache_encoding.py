"""The cache's own key encoding: every field counts, line numbers and the dump view do not."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import layerbuild.buildfile
import layerbuild.buildfile.dump
from layerbuild.buildfile import Instruction, Mount, Run, parse_buildfile
from layerbuild.cache.inputs import step_inputs
from layerbuild.cache.keys import KEY_VERSION, StepInputs, instruction_form
from layerbuild.cache.stat import StatCache
from layerbuild.context import Context

# One line per variant: each differs from every other in one field (or in its keyword).
VARIANTS = [
    "RUN make", "RUN make all", 'RUN ["make"]', "RUN --network=none make",
    "RUN --network=host make",
    "RUN --mount=type=cache,target=/c make", "RUN --mount=type=cache,target=/d make",
    "RUN --mount=type=bind,target=/c make", "RUN --mount=type=cache,target=/c,id=x make",
    "RUN --mount=type=cache,target=/c,sharing=locked make",
    "RUN --mount=type=cache,target=/c,mode=0700 make",
    "RUN --mount=type=cache,target=/c,uid=1 make",
    "RUN --mount=type=bind,target=/c,rw make",
    "RUN --mount=type=secret,id=s,required make",
    "RUN <<EOF\nmake\nEOF", "RUN <<EOF\nmake all\nEOF", "RUN <<'EOF'\nmake\nEOF",
    "RUN <<-EOF\nmake\nEOF", "RUN <<END\nmake\nEND",
    "COPY a /b", "COPY a c /b", "COPY a /d", "COPY --chown=1 a /b", "COPY --chown=2 a /b",
    "COPY --chmod=644 a /b", "COPY --link a /b", "COPY --from=alpine a /b",
    "COPY --exclude=*.o a /b", "COPY --parents a /b", "COPY <<EOF /b\nx\nEOF",
    "ADD a /b", "ADD --link a /b", "ADD --checksum=sha256:" + "0" * 64 + " https://x/a /b",
    "ADD --keep-git-dir=true https://x/a.git /b", "ADD --unpack=true a /b",
    "ADD --unpack=false a /b",
    "ENV A=1", "ENV A=2", "ENV B=1", "ARG A", "ARG A=1", "LABEL a=1", "WORKDIR /a",
    "USER a", "EXPOSE 80", "EXPOSE 81", "VOLUME /a", 'CMD ["a"]', "CMD a", 'ENTRYPOINT ["a"]',
    'SHELL ["/bin/sh", "-c"]', "STOPSIGNAL 9", "MAINTAINER a",
    "HEALTHCHECK CMD a", "HEALTHCHECK --interval=5s CMD a", "HEALTHCHECK --retries=2 CMD a",
    "HEALTHCHECK NONE", "ONBUILD RUN a", "ONBUILD RUN b",
]


def _instr(text: str, offset: int = 0) -> Instruction:
    return parse_buildfile("FROM scratch\n" + "\n" * offset + text).stages[0].instructions[0]


def _key(instr: Instruction) -> str:
    return StepInputs("parent", instruction_form(instr)).key()


def test_every_field_counts() -> None:
    keys = [_key(_instr(text)) for text in VARIANTS]
    assert len(set(keys)) == len(VARIANTS)


def test_line_numbers_do_not_count() -> None:
    for text in VARIANTS:
        assert _key(_instr(text, offset=7)) == _key(_instr(text)), text


def test_every_mount_field_counts() -> None:
    mount = Mount("cache", target="/c")
    run = Run(line=1, end_line=1, command="make", mounts=(mount,))
    changed = {"type": "bind", "target": "/d", "source": "s", "from_": "x", "id": "i",
               "sharing": "locked", "mode": 1, "uid": 1, "gid": 1, "readonly": True,
               "required": True, "size": 1, "env": "E"}
    assert set(changed) == {f.name for f in dataclasses.fields(Mount)}
    keys = {_key(run)}
    for name, value in changed.items():
        other = dataclasses.replace(run, mounts=(dataclasses.replace(mount, **{name: value}),))
        keys.add(_key(other))
    assert len(keys) == len(changed) + 1


def test_the_dump_view_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    before = [_key(_instr(text)) for text in VARIANTS]

    def changed_dump(value: object) -> object:
        raise AssertionError("cache keys must not use the golden-test view")

    monkeypatch.setattr(layerbuild.buildfile.dump, "to_dict", changed_dump)
    monkeypatch.setattr(layerbuild.buildfile, "to_dict", changed_dump)
    monkeypatch.setattr(layerbuild.buildfile.dump, "dumps", changed_dump)
    assert [_key(_instr(text)) for text in VARIANTS] == before


def test_the_encoding_is_pinned() -> None:
    # A change here changes every key in every store: raise KEY_VERSION with it.
    run = _instr("RUN make")
    assert KEY_VERSION == 2
    assert instruction_form(run) == {"instruction": "RUN", "command": "make", "heredocs": [],
                                     "network": None, "mounts": []}
    assert _key(run) == "e0a2040b021255f803d64cdbd27904f8c6111112fb003013d74a19f18cb1af53"
    onbuild = instruction_form(_instr("ONBUILD RUN make", offset=2))
    assert onbuild["trigger"] == instruction_form(run)  # nested line numbers are dropped too


def test_keys_do_not_depend_on_where_the_context_or_store_is(tmp_path: Path) -> None:
    keys = []
    for where in ("one", "two/deeper"):
        ctx = tmp_path / where / "ctx"
        (ctx / "src").mkdir(parents=True)
        (ctx / "src/a.txt").write_text("a")
        buildfile = parse_buildfile("FROM scratch\nCOPY src/ /src/\n")
        instr = buildfile.stages[0].instructions[0]
        stats = StatCache(tmp_path / where / "store/buildcache/stat/x.json")
        inputs = step_inputs("parent", instr, {}, buildfile, 0, Context(ctx), stats,
                             lambda i: f"stage{i}", lambda ref: f"image {ref}")
        keys.append(inputs.key())
    assert keys[0] == keys[1]


def test_records_load_no_engine_sandbox_layer_or_parser() -> None:
    code = ("import sys, layerbuild.cache.records; "
            "print(' '.join(m for m in sys.modules if m.startswith('layerbuild')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parents[2]).stdout.split()
    for heavy in ("layerbuild.builder.engine", "layerbuild.sandbox", "layerbuild.layer",
                  "layerbuild.buildfile", "layerbuild.cache.keys", "layerbuild.cache.index"):
        assert heavy not in loaded
