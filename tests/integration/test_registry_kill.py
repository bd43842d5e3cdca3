"""`layerbuild pull` and `layerbuild push` killed (SIGKILL) at random points, against the real
open registry through a FaultProxy that slows the blobs down to widen the windows: after each
kill the next command cleans the debris, the store is consistent and holds what it held (or
the whole pulled image), the registry has no tag naming missing blobs, and the same command
then succeeds. The images left at the end save, validate and `docker load`.

The kill delays come from a seeded generator; the seed is printed (and taken from
$LAYERBUILD_KILL_SEED when set, to repeat a run).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli
from registrytools import FaultProxy, Registries, repository_name
from storecheck import check_consistent
from treeutil import need_root

from layerbuild.archive.sources import TarSource
from layerbuild.validate import validate_archive

pytestmark = pytest.mark.registry

PULL_TRIALS = 10
PUSH_TRIALS = 10
LAYERS = 4
LAYER_BYTES = 7 << 20  # random, so ~30 MB of blobs with busybox's layer
BLOB_DELAY = 0.25
"""Seconds the proxy holds each blob transfer back: the commands take 1-3 s, not 0.5."""
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _seed() -> int:
    text = os.environ.get("LAYERBUILD_KILL_SEED")
    return int(text) if text else random.SystemRandom().randrange(1 << 32)


SEED = _seed()


# --- the image: busybox and four layers of random bytes ---------------------------------------

def _random_tar(rng: random.Random, name: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(f"data/{name}")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for part in range(4):
            data = rng.randbytes(LAYER_BYTES // 4)
            info = tarfile.TarInfo(f"data/{name}/part{part}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def write_layout(tars: list[bytes], dest: Path) -> None:
    """An OCI image layout of one image whose layers are `tars` (gzipped), bottom first."""
    blobs = dest / "blobs/sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    layers = [blob(gzip.compress(t, compresslevel=1, mtime=0),
                   "application/vnd.oci.image.layer.v1.tar+gzip") for t in tars]
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [
                  f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars]},
              "history": [{"created_by": f"layer {n}"} for n in range(len(tars))]}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": blob(json.dumps(config).encode(),
                               "application/vnd.oci.image.config.v1+json"),
                "layers": layers}
    top = blob(json.dumps(manifest).encode(), OCI_MANIFEST)
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


@dataclass(frozen=True)
class Big:
    """The image, loaded into `store` as `big:1` and pushed to the open registry as `ref`."""

    store: Path
    image_id: str
    repository: str
    manifest: str  # the pushed manifest's digest (a push makes the same one each time)


@pytest.fixture(scope="module")
def big(registries: Registries, busybox_tar: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Big:
    need_root()
    work = tmp_path_factory.mktemp("kill-image")
    rng = random.Random(SEED)
    write_layout([busybox_tar.read_bytes(), *(_random_tar(rng, f"l{n}") for n in range(LAYERS))],
                 work / "layout")
    store = work / "store"
    run_cli(store, "load", "-i", str(work / "layout"))
    image_id = _only_image(store)
    run_cli(store, "tag", image_id, "big:1")
    repository = repository_name("kill")
    out = run_cli(store, "push", "big:1", f"{registries.open}/{repository}:src").stdout
    return Big(store, image_id, repository, out.split("digest: ")[1].split()[0])


def _only_image(store: Path) -> str:
    ids = {i for i in check_consistent(store).images}
    assert len(ids) == 1, ids
    return ids.pop()


# --- killing -----------------------------------------------------------------------------------

def _cli(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "layerbuild.cli", "--root", str(root), *args]


def timed(root: Path, *args: str) -> float:
    """How long the command takes when nothing kills it."""
    started = time.monotonic()
    run_cli(root, *args)
    return time.monotonic() - started


def kill_after(delay: float, root: Path, *args: str) -> tuple[bool, bool]:
    """Run the command and SIGKILL it after `delay` s: (whether it had finished, whether it
    was killed while it had a staging dir, i.e. mid-way)."""
    proc = subprocess.Popen(_cli(root, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        code = proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
    assert code in (0, -signal.SIGKILL), f"{args}: exit {code}"
    return code == 0, code != 0 and bool(os.listdir(root / "tmp"))


def delays(rng: random.Random, count: int, duration: float) -> list[float]:
    """When to kill: spread over the command's run, past the interpreter's start and the
    manifest (about the first quarter)."""
    return [round(rng.uniform(duration * 0.25, duration * 0.95), 3) for _ in range(count)]


def save_and_docker_load(docker, root: Path, names: list[str], archive: Path) -> None:
    """`save` the images, validate the archive and `docker load` it."""
    run_cli(root, "save", *names, "-o", str(archive))
    validate_archive(TarSource(archive))
    docker.created.extend(names)
    loaded = docker("load", "-i", str(archive)).stdout
    for name in names:
        assert f"Loaded image: {name}" in loaded, loaded


# --- pull --------------------------------------------------------------------------------------

def test_a_killed_pull_leaves_the_store_as_it_was_and_the_next_pull_works(
        big: Big, registries: Registries, busybox_tar: Path, tmp_path: Path, docker) -> None:
    rng = random.Random(SEED ^ 1)
    root = tmp_path / "store"
    keep = f"{docker.prefix}-keep:1"
    run_cli(root, "import", str(busybox_tar), keep)
    before = check_consistent(root)
    with FaultProxy(registries.open) as proxy:
        proxy.delay(r"/blobs/sha256:", BLOB_DELAY, method="GET")
        ref = f"{proxy.address}/{big.repository}:src"
        duration = timed(tmp_path / "timing", "pull", ref)
        plan = delays(rng, PULL_TRIALS, duration)
        print(f"seed {SEED}: pull takes {duration:.2f}s; kills after {plan} s")
        landed = 0
        for trial, delay in enumerate(plan):
            say = f"seed {SEED}, pull trial {trial}, killed after {delay}s"
            finished, midway = kill_after(delay, root, "pull", ref)
            landed += midway
            run_cli(root, "images")  # cleans what the killed pull left
            found = check_consistent(root)
            # As before, or the whole image (a kill after its tag, before the exit).
            assert found == before or found.tags.get(ref) == big.image_id, say
            if finished:
                assert found.tags.get(ref) == big.image_id, say
            run_cli(root, "pull", ref)
            found = check_consistent(root)
            assert found.tags.get(ref) == big.image_id, say
            if trial < len(plan) - 1:
                run_cli(root, "rmi", ref)
                assert check_consistent(root) == before, say
    print(f"seed {SEED}: {landed} of {PULL_TRIALS} kills landed mid-pull")
    assert landed >= PULL_TRIALS // 3, f"seed {SEED}: only {landed} kills landed mid-pull"
    save_and_docker_load(docker, root, [keep, ref], tmp_path / "final.tar")


# --- push --------------------------------------------------------------------------------------

def _registry(method: str, url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers={"Accept": OCI_MANIFEST})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def tagged_manifest(registry: str, repository: str, tag: str) -> str | None:
    """The digest the tag names, checked: every blob its manifest names is in the repository.
    None when there is no such tag."""
    status, data = _registry("GET", f"http://{registry}/v2/{repository}/manifests/{tag}")
    if status == 404:
        return None
    assert status == 200, status
    manifest = json.loads(data)
    for desc in [manifest["config"], *manifest["layers"]]:
        blob = f"http://{registry}/v2/{repository}/blobs/{desc['digest']}"
        assert _registry("HEAD", blob)[0] == 200, f"{tag} names a missing blob {desc['digest']}"
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_a_killed_push_leaves_no_tag_naming_missing_blobs_and_the_next_push_works(
        big: Big, registries: Registries, tmp_path: Path, docker) -> None:
    rng = random.Random(SEED ^ 2)
    root = big.store
    before = check_consistent(root).without_pins()

    def push(proxy: FaultProxy, name: str) -> tuple[str, str]:
        return f"{proxy.address}/{big.repository}-{name}:v1", f"{big.repository}-{name}"

    # A proxy of its own per trial: the store knows no blob of that registry name, so every
    # blob is uploaded (not mounted from an earlier trial's repository).
    with FaultProxy(registries.open) as proxy:
        proxy.delay(r"/blobs/uploads/", BLOB_DELAY, method="PUT")
        target, repository = push(proxy, "timing")
        duration = timed(root, "push", "big:1", target)
        assert tagged_manifest(registries.open, repository, "v1") == big.manifest
    plan = delays(rng, PUSH_TRIALS, duration)
    print(f"seed {SEED}: push takes {duration:.2f}s; kills after {plan} s")
    landed = 0
    for trial, delay in enumerate(plan):
        say = f"seed {SEED}, push trial {trial}, killed after {delay}s"
        with FaultProxy(registries.open) as proxy:
            proxy.delay(r"/blobs/uploads/", BLOB_DELAY, method="PUT")
            target, repository = push(proxy, str(trial))
            finished, midway = kill_after(delay, root, "push", "big:1", target)
            landed += midway
            run_cli(root, "images")
            assert check_consistent(root).without_pins() == before, say
            left = tagged_manifest(registries.open, repository, "v1")
            assert left in (None, big.manifest), say
            if finished:
                assert left == big.manifest, f"{say}: the push ended without the tag"
            out = run_cli(root, "push", "big:1", target).stdout
            assert f"v1: digest: {big.manifest}" in out, say
            assert tagged_manifest(registries.open, repository, "v1") == big.manifest, say
    print(f"seed {SEED}: {landed} of {PUSH_TRIALS} kills landed mid-push")
    assert landed >= PUSH_TRIALS // 3, f"seed {SEED}: only {landed} kills landed mid-push"
    name = f"{docker.prefix}-big:1"
    run_cli(root, "tag", "big:1", name)
    check_consistent(root)
    save_and_docker_load(docker, root, [name], tmp_path / "final.tar")
