"""Cache keys, miss explanations, the stat cache and the index in the store."""

from __future__ import annotations

import os
import time
from pathlib import Path

from layerbuild.buildfile import parse_buildfile
from layerbuild.cache.index import CachedStep, CacheIndex
from layerbuild.cache.keys import StepInputs, instruction_form, why_missed
from layerbuild.cache.stat import SETTLED_NS, StatCache, source_digests
from layerbuild.context import Context
from layerbuild.digest import Digest
from layerbuild.image import History
from layerbuild.store import Store


def _instr(text: str, line_offset: int = 0):  # type: ignore[no-untyped-def]
    return parse_buildfile("FROM scratch\n" + "\n" * line_offset + text).stages[0].instructions[0]


def test_line_numbers_do_not_change_the_key() -> None:
    a = StepInputs("p", instruction_form(_instr("RUN make")))
    b = StepInputs("p", instruction_form(_instr("RUN make", line_offset=5)))
    assert a.key() == b.key()
    assert StepInputs("p", instruction_form(_instr("RUN make all"))).key() != a.key()
    assert StepInputs("q", a.instruction).key() != a.key()
    assert StepInputs("p", a.instruction, {"A": "1"}).key() != a.key()


def test_explanations_name_the_cause() -> None:
    base = StepInputs("p", {"i": "COPY"}, {"V": "1"}, {"a.txt": "x", "b.txt": "y"})
    assert why_missed(None, base) == "not built before"
    assert why_missed(base, StepInputs("p", {"i": "RUN"}, {"V": "1"}, base.files)) == \
        "the instruction changed"
    changed = StepInputs("p", base.instruction, {"V": "1"}, {"a.txt": "x", "b.txt": "z"})
    assert why_missed(base, changed) == "file b.txt changed"
    gone = StepInputs("p", base.instruction, {"V": "1"}, {"a.txt": "x"})
    assert why_missed(base, gone) == "file b.txt was removed"
    arg = StepInputs("p", base.instruction, {"V": "2"}, base.files)
    assert why_missed(base, arg) == "build arg or variable V changed"
    assert why_missed(base, StepInputs("q", base.instruction, {"V": "1"}, base.files)) == \
        "an earlier step or the base image changed"


def test_stat_cache_reads_a_file_only_when_its_stat_changes(tmp_path: Path,
                                                           monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import layerbuild.cache.stat as cache_module

    reads = []
    real = cache_module.open_quietly

    def counting(path, *args):  # type: ignore[no-untyped-def]
        reads.append(path)
        return real(path, *args)

    monkeypatch.setattr(cache_module, "open_quietly", counting)
    f = tmp_path / "f"
    f.write_text("one")
    cache = StatCache(tmp_path / "stat.db")
    first = cache.entry_digest(str(f), os.stat(f))
    assert cache.entry_digest(str(f), os.stat(f)) == first
    assert len(reads) == 2  # just changed: it could change again within the same clock tick
    time.sleep(SETTLED_NS / 1e9 + 0.05)
    cache.entry_digest(str(f), os.stat(f))
    cache.save()
    reloaded = StatCache(tmp_path / "stat.db")
    assert reloaded.entry_digest(str(f), os.stat(f)) == first
    assert len(reads) == 3  # the last answer came from the saved cache
    os.utime(f, (5, 5))  # touched, same content: read again, same digest
    assert reloaded.entry_digest(str(f), os.stat(f)) == first and len(reads) == 4
    f.write_text("two")
    assert reloaded.entry_digest(str(f), os.stat(f)) != first


def test_source_digests_ignore_mtimes_but_see_modes(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "d").mkdir(parents=True)
    (ctx / "d/a").write_text("a")
    os.symlink("a", ctx / "d/link")
    stats = StatCache(tmp_path / "s.db")
    context = Context(ctx)
    before = source_digests(context, ["d"], None, stats)
    os.utime(ctx / "d/a", (1, 1))
    assert source_digests(context, ["d"], None, stats) == before
    os.chmod(ctx / "d/a", 0o600)
    after = source_digests(context, ["d"], None, stats)
    assert after["d/a"] != before["d/a"] and after["d/link"] == before["d/link"]


def test_entries_hold_their_layers_in_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    index = CacheIndex(store.buildcache)
    chain = Digest.of(b"c")
    step = CachedStep(History(created="2024-01-01T00:00:00Z", created_by="RUN x"), chain,
                      Digest.of(b"d"))
    index.put("k" * 64, step)
    assert index.get("k" * 64) == step
    assert index.get("x" * 64) is None
    assert store.cache_references() == {chain}
    inputs = StepInputs("p", {"i": 1}, {"A": "1"})
    index.remember("slot", inputs, inputs.key())
    assert index.last_inputs("slot") == inputs


def test_a_key_is_the_sha256_of_the_canonical_json_of_its_inputs() -> None:
    """The key is hashed as its JSON is made; it is the digest of the whole text."""
    import hashlib
    import json

    from layerbuild.cache.keys import KEY_VERSION

    files = {f"d/f{i}\u00e9\udcff\"": Digest.of(str(i).encode()).hex for i in range(20_000)}
    inputs = StepInputs("p", {"instruction": "COPY", "sources": ["."], "chown": None,
                              "link": False}, {"B": "2", "A": "1"}, files, {"z": "1", "a": "2"})
    text = json.dumps({"version": KEY_VERSION, "parent": "p", "instruction": inputs.instruction,
                       "variables": inputs.variables, "files": files, "extra": inputs.extra},
                      sort_keys=True, separators=(",", ":"))
    assert inputs.key() == hashlib.sha256(text.encode()).hexdigest()


def test_file_changes_are_told_as_a_comparison_of_the_two_sets_tells_them() -> None:
    """The files of two builds are walked side by side in sorted order; the first change and
    the count are those of the sorted set of changed paths."""
    import random

    def by_sets(before: dict[str, str], now: dict[str, str]) -> str:
        changed = sorted(set(before) ^ set(now) | {p for p in now if before.get(p) != now[p]})
        if not changed:
            return "the cached result is gone (pruned)"
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        verb = "was removed" if changed[0] not in now else (
            "is new" if changed[0] not in before else "changed")
        return f"file {changed[0]} {verb}{more}"

    rng = random.Random(7)
    names = ["a", "a.b", "a/b", "a/b/c", "b", "B", "é", "z/y", "\udcff", "a-b", "ab"]
    for _ in range(500):
        before = {n: rng.choice("xy") for n in rng.sample(names, rng.randint(0, len(names)))}
        now = {n: rng.choice("xy") for n in rng.sample(names, rng.randint(0, len(names)))}
        old, new = StepInputs("p", {}, {}, before), StepInputs("p", {}, {}, now)
        assert why_missed(old, new) == by_sets(before, now)
        assert why_missed(StepInputs("p", {}), new, iter(sorted(before.items()))) == \
            by_sets(before, now)


def test_one_pass_tells_what_why_missed_and_changed_files_tell() -> None:
    from itertools import product

    from layerbuild.cache.keys import changed_files, miss_report

    base = StepInputs("p", {"instruction": "COPY . /app/"}, files={"a": "1", "b": "2", "c": "3"})
    files = [{"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"}, {}, {"c": "3"}]
    others = [{}, {"parent": "q"}, {"variables": {"X": "1"}}, {"extra": {"e": "1"}},
              {"instruction": {"instruction": "COPY . /srv/"}}]
    for now_files, other in product(files, others):
        now = StepInputs(other.get("parent", "p"),  # type: ignore[arg-type]
                         other.get("instruction", base.instruction),  # type: ignore[arg-type]
                         variables=other.get("variables", {}),  # type: ignore[arg-type]
                         extra=other.get("extra", {}), files=now_files)  # type: ignore[arg-type]
        before_files = sorted(base.files.items())
        assert miss_report(base, iter(before_files), now) == (
            why_missed(base, now), changed_files(base, before_files, now)), (now_files, other)
