"""The cache index on disk: the layers its entries hold on to, and dropping entries."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

import layerbuild.cache.index as index_module
import layerbuild.cache.records as records_module
import layerbuild.cache.stat as stat_module
from layerbuild.cache.index import CachedStep, CacheIndex
from layerbuild.cache.keys import StepInputs
from layerbuild.cache.roots import drop_entries, roots
from layerbuild.digest import Digest
from layerbuild.image import History

KEPT, GONE = Digest.of(b"kept"), Digest.of(b"gone")


def _history() -> History:
    return History(created="2024-01-01T00:00:00Z", created_by="RUN x")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A buildcache with entries of every kind, a slot, a stat cache and a build record."""
    directory = tmp_path / "buildcache"
    index = CacheIndex(directory)
    index.put("kept", CachedStep(_history(), KEPT, Digest.of(b"d1")))
    index.put("gone", CachedStep(_history(), GONE, Digest.of(b"d2")))
    index.put("config", CachedStep(_history()))  # no layer: ENV, LABEL, ...
    (directory / "broken.json").write_text("{not json")
    (directory / "baddigest.json").write_text(json.dumps({"layers": ["md5:x"]}))
    index.remember("slot", StepInputs("p", {"instruction": "RUN"}), "k")
    (directory / "stat").mkdir()
    (directory / "stat/ctx.json").write_text("{}")
    (directory / "records").mkdir()
    (directory / "records/r.json").write_text("{}")
    return directory


def _names(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*.json")}


def test_roots_are_the_layers_entries_name(cache: Path) -> None:
    assert roots(cache) == {KEPT, GONE}
    assert roots(cache / "nothing here") == set()


def test_dropping_entries_whose_layers_are_gone(cache: Path) -> None:
    drop_entries(cache, lambda chain: chain == KEPT)
    assert _names(cache) == {"kept.json", "config.json", "slots/" + index_module._name("slot"),
                             "stat/ctx.json", "records/r.json"}
    assert roots(cache) == {KEPT}


def test_dropping_every_entry_drops_the_build_records(cache: Path) -> None:
    drop_entries(cache, None)
    assert _names(cache) == {"slots/" + index_module._name("slot"), "stat/ctx.json"}
    assert roots(cache) == set()


def test_cache_files_are_written_atomically(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []

    def recording(path: Path, data: bytes, *, durable: bool = True) -> None:
        written.append(str(path.parent.relative_to(tmp_path)))
        path.write_bytes(data)

    def recording_lines(path: Path, head: object, pairs: object = (), *,
                        durable: bool = True) -> None:
        written.append(str(path.parent.relative_to(tmp_path)))
        path.write_text(json.dumps(head) + "\n")

    monkeypatch.setattr(index_module, "write_atomic", recording)
    for module in (index_module, records_module):
        monkeypatch.setattr(module, "write_json_lines", recording_lines)
    monkeypatch.setattr(stat_module, "settled", lambda sig: True)  # worth keeping at once
    index = CacheIndex(tmp_path / "buildcache")
    index.put("k", CachedStep(_history()))
    index.remember("slot", StepInputs("p", {}), "k")
    stats = index.stat_cache(tmp_path)
    (tmp_path / "f").write_text("f")
    stats.entry_digest(str(tmp_path / "f"), os.stat(tmp_path / "f"))
    stats.save()
    store = SimpleNamespace(buildcache=tmp_path / "buildcache")
    image = SimpleNamespace(id=Digest.of(b"image"))
    records_module.write_record(store, "r", image, [], {}, {}, [])  # type: ignore[arg-type]
    assert written == ["buildcache", "buildcache/slots", "buildcache/records"]
    # The stat cache is an SQLite file, written in transactions.
    assert [p.name for p in (tmp_path / "buildcache/stat").iterdir()] == [
        index_module._name(str(tmp_path.resolve())).replace(".json", ".db")]


def test_many_files_are_remembered_and_recorded_a_few_at_a_time(tmp_path: Path) -> None:
    """Slots and build records write a step's files a few thousand at a time: a slot is the
    JSON one `json.dumps` would write, a record lines of JSON."""
    files = {f"d{i % 7}/f{i}\u00e9\udcff": Digest.of(str(i).encode()).hex for i in range(10_000)}
    inputs = StepInputs("p", {"instruction": "COPY"}, {"V": "1"}, files, {"from": "x"})
    index = CacheIndex(tmp_path / "buildcache")
    index.remember("slot", inputs, inputs.key())
    assert index.last_inputs("slot") == inputs
    head, *lines = (index.slots / index_module._name("slot")).read_bytes().splitlines()
    assert json.loads(head) == {**inputs.to_json(files=False), "key": inputs.key()}
    assert [p for line in lines for p in json.loads(line)] == sorted(files)
    assert index.why_missed("slot", inputs) == "the cached result is gone (pruned)"
    name = sorted(files)[5000]
    changed = {**files, name: "x", "zz": "y", "a": "z"}
    del changed[sorted(files)[9000]]
    assert index.why_missed("slot", StepInputs("p", inputs.instruction, {"V": "1"}, changed,
                                               {"from": "x"})) == "file a is new (and 3 more)"
    changed.pop("a")
    now = StepInputs("p", inputs.instruction, {"V": "1"}, changed, {"from": "x"})
    assert index.why_missed("slot", now) == f"file {name} changed (and 2 more)"
    # A slot of an older layerbuild: all in one line.
    (index.slots / index_module._name("old")).write_text(json.dumps(inputs.to_json()))
    assert index.last_inputs("old") == inputs
    assert index.why_missed("old", now) == f"file {name} changed (and 2 more)"
    assert index.why_missed("none", inputs) == "not built before"
    store = SimpleNamespace(buildcache=tmp_path / "buildcache")
    image = SimpleNamespace(id=Digest.of(b"image"))
    paths = [(f"/ctx/{name}", [i, 2, 3, 4, 5]) for i, name in enumerate(files)]
    records_module.write_record(store, "r", image, [("COPY", False, "", 1, 1)],  # type: ignore[arg-type]
                                {"base": "sha256:x"}, iter(paths), ["careful"])
    head, *lines = (tmp_path / "buildcache/records/r.json").read_bytes().splitlines()
    assert json.loads(head) == {"image": str(image.id), "steps": [["COPY", False, "", 1, 1]],
                                "images": {"base": "sha256:x"}, "warnings": ["careful"]}
    assert len(lines) == 3  # 4096 paths a line
    assert {p: s for line in lines for p, s in json.loads(line).items()} == dict(paths)
    records_module.write_record(store, "e", image, [], {}, [], [])  # type: ignore[arg-type]
    assert len((tmp_path / "buildcache/records/e.json").read_bytes().splitlines()) == 1


def test_a_record_checks_its_paths_in_either_form(tmp_path: Path) -> None:
    """A record's paths are checked line by line; one of an older layerbuild holds them in
    its first line, and is checked the same."""
    f = tmp_path / "f"
    f.write_text("f")
    sig = stat_module.signature(os.lstat(f))
    store = SimpleNamespace()
    now = {"images": {}}
    assert records_module._unchanged(store, now, [json.dumps({str(f): sig}).encode()])  # type: ignore[arg-type]
    assert records_module._unchanged(store, {**now, "paths": {str(f): sig}}, [])  # type: ignore[arg-type]
    moved = [*sig[:-1], sig[-1] ^ 1]
    assert not records_module._unchanged(store, {**now, "paths": {str(f): moved}}, [])  # type: ignore[arg-type]
    assert not records_module._unchanged(  # type: ignore[arg-type]
        store, now, [json.dumps({str(f): sig}).encode(), json.dumps({str(f): moved}).encode()])
