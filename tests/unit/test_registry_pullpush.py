"""Pull and push through a fake registry on 127.0.0.1 into real stores (no root): platforms,
bad manifests, bad blobs leaving the store as it was, resumed downloads, layers the store
has, uploads in one PUT or in chunks, mounts, RepoDigests, and the progress events."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakeregistry import FakeRegistry, TestImage, gzip_bytes, layer_tar, make_image

from layerbuild.digest import Digest
from layerbuild.errors import DigestMismatch, FormatError, LayerbuildError, RegistryError
from layerbuild.events import RecordingEvents, Transfer
from layerbuild.image import DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_MANIFEST, Image
from layerbuild.ingest import ingest_blob
from layerbuild.reference import Reference
from layerbuild.registry.client import MANIFEST_LIMIT
from layerbuild.registry.credentials import CredentialStore
from layerbuild.registry.hosts import RegistryHosts
from layerbuild.registry.platforms import Platform
from layerbuild.registry.pull import Pulled, pull
from layerbuild.registry.push import Pushed, push
from layerbuild.registry.transport import Policy, Transport
from layerbuild.store import Store

REPO = "team/app"


@dataclass
class Env:
    """A registry, a store and a transport, with what the transport said."""

    reg: FakeRegistry
    store: Store
    root: Path
    waits: list[float] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transport = Transport(CredentialStore(self.root / "docker"),
                                   Policy(attempts=3, connect_timeout=5, read_timeout=10),
                                   sleep=self.waits.append, notice=self.notices.append)
        self.hosts = RegistryHosts({}, frozenset())

    def ref(self, name: str = f"{REPO}:1") -> Reference:
        return Reference.parse(f"{self.reg.host}/{name}", digests=True)

    def pull(self, name: str = f"{REPO}:1", store: Store | None = None,
             platform: str | None = None, events: RecordingEvents | None = None) -> Pulled:
        return pull(store or self.store, self.ref(name), self.transport, self.hosts,
                    Platform.parse(platform) if platform else None, events)

    def push(self, image: Image, name: str = f"{REPO}:1", store: Store | None = None,
             events: RecordingEvents | None = None, chunk: int = 32 << 20) -> Pushed:
        return push(store or self.store, image, self.ref(name), self.transport, self.hosts,
                    events=events, chunk=chunk)

    def new_store(self, name: str) -> Store:
        return Store(self.root / name)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with FakeRegistry() as reg:
        yield Env(reg, Store(tmp_path / "store"), tmp_path)


def _files(seed: int, size: int = 2000) -> dict[str, bytes]:
    """Files of a layer: the same for the same seed, incompressible."""
    return {f"f{seed}": random.Random(seed).randbytes(size),
            f"d{seed}/note": f"layer {seed}\n".encode()}


def _host() -> tuple[str, str | None]:
    host = Platform.host()
    return host.architecture, host.variant


def _image(*seeds: int, size: int = 2000, layer_type: str = OCI_LAYER_GZIP) -> TestImage:
    """An image for this machine, a layer per seed."""
    arch, variant = _host()
    return make_image([_files(s, size) for s in seeds], arch=arch, variant=variant,
                      layer_type=layer_type)


def _transfers(events: RecordingEvents, item: str) -> list[Transfer]:
    return [e for e in events.of(Transfer) if isinstance(e, Transfer) and e.item == item]


def _statuses(events: RecordingEvents, item: str) -> list[str]:
    out: list[str] = []
    for e in _transfers(events, item):
        if not out or out[-1] != e.status:
            out.append(e.status)
    return out


def _untouched(store: Store) -> None:
    """The store holds nothing: no image, name, layer, blob, hint or staging debris."""
    assert store.images() == [] and store.tags() == {}
    assert store.layers() == []
    assert list(store.tmp.iterdir()) == []
    assert list(store.blobs.iterdir()) == []
    assert list(store.overlay.iterdir()) == []
    assert not store.distribution.directory.exists() or \
        list(store.distribution.directory.iterdir()) == []


def _stored(store: Store, image: TestImage, tag: str) -> None:
    parent = None
    for blob, diff_id in zip(image.layers, image.image.config.diff_ids, strict=True):
        parent = ingest_blob(store, parent, diff_id, io.BytesIO(blob),
                             image.layer_type).record.chain_id
    store.put_image(image.image, [Reference.parse(tag)])


def _layer_files(store: Store, image: Image) -> list[dict[str, bytes]]:
    out = []
    for layer in store.image_layers(image):
        out.append({str(p.relative_to(layer.diff_dir)): p.read_bytes()
                    for p in layer.diff_dir.rglob("*") if p.is_file()})
    return out


# --- pull ---------------------------------------------------------------------------------


def test_pull_a_manifest(env: Env) -> None:
    image = _image(1, 2)
    digest = env.reg.put_image(REPO, "1", image)
    events = RecordingEvents()
    got = env.pull(events=events)
    assert (got.image.id, got.digest, got.fresh) == (image.image.id, digest, True)
    assert env.store.get_image(f"{env.reg.host}/{REPO}:1").id == image.image.id
    assert env.store.repo_digests(image.image.id) == [f"{env.reg.host}/{REPO}@{digest}"]
    assert _layer_files(env.store, image.image) == [_files(1), _files(2)]
    for blob, diff_id in zip(image.layers, image.image.config.diff_ids, strict=True):
        assert env.store.distribution.sources(diff_id) == [
            (Digest.of(blob), f"{env.reg.host}/{REPO}")]
        item = Digest.of(blob).short
        assert _statuses(events, item) == ["Pulling fs layer", "Downloading",
                                           "Download complete", "Pull complete"]
        counts = [e.current for e in _transfers(events, item) if e.status == "Downloading"]
        assert counts == sorted(counts) and counts[-1] == len(blob)
        assert all(e.total == len(blob) for e in _transfers(events, item))
    assert list(env.store.tmp.iterdir()) == []
    assert env.pull().fresh is False


def test_pull_by_digest(env: Env) -> None:
    image = _image(1)
    digest = env.reg.put_image(REPO, "1", image)
    got = env.pull(f"{REPO}@{digest}")
    assert got.image.id == image.image.id and got.reference.tag is None
    assert env.store.tags() == {}  # no tag was asked for
    assert env.store.repo_digests(image.image.id) == [f"{env.reg.host}/{REPO}@{digest}"]


def test_pull_by_digest_checks_the_manifest(env: Env) -> None:
    image = _image(1)
    asked = Digest.of(b"another manifest")
    env.reg.manifests[(REPO, str(asked))] = (OCI_MANIFEST, image.manifest)
    with pytest.raises(FormatError) as info:
        env.pull(f"{REPO}@{asked}")
    assert str(info.value) == (f"{env.reg.host}/{REPO}@{asked}: the manifest's digest is "
                               f"{image.digest}, not {asked}")
    _untouched(env.store)


def _other_platform() -> dict[str, str]:
    return {"os": "linux", "architecture": "s390x" if _host()[0] != "s390x" else "amd64"}


def test_pull_an_index(env: Env) -> None:
    arch, variant = _host()
    mine = _image(1)
    other = make_image([_files(7)], arch=_other_platform()["architecture"])
    host_platform = {"os": "linux", "architecture": arch, **({"variant": variant}
                                                             if variant else {})}
    index = env.reg.put_index(REPO, "multi", [(other, _other_platform()),
                                              (mine, host_platform)])
    got = env.pull(f"{REPO}:multi")
    assert got.image.id == mine.image.id
    assert got.digest == index  # the RepoDigest names the index, as in Docker
    assert env.store.repo_digests(mine.image.id) == [f"{env.reg.host}/{REPO}@{index}"]
    fetched = {r.route.rsplit("/", 1)[-1] for r in env.reg.seen("GET")}
    assert fetched == {"multi", str(mine.digest), str(mine.image.id),
                       *map(str, mine.layer_digests)}  # nothing of the other image

    env.reg.clear()
    store = env.new_store("other")
    plat = "linux/" + _other_platform()["architecture"]
    assert env.pull(f"{REPO}:multi", store=store, platform=plat).image.id == other.image.id
    assert not {str(d) for d in mine.layer_digests} & {
        r.route.rsplit("/", 1)[-1] for r in env.reg.seen("GET")}

    with pytest.raises(RegistryError) as info:
        env.pull(f"{REPO}:multi", store=env.new_store("none"), platform="linux/riscv64")
    offered = ", ".join(sorted([plat, str(Platform.host())]))  # no unknown/unknown
    assert str(info.value) == (f"{env.reg.host}/{REPO}:multi: no image for linux/riscv64 "
                               f"(the image has: {offered})")


def test_asked_platform_must_be_the_images(env: Env) -> None:
    image = _image(1)
    env.reg.put_image(REPO, "1", image)
    with pytest.raises(RegistryError, match="not the asked linux/riscv64"):
        env.pull(platform="linux/riscv64")
    _untouched(env.store)


def test_schema1_is_a_clear_error(env: Env) -> None:
    env.reg.put_manifest(REPO, "old", b'{"schemaVersion": 1, "name": "team/app"}',
                         "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(FormatError, match="schema 1 manifest, which layerbuild does not "
                                          "support") as info:
        env.pull(f"{REPO}:old")
    assert "\n" not in str(info.value)
    _untouched(env.store)


def test_unknown_media_types(env: Env) -> None:
    env.reg.put_manifest(REPO, "odd", b'{"schemaVersion": 2, "mediaType": '
                         b'"application/vnd.example.thing+json"}',
                         "application/vnd.example.thing+json")
    with pytest.raises(FormatError, match="unsupported media type"):
        env.pull(f"{REPO}:odd")
    image = make_image([_files(1)], arch=_host()[0], variant=_host()[1],
                       layer_type="application/vnd.example.layer")
    env.reg.put_image(REPO, "layer", image)
    env.reg.clear()
    with pytest.raises(FormatError, match="unsupported layer media type"):
        env.pull(f"{REPO}:layer")
    assert env.reg.seen(contains="/blobs/") == []  # refused before any download
    _untouched(env.store)


def test_docker_media_types(env: Env) -> None:
    image = _image(1, layer_type=DOCKER_LAYER_GZIP)
    env.reg.put_image(REPO, "1", image)
    assert env.pull().image.id == image.image.id


@pytest.mark.parametrize("without_length", [False, True])
def test_manifest_over_4_mib(env: Env, without_length: bool) -> None:
    env.reg.manifest_without_length = without_length
    env.reg.put_manifest(REPO, "big", b'{"schemaVersion": 2, "x": "' +
                         b"a" * MANIFEST_LIMIT + b'"}')
    with pytest.raises(FormatError, match=f"over the {MANIFEST_LIMIT}-byte limit"):
        env.pull(f"{REPO}:big")
    _untouched(env.store)


@pytest.mark.parametrize("which", [0, 1])
def test_blob_not_matching_its_digest(env: Env, which: int) -> None:
    image = _image(1, 2)
    env.reg.put_image(REPO, "1", image)
    wrong = gzip_bytes(layer_tar(_files(9)))
    env.reg.put_blob(REPO, wrong, digest=image.layer_digests[which])
    with pytest.raises((DigestMismatch, FormatError)) as info:
        env.pull()
    assert "\n" not in str(info.value)
    _untouched(env.store)


def test_blob_same_size_wrong_bytes(env: Env) -> None:
    image = _image(1, 2)
    env.reg.put_image(REPO, "1", image)
    blob = bytearray(image.layers[1])
    blob[-40] ^= 0xFF  # inside the compressed data
    env.reg.put_blob(REPO, bytes(blob), digest=image.layer_digests[1])
    with pytest.raises(LayerbuildError) as info:
        env.pull()
    assert f"layer {image.layer_digests[1].short}" in str(info.value)  # which one
    _untouched(env.store)


def test_config_not_matching_its_digest(env: Env) -> None:
    image = _image(1)
    env.reg.put_image(REPO, "1", image)
    env.reg.put_blob(REPO, image.image.config_bytes.replace(b"/bin/sh", b"/bin/xx"),
                     digest=image.image.id)
    with pytest.raises(FormatError, match="do not match its digest"):
        env.pull()
    _untouched(env.store)


@pytest.mark.parametrize("ignore_range", [False, True])
def test_cut_download_resumes(env: Env, ignore_range: bool) -> None:
    image = _image(1, size=300_000)
    env.reg.put_image(REPO, "1", image)
    env.reg.ignore_range = ignore_range
    layer = image.layer_digests[0]
    env.reg.fault("GET", f"/blobs/{layer}", cut_after=100_000)
    events = RecordingEvents()
    assert env.pull(events=events).image.id == image.image.id
    first, again = env.reg.seen("GET", f"/blobs/{layer}")
    assert "range" not in first.headers
    assert again.headers["range"] == "bytes=100000-"
    assert any("resuming at byte 100000" in n for n in env.notices)
    assert _layer_files(env.store, image.image) == [_files(1, 300_000)]
    counts = [e.current for e in _transfers(events, layer.short) if e.status == "Downloading"]
    assert counts == sorted(counts) and counts[-1] == len(image.layers[0])


def test_cut_again_while_skipping_what_was_read(env: Env) -> None:
    image = _image(1, size=300_000)
    env.reg.put_image(REPO, "1", image)
    env.reg.ignore_range = True
    layer = image.layer_digests[0]
    env.reg.fault("GET", f"/blobs/{layer}", cut_after=100_000)
    env.reg.fault("GET", f"/blobs/{layer}", cut_after=50_000)  # before the first cut
    assert env.pull().image.id == image.image.id
    assert len(env.reg.seen("GET", f"/blobs/{layer}")) == 3
    assert _layer_files(env.store, image.image) == [_files(1, 300_000)]


def test_download_cut_every_time_gives_up(env: Env) -> None:
    image = _image(1, size=300_000)
    env.reg.put_image(REPO, "1", image)
    env.reg.fault("GET", f"/blobs/{image.layer_digests[0]}", cut_after=1000, times=99)
    with pytest.raises(RegistryError, match="broke off"):
        env.pull()
    _untouched(env.store)


def test_layers_the_store_has_are_not_fetched(env: Env) -> None:
    base = _image(1)
    env.reg.put_image(REPO, "base", base)
    env.pull(f"{REPO}:base")
    top = _image(1, 2)
    env.reg.put_image(REPO, "top", top)
    env.reg.clear()
    events = RecordingEvents()
    assert env.pull(f"{REPO}:top", events=events).image.id == top.image.id
    shared, new = top.layer_digests
    assert _statuses(events, shared.short) == ["Already exists"]
    assert _statuses(events, new.short)[-1] == "Pull complete"
    assert env.reg.seen(contains=str(shared)) == []
    assert len(env.reg.seen("GET", str(new))) == 1


def test_the_same_layer_twice(env: Env) -> None:
    image = make_image([_files(1), _files(2), _files(1)], arch=_host()[0], variant=_host()[1])
    env.reg.put_image(REPO, "1", image)
    assert env.pull().image.id == image.image.id
    assert _layer_files(env.store, image.image) == [_files(1), _files(2), _files(1)]
    other = env.new_store("other")
    env.push(image.image, name=f"{REPO}:2")
    assert env.pull(f"{REPO}:2", store=other).image.id == image.image.id


def test_pull_through_a_mirror(tmp_path: Path, env: Env) -> None:
    image = _image(1)
    env.reg.put_image(REPO, "1", image)
    with FakeRegistry() as mirror:
        env.hosts = RegistryHosts({env.reg.host: (mirror.url,)}, frozenset())
        env.pull()  # the mirror does not have it: the registry serves it
        assert any(n.startswith(f"mirror {mirror.host}: ") and n.endswith("trying the next")
                   for n in env.notices)
        assert [r.route for r in mirror.seen()] == [f"/v2/{REPO}/manifests/1"]
        mirror.put_image(REPO, "1", image)
        env.reg.clear()
        env.pull(store=env.new_store("other"))
        assert env.reg.seen() == []  # manifest, config and layers all from the mirror
        assert len(mirror.seen("GET", "/blobs/")) == 2
        env.push(image.image, name=f"{REPO}:2")  # pushes never go to a mirror
        assert mirror.seen("PUT") == [] and env.reg.manifest(REPO, "2") is not None


# --- push ---------------------------------------------------------------------------------


def test_push_then_pull(env: Env) -> None:
    image = _image(1, 2)
    _stored(env.store, image, "local/app:1")
    events = RecordingEvents()
    pushed = env.push(image.image, events=events)
    assert env.reg.manifest(REPO, "1") is not None
    assert pushed.digest == Digest.of(env.reg.manifest(REPO, "1") or b"")
    assert pushed.size == len(env.reg.manifest(REPO, "1") or b"")
    assert env.store.repo_digests(image.image.id) == [f"{env.reg.host}/{REPO}@{pushed.digest}"]
    for digest, blob in zip(image.layer_digests, image.layers, strict=True):
        assert env.reg.blob(REPO, digest) == blob  # the stored blob, not compressed again
        assert _statuses(events, digest.short) == ["Preparing", "Pushing", "Pushed"]
    assert env.reg.blob(REPO, image.image.id) == image.image.config_bytes
    assert env.reg.seen("PUT", "/manifests/")[-1].path.endswith("/manifests/1")

    other = env.new_store("other")
    got = env.pull(store=other)
    assert got.image.id == image.image.id and got.digest == pushed.digest
    assert _layer_files(other, got.image) == [_files(1), _files(2)]
    assert list(env.store.tmp.iterdir()) == [] and list(other.tmp.iterdir()) == []


def test_push_by_digest(env: Env) -> None:
    image = _image(1)
    _stored(env.store, image, "local/app:1")
    pushed = env.push(image.image, name=REPO)
    assert env.reg.manifest(REPO, "latest") is not None  # a name alone means latest
    ref = Reference.parse(f"{env.reg.host}/{REPO}", digests=True).with_tag(None)
    by_digest = push(env.store, image.image, ref, env.transport, env.hosts)
    assert by_digest.digest == pushed.digest
    assert env.reg.seen("PUT", "/manifests/")[-1].path.endswith(f"/manifests/{pushed.digest}")


def test_blobs_the_registry_has_are_not_sent(env: Env) -> None:
    image = _image(1, 2)
    _stored(env.store, image, "local/app:1")
    env.push(image.image)
    env.reg.clear()
    events = RecordingEvents()
    env.push(image.image, name=f"{REPO}:2", events=events)
    for digest in image.layer_digests:
        assert _statuses(events, digest.short) == ["Preparing", "Layer already exists"]
    assert env.reg.seen("POST") == [] and env.reg.seen("PATCH") == []
    assert [r.method for r in env.reg.seen()] == ["HEAD", "HEAD", "HEAD", "PUT"]


def test_mount_from_another_repository(env: Env) -> None:
    image = _image(1, 2)
    _stored(env.store, image, "local/app:1")
    env.push(image.image, name="team/a:1")
    env.reg.clear()
    events = RecordingEvents()
    env.push(image.image, name="team/b:1", events=events)
    for digest in image.layer_digests:
        assert _statuses(events, digest.short) == ["Preparing", "Mounted from team/a"]
        (post,) = [r for r in env.reg.seen("POST") if r.query.get("mount") == [str(digest)]]
        assert post.query == {"mount": [str(digest)], "from": ["team/a"]}
        assert env.reg.blob("team/b", digest) is not None
    assert env.reg.seen("PATCH") == []
    assert [r.route for r in env.reg.seen("PUT")][-1] == "/v2/team/b/manifests/1"
    for diff_id in image.image.config.diff_ids:  # both repositories are known now
        assert {r for _, r in env.store.distribution.sources(diff_id)} == {
            f"{env.reg.host}/team/a", f"{env.reg.host}/team/b"}


def test_refused_mount_uploads(env: Env) -> None:
    image = _image(1)
    _stored(env.store, image, "local/app:1")
    env.push(image.image, name="team/a:1")
    env.reg.allow_mount = False
    events = RecordingEvents()
    env.push(image.image, name="team/b:1", events=events)
    digest = image.layer_digests[0]
    assert _statuses(events, digest.short) == ["Preparing", "Pushing", "Pushed"]
    assert env.reg.blob("team/b", digest) == image.layers[0]


def test_pulled_layers_mount_when_pushed(env: Env) -> None:
    image = _image(1)
    env.reg.put_image("library/base", "1", image)
    env.pull("library/base:1")
    events = RecordingEvents()
    env.push(env.store.get_image(f"{env.reg.host}/library/base:1"), events=events)
    assert _statuses(events, image.layer_digests[0].short) == [
        "Preparing", "Mounted from library/base"]


def test_chunked_upload(env: Env) -> None:
    image = _image(1, size=20_000)
    _stored(env.store, image, "local/app:1")
    events = RecordingEvents()
    env.push(image.image, events=events, chunk=4096)
    digest = image.layer_digests[0]
    size = len(image.layers[0])
    assert env.reg.blob(REPO, digest) == image.layers[0]
    patches = env.reg.seen("PATCH")
    ranges = [r.headers["content-range"] for r in patches if r.body_size]
    starts = list(range(0, size, 4096))
    assert ranges == [f"{s}-{min(s + 4096, size) - 1}" for s in starts]
    assert [r.body_size for r in patches] == [min(4096, size - s) for s in starts]
    (close,) = [r for r in env.reg.seen("PUT", "/uploads/") if r.query["digest"] == [str(digest)]]
    assert close.body_size == 0
    counts = [e.current for e in _transfers(events, digest.short) if e.status == "Pushing"]
    assert counts == [min(s + 4096, size) for s in starts]
    # the config fits in one chunk: one PUT with its bytes
    (config_put,) = [r for r in env.reg.seen("PUT", "/uploads/")
                     if r.query["digest"] == [str(image.image.id)]]
    assert config_put.body_size == len(image.image.config_bytes)


def test_upload_retried_after_a_server_error(env: Env) -> None:
    image = _image(1)
    _stored(env.store, image, "local/app:1")
    env.reg.fault("PUT", "/blobs/uploads/", 503, times=1)
    env.push(image.image)
    assert env.reg.blob(REPO, image.layer_digests[0]) == image.layers[0]
    assert env.waits == [0.5]


def test_failed_push_leaves_no_tag(env: Env) -> None:
    image = _image(1)
    _stored(env.store, image, "local/app:1")
    env.reg.fault("PUT", "/blobs/uploads/", 400, times=99,
                  body=b'{"errors": [{"code": "DIGEST_INVALID", "message": "bad"}]}')
    with pytest.raises(RegistryError, match="digest invalid: bad"):
        env.push(image.image)
    assert env.reg.manifest(REPO, "1") is None
    assert env.store.repo_digests(image.image.id) == []
    assert list(env.store.tmp.iterdir()) == []
