"""The store's bookkeeping: commits, dedupe, tags, removal, leases, debris, atomic writes."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from layerbuild.digest import Digest, chain_ids
from layerbuild.errors import ImageNotFound, StoreError
from layerbuild.fsutil import atomic_file, temp_name
from layerbuild.image import OCI_LAYER_GZIP, Descriptor, History, Image, empty_config
from layerbuild.reference import Reference
from layerbuild.store import Store
from layerbuild.store.images import ImageDB


def _commit(store: Store, parent: Digest | None, content: bytes,
            lease: Path | None = None) -> Digest:
    """Commit a fake layer whose diff_id is the digest of `content`."""
    diff_id = Digest.of(content)
    with store.staging() as stage:
        (stage / "diff").mkdir()
        (stage / "diff" / "file").write_bytes(content)
        (stage / "blob").write_bytes(b"blob:" + content)
        blob = Descriptor(OCI_LAYER_GZIP, Digest.of(b"blob:" + content), len(content) + 5)
        record = store.commit_layer(parent, diff_id, stage / "diff", len(content), 2048, blob,
                                    stage / "blob", lease=lease)
    return record.chain_id


def _image(*contents: bytes) -> Image:
    config = empty_config("2024-01-01T00:00:00Z")
    for c in contents:
        config = config.with_layer(Digest.of(c), History(created_by=f"ADD {c!r}"))
    return Image.from_config(config)


def _store_images(store: Store, tag: str, *contents: bytes) -> Image:
    parent = None
    for c in contents:
        parent = _commit(store, parent, c)
    image = _image(*contents)
    store.put_image(image, [Reference.parse(tag)])
    return image


def test_layout_is_dockers(store: Store) -> None:
    base = _commit(store, None, b"base")
    top = _commit(store, base, b"top")
    entry = store.layerdb / top.hex
    assert (entry / "diff").read_text() == str(Digest.of(b"top"))
    assert (entry / "parent").read_text() == str(base)
    assert not (store.layerdb / base.hex / "parent").exists()
    cache_id = (entry / "cache-id").read_text()
    assert (store.overlay / cache_id / "diff" / "file").read_bytes() == b"top"
    assert top == chain_ids([Digest.of(b"base"), Digest.of(b"top")])[1]
    assert (entry / "size").read_text() == "3"


def test_same_chain_is_stored_once(store: Store) -> None:
    first = _commit(store, None, b"base")
    again = _commit(store, None, b"base")
    assert first == again
    assert len(list(store.layerdb.iterdir())) == 1
    assert len(list(store.overlay.iterdir())) == 1
    assert list(store.tmp.iterdir()) == []


def test_parent_must_exist(store: Store) -> None:
    with pytest.raises(StoreError, match="parent"):
        _commit(store, Digest.of(b"nothing"), b"top")


def test_tags_resolve_and_move(store: Store) -> None:
    one = _store_images(store, "app:1", b"base", b"one")
    assert store.resolve("app:1") == one.id
    assert store.resolve(one.id.hex[:12]) == one.id
    assert store.resolve(str(one.id)) == one.id
    store.tag("app:1", "app:latest")
    assert store.resolve("app") == one.id
    two = _store_images(store, "app:1", b"base", b"two")
    assert store.resolve("app:1") == two.id
    assert store.resolve("app:latest") == one.id
    with pytest.raises(ImageNotFound):
        store.resolve("other:1")


def test_tags_that_name_the_image_already_are_not_written_again(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild that changed nothing tags its image as it was: repositories.json (written
    durably, so at the cost of two syncs) is left as it is; any new or moved tag writes it."""
    one = _store_images(store, "app:1", b"base", b"one")
    writes: list[int] = []
    write = ImageDB.write_repositories
    monkeypatch.setattr(ImageDB, "write_repositories",
                        lambda self, repos: (writes.append(1), write(self, repos))[1])
    assert store.put_image(one, [Reference.parse("app:1")]) == []
    store.tag("app:1", "app:1")
    assert writes == []
    store.put_image(one, [Reference.parse("app:1"), Reference.parse("app:2")])
    assert writes == [1]
    assert store.resolve("app:2") == one.id and sorted(store.tags()) == ["app:1", "app:2"]


def test_removing_an_image_keeps_shared_layers(store: Store) -> None:
    one = _store_images(store, "one:1", b"base", b"one")
    two = _store_images(store, "two:1", b"base", b"two")
    assert store.image_references()[chain_ids(one.config.diff_ids)[0]] == 2
    untagged, deleted = store.remove_image("one:1")
    assert untagged == ["one:1"] and deleted == one.id
    remaining = {r.chain_id for r in store.layers()}
    assert remaining == set(chain_ids(two.config.diff_ids))
    assert len(list(store.overlay.iterdir())) == 2
    assert len(list(store.blobs.iterdir())) == 2
    assert store.get_image("two:1").id == two.id


def test_removing_by_id_with_several_tags_needs_force(store: Store) -> None:
    image = _store_images(store, "a:1", b"x")
    store.tag("a:1", "b:1")
    with pytest.raises(StoreError, match="several tags"):
        store.remove_image(image.id.hex[:12])
    assert store.remove_image("b:1") == (["b:1"], None)
    assert store.remove_image(image.id.hex[:12]) == (["a:1"], image.id)
    assert store.layers() == []


def test_cache_entries_hold_layers(store: Store) -> None:
    image = _store_images(store, "a:1", b"x", b"y")
    chains = chain_ids(image.config.diff_ids)
    (store.buildcache / "k.json").write_text(json.dumps({"layers": [str(chains[1])]}))
    store.remove_image("a:1")
    assert {r.chain_id for r in store.layers()} == set(chains)
    store.prune(all_cache=True)
    assert store.layers() == []


def _leave_debris(store: Store) -> None:
    """What a writer that died leaves: its staging dir (unlocked) leased a layer it committed;
    an unnamed overlay dir and blob."""
    dead = store.tmp / "12345-dead"
    dead.mkdir()
    (dead / "diff").mkdir()
    (dead / "diff" / "half").write_bytes(b"x")
    orphan = _commit(store, None, b"orphan")
    store.hold(dead, orphan)
    (store.overlay / ("f" * 64)).mkdir()
    (store.blobs / ("e" * 64)).write_bytes(b"stray")


def test_debris_of_a_dead_writer_is_cleaned(store_root: Path) -> None:
    store = Store(store_root)
    _store_images(store, "keep:1", b"keep")
    _leave_debris(store)
    Store(store_root).clean_debris()
    assert list(store.tmp.iterdir()) == []
    assert [r.chain_id for r in store.layers()] == [Digest.of(b"keep")]
    assert len(list(store.overlay.iterdir())) == 1
    assert len(list(store.blobs.iterdir())) == 1


def test_a_config_a_dead_writer_stored_before_its_tags_is_debris(store_root: Path) -> None:
    """Killed between an image's config and its tags: the next cleaning removes the config
    and then its layers, so the store is as it was; an image a tag names stays."""
    store = Store(store_root)
    kept = _store_images(store, "keep:1", b"keep")
    dead = store.tmp / "12345-dead"
    dead.mkdir()
    orphan = _commit(store, None, b"half-pulled", lease=dead)
    unfinished = _image(b"half-pulled")
    store.put_image(unfinished, [], lease=dead)  # the config; its tag never came
    store.put_image(kept, [Reference.parse("keep:2")], lease=dead)  # stored before: named
    assert store.has_image(unfinished.id)
    Store(store_root).clean_debris()
    assert not store.has_image(unfinished.id)
    assert store.layer(orphan) is None
    assert store.has_image(kept.id)
    assert sorted(store.tags()) == ["keep:1", "keep:2"]


def test_a_live_writers_unfinished_image_is_left_alone(store: Store) -> None:
    with store.staging() as lease:
        _commit(store, None, b"in-flight", lease=lease)
        image = _image(b"in-flight")
        store.put_image(image, [], lease=lease)
        store.clean_debris()
        assert store.has_image(image.id)


def test_live_leases_protect_layers(store: Store) -> None:
    with store.staging() as lease:
        chain = _commit(store, None, b"fresh", lease=lease)
        assert store.release_layers() == []
        assert store.layer(chain) is not None
    assert [r.chain_id for r in store.release_layers()] == [chain]


def _commit_in_process(root: str, content: bytes) -> str:
    return str(_commit(Store(root), None, content))


def test_two_processes_commit_the_same_layer(store_root: Path) -> None:
    Store(store_root)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        chains = pool.starmap(_commit_in_process, [(str(store_root), b"same")] * 8)
    assert len(set(chains)) == 1
    store = Store(store_root)
    assert len(store.layers()) == 1
    assert len(os.listdir(store.overlay)) == 1


def test_opening_a_store_leaves_debris_until_it_is_cleaned(store_root: Path) -> None:
    store = Store(store_root)
    _store_images(store, "keep:1", b"keep")
    _leave_debris(store)
    before = sorted(p.relative_to(store_root) for p in store_root.rglob("*"))
    reopened = Store(store_root)
    assert sorted(p.relative_to(store_root) for p in store_root.rglob("*")) == before
    assert len(reopened.layers()) == 2
    reopened.clean_debris()
    assert [r.chain_id for r in reopened.layers()] == [Digest.of(b"keep")]


def test_half_written_files_are_debris(store: Store) -> None:
    image = _store_images(store, "keep:1", b"keep")
    chain = chain_ids(image.config.diff_ids)[0]
    half = [temp_name(store.imagedb / ("a" * 64)), store.imagedb / f".{'a' * 64}.123",
            temp_name(store.repositories), store.repositories.with_name(".repositories.json.9"),
            temp_name(store.layerdb / chain.hex / "blobs.json")]
    for path in half:
        path.write_bytes(b"{")
    store.clean_debris()
    assert not [p for p in half if p.exists()]
    assert store.get_image("keep:1").id == image.id


def _sweeps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the full passes of `Store.clean_debris` (still made) of every store."""
    calls: list[int] = []
    sweep = Store.clean_debris

    def counted(self: Store) -> None:
        calls.append(1)
        sweep(self)

    monkeypatch.setattr(Store, "clean_debris", counted)
    return calls


def test_tidy_passes_over_the_store_only_when_there_can_be_debris(
        store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store no writer left unfinished is not walked: a new store (or one an older
    version kept: its lock file holds no mark) is, once; then only after a dead writer."""
    _store_images(Store(store_root), "keep:1", b"keep")
    (store_root / "lock").write_bytes(b"")  # as an older layerbuild left it
    store = Store(store_root)
    calls = _sweeps(monkeypatch)
    store.tidy()
    assert calls == [1]
    for _ in range(3):
        store.tidy()
        Store(store_root).tidy()
        store.put_image(store.get_image("keep:1"), [Reference.parse("keep:2")])
    assert calls == [1]
    _leave_debris(store)  # a dead writer's staging dir: evidence
    store.tidy()
    assert calls == [1, 1]
    assert list(store.tmp.iterdir()) == []
    assert [r.chain_id for r in store.layers()] == [Digest.of(b"keep")]
    store.tidy()
    assert calls == [1, 1]


def _die_holding_the_lock(root: str, half: str) -> None:
    """A writer killed under the store lock, its temp file half written."""
    store = Store(root)
    with store.lock():
        Path(half).write_bytes(b"{")
        os.kill(os.getpid(), 9)


def test_a_writer_killed_under_the_lock_leaves_the_mark_that_has_its_debris_cleaned(
        store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(store_root)
    _store_images(store, "keep:1", b"keep")
    store.tidy()
    half = temp_name(store.repositories)
    child = multiprocessing.get_context("fork").Process(
        target=_die_holding_the_lock, args=(str(store_root), str(half)))
    child.start()
    child.join()
    assert child.exitcode == -9
    assert half.exists() and list(store.tmp.iterdir()) == []  # no staging dir tells
    reopened = Store(store_root)
    calls = _sweeps(monkeypatch)
    reopened.tidy()
    assert calls == [1] and not half.exists()
    reopened.tidy()
    assert calls == [1]
    assert reopened.get_image("keep:1").id == store.get_image("keep:1").id


def test_a_change_that_failed_under_the_lock_has_the_next_tidy_clean(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.tidy()
    stray = store.overlay / ("f" * 64)
    with pytest.raises(OSError), store.lock():
        stray.mkdir()  # a layer dir, its layer not yet named
        raise OSError(28, "No space left on device")
    reopened = Store(store.root)
    calls = _sweeps(monkeypatch)
    reopened.tidy()
    assert calls == [1] and not stray.exists()


def test_debris_a_clean_could_not_remove_keeps_the_mark(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until a clean removes all it found, every opening tries again."""
    heard: list[str] = []
    store.notice = heard.append
    (store.root / "lock").write_bytes(b"1")  # a holder died part-way
    monkeypatch.setattr(store, "_half_written", lambda: [store.root / "nonexistent" / "x"])
    monkeypatch.setattr(Path, "unlink", _refuse)
    store.tidy()
    assert heard and "half-written files" in heard[0]
    assert (store.root / "lock").read_bytes() == b"1"
    monkeypatch.undo()
    store.notice = heard.append
    store.tidy()
    assert (store.root / "lock").read_bytes() == b"0"
    again = Store(store.root)
    calls = _sweeps(monkeypatch)
    again.tidy()
    assert calls == []


def _refuse(self: Path, missing_ok: bool = False) -> None:
    raise PermissionError(13, "Permission denied", str(self))


def test_image_layers_are_bottom_first_and_stack_is_top_first(store: Store) -> None:
    image = _store_images(store, "a:1", b"base", b"mid", b"top")
    chains = chain_ids(image.config.diff_ids)
    layers = store.image_layers(image)
    assert [layer.chain_id for layer in layers] == chains
    assert [layer.chain_id for layer in store.stack(chains[-1])] == chains[::-1]
    assert store.stack(None) == []
    assert layers[1].parent == chains[0] and layers[0].parent is None
    assert layers[2].diff_dir == store.overlay / layers[2].cache_id / "diff"
    assert (layers[2].diff_dir / "file").read_bytes() == b"top"


def test_a_missing_layer_is_named(store: Store) -> None:
    _commit(store, None, b"base")
    image = _image(b"base", b"gone")
    gone = chain_ids(image.config.diff_ids)[1]
    with pytest.raises(StoreError, match=f"image {image.id}: layer {gone}"):
        store.image_layers(image)
    with pytest.raises(StoreError, match=str(gone)):
        store.stack(gone)


def test_a_layer_opens_its_blob(store: Store) -> None:
    layer = store.layer(_commit(store, None, b"content"))
    assert layer is not None
    assert layer.digest == Digest.of(b"blob:content") == layer.blobs[0].digest
    assert layer.media_type == OCI_LAYER_GZIP
    assert layer.blob_path == store.blob_path(layer.digest)
    with layer.open() as f:
        assert f.read() == b"blob:content"


def test_a_failed_atomic_write_leaves_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as out:
        out.write(b"new, half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file"]
    with atomic_file(target) as out:
        out.write(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["file"]
