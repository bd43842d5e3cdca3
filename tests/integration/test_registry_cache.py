"""A build cache shared by two stores standing for two machines, through the real registry and
through a folder: the second store takes every step from the first one's cache (same image ID),
fetches only the final image's layers (counted by a proxy in front of the registry), reruns only
from a changed COPY on, and rebuilds a step whose imported record or layer is not what it should
be."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli
from faultproxy import FaultProxy
from registrytools import Registries

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("client_config")]

BUILDFILE = """\
FROM {base} AS build
RUN echo built > /out.txt
COPY f.txt /f.txt
FROM {base}
COPY --from=build /out.txt /out.txt
COPY f.txt /g.txt
RUN cat /g.txt > /h.txt
CMD ["sh"]
"""
EPOCH = ("--source-date-epoch", "0", "--progress", "plain")


def _machines(tmp_path: Path, busybox_tar: Path, registries: Registries,
              repository: str) -> tuple[Path, Path, Path, str]:
    a, b = tmp_path / "a", tmp_path / "b"
    base = f"{registries.open}/{repository}/base:1"
    run_cli(a, "import", str(busybox_tar), base)
    run_cli(a, "push", base)
    run_cli(b, "pull", base)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text(BUILDFILE.format(base=base))
    (context / "f.txt").write_text("hello\n")
    return a, b, context, base


def _image_id(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout.split("Successfully built ")[1].split()[0]


def _skopeo_json(*args: str) -> dict:
    return json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", *args],
                                     check=True, capture_output=True, text=True).stdout)


def test_a_second_store_takes_every_step_from_the_registry_cache(
        tmp_path: Path, busybox_tar: Path, registries: Registries, repository: str,
        fault_proxy: FaultProxy) -> None:
    a, b, context, _ = _machines(tmp_path, busybox_tar, registries, repository)
    cache = f"{registries.open}/{repository}/cache:1"
    first = run_cli(a, "build", "-t", "app:a", *EPOCH, "--cache-to",
                    f"type=registry,ref={cache},mode=max", str(context))
    # B reads the cache through a proxy that counts what the registry sends.
    proxied = f"{fault_proxy.address}/{repository}/cache:1"
    second = run_cli(b, "build", "-t", "app:b", *EPOCH, "--cache-from",
                     f"type=registry,ref={proxied}", str(context))
    assert _image_id(second) == _image_id(first)
    out = second.stdout + second.stderr
    assert out.count(f"CACHED (from {proxied})") == 6, out
    # The bytes that came down are the cache config and the final image's own layers (not
    # the base's, which B has, nor the build stage's RUN layer, which no output needs).
    manifest = _skopeo_json("--raw", f"docker://{cache}")
    config = _skopeo_json("--config", "--raw", f"docker://{cache}")
    blob_of = {layer["diff_id"]: layer["blob"] for layer in config["layers"] if "blob" in layer}
    made = json.loads(run_cli(a, "inspect", "app:a").stdout)[0]["RootFS"]["Layers"]
    wanted = {manifest["config"]["digest"]: manifest["config"]["size"]}
    wanted |= {blob_of[d]["digest"]: blob_of[d]["size"] for d in made[1:]}
    fetched = [(s.target.rsplit("/", 1)[1], s.sent)
               for s in fault_proxy.requests(r"/blobs/sha256:", method="GET")]
    assert sorted(fetched) == sorted(wanted.items()), out
    # A dry run says where each step would come from, and fetches only the cache config.
    d = tmp_path / "d"
    run_cli(d, "pull", _base_of(context))
    layers = sorted((d / "overlay2").iterdir())
    seen = len(fault_proxy.seen)
    dry = run_cli(d, "build", "--dry-run", *EPOCH, "--cache-from", proxied, str(context))
    assert (dry.stdout + dry.stderr).count(f"CACHED (from {proxied})") == 6, dry.stderr
    assert sorted((d / "overlay2").iterdir()) == layers
    assert [s.target.rsplit("/", 1)[1] for s in fault_proxy.seen[seen:]
            if "/blobs/" in s.target] == [manifest["config"]["digest"]]
    # One context file changes: B reruns from the COPY of it on, and reuses what is before.
    (context / "f.txt").write_text("changed\n")
    third = run_cli(b, "build", "-t", "app:c", *EPOCH, "--cache-from", cache, str(context))
    out = third.stdout + third.stderr
    assert "[build 2/3] RUN echo built > /out.txt\n  CACHED" in out, out
    assert "[build 3/3] COPY f.txt /f.txt\n  cache miss" in out, out
    # The build stage changed, so what the final stage copies from it is built again.
    assert "[stage-1 2/5] COPY --from=build /out.txt /out.txt\n  cache miss" in out, out
    files = run_cli(b, "build", "-t", "app:c", *EPOCH, str(context))
    assert "CACHED (from" not in files.stdout  # the store's own cache has all of it now


def test_a_cache_folder_is_shared_and_a_tampered_layer_is_rebuilt(
        tmp_path: Path, busybox_tar: Path, registries: Registries, repository: str) -> None:
    a, b, context, _ = _machines(tmp_path, busybox_tar, registries, repository)
    folder = tmp_path / "folder"
    first = run_cli(a, "build", "-t", "app:a", *EPOCH, "--cache-to",
                    f"type=local,dest={folder},mode=max", str(context))
    subprocess.run(["skopeo", "inspect", "--raw", f"oci:{folder}:latest"], check=True,
                   capture_output=True)
    second = run_cli(b, "build", "-t", "app:b", *EPOCH, "--cache-from",
                     f"type=local,src={folder}", str(context))
    assert _image_id(second) == _image_id(first)
    assert (second.stdout + second.stderr).count(f"CACHED (from {folder}:latest)") == 6
    # A layer blob whose bytes are not its digest's: the steps on it are rebuilt, with a warning.
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{folder}:latest"], check=True,
        capture_output=True, text=True).stdout)
    top = manifest["layers"][-1]["digest"].split(":")[1]
    blob = folder / "blobs" / "sha256" / top
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-8] + b"tampered")
    c = tmp_path / "c"
    run_cli(c, "pull", _base_of(context))
    third = run_cli(c, "build", "-t", "app:c", *EPOCH, "--cache-from",
                    f"type=local,src={folder}", str(context))
    out = third.stdout + third.stderr
    assert "warning: --cache-from" in out and "building the steps that used it" in out, out
    assert _image_id(third) == _image_id(first)


def _base_of(context: Path) -> str:
    return (context / "Buildfile").read_text().split()[1]


def test_an_inline_cache_travels_in_the_pushed_image(
        tmp_path: Path, busybox_tar: Path, registries: Registries, repository: str) -> None:
    a, b, context, _ = _machines(tmp_path, busybox_tar, registries, repository)
    app = f"{registries.open}/{repository}/app:latest"
    first = run_cli(a, "build", "-t", app, *EPOCH, "--cache-to", "type=inline", "--push",
                    str(context))
    config = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--config", "--raw", f"docker://{app}"],
        check=True, capture_output=True, text=True).stdout)
    assert config["layerbuild.cache.v1"]["records"], config
    second = run_cli(b, "build", "-t", "app:b", *EPOCH, "--cache-from", app, "--cache-to",
                     "type=inline", str(context))
    out = second.stdout + second.stderr
    # The final stage's steps come from the image; the build stage is not in an inline cache.
    assert out.count(f"CACHED (from {app})") == 4, out
    assert _image_id(second) == _image_id(first)


def test_two_exports_into_one_folder_at_once_leave_it_valid(
        tmp_path: Path, busybox_tar: Path, registries: Registries, repository: str) -> None:
    a, b, context, base = _machines(tmp_path, busybox_tar, registries, repository)
    other = tmp_path / "ctx2"
    shutil.copytree(context, other)
    (other / "f.txt").write_text("other\n")
    folder = tmp_path / "folder"
    jobs = [subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(root),
                              "build", *EPOCH, "--cache-to",
                              f"type=local,dest={folder},tag={tag},mode=max", str(ctx)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for root, tag, ctx in ((a, "one", context), (b, "two", other))]
    for job in jobs:
        out, _ = job.communicate(timeout=300)
        assert job.returncode == 0, out
    for tag in ("one", "two"):
        subprocess.run(["skopeo", "inspect", "--raw", f"oci:{folder}:{tag}"], check=True,
                       capture_output=True)
    c = tmp_path / "c"
    run_cli(c, "pull", base)
    again = run_cli(c, "build", *EPOCH, "--cache-from", f"type=local,src={folder},tag=two",
                    str(other))
    assert (again.stdout + again.stderr).count(f"CACHED (from {folder}:two)") == 6


def test_a_tampered_layer_a_running_step_needs_is_rebuilt(
        tmp_path: Path, busybox_tar: Path, registries: Registries, repository: str) -> None:
    a, b, context, _ = _machines(tmp_path, busybox_tar, registries, repository)
    folder = tmp_path / "folder"
    run_cli(a, "build", *EPOCH, "--cache-to", f"type=local,dest={folder},mode=max",
            str(context))
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{folder}:latest"], check=True,
        capture_output=True, text=True).stdout)
    for layer in manifest["layers"]:
        blob = folder / "blobs" / "sha256" / layer["digest"].split(":")[1]
        blob.write_bytes(blob.read_bytes()[:-8] + b"tampered")
    # The RUN's layer is needed by the COPY after it, which runs: its check fails mid-build.
    (context / "f.txt").write_text("changed\n")
    built = run_cli(b, "build", "-t", "app:b", *EPOCH, "--cache-from",
                    f"type=local,src={folder}", str(context))
    out = built.stdout + built.stderr
    assert "building the steps that used it" in out, out
    clean = run_cli(a, "build", "-t", "app:c", *EPOCH, str(context))  # A's, as it should be
    assert _image_id(built) == _image_id(clean)


def _rewrite_cache(folder: Path, change: Callable[[dict], None]) -> None:
    """Change the cache config of the folder's `latest` cache, as someone with write access to
    the folder could: new config and manifest blobs with their right digests, a new index."""
    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (folder / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    def get(digest: str) -> dict:
        return json.loads((folder / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())

    index = json.loads((folder / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = get(entry["digest"])
    config = get(manifest["config"]["digest"])
    change(config)
    manifest["config"]["digest"], manifest["config"]["size"] = put(json.dumps(config).encode())
    entry["digest"], entry["size"] = put(json.dumps(manifest).encode())
    (folder / "index.json").write_text(json.dumps(index))


def _record(config: dict, created_by: str) -> dict:
    return next(r for r in config["records"] if r["history"].get("created_by") == created_by)


G = "COPY f.txt /g.txt # buildkit"
F = "COPY f.txt /f.txt # buildkit"
H = "RUN /bin/sh -c cat /g.txt > /h.txt # buildkit"


def _other_history(config: dict) -> None:  # the record of COPY g.txt says it is COPY f.txt's
    _record(config, G)["history"] = _record(config, F)["history"]


def _other_blob(config: dict) -> None:  # the layers of COPY g.txt and RUN name each other's
    g = config["layers"][_record(config, G)["stack"][-1]]
    h = config["layers"][_record(config, H)["stack"][-1]]
    g["blob"], h["blob"] = h["blob"], g["blob"]


def _other_stack(config: dict) -> None:  # COPY g.txt's layer put right on the base's
    record = _record(config, G)
    record["stack"] = [record["stack"][0], record["stack"][-1]]


@pytest.mark.parametrize(("change", "says"), [
    (_other_history, f"COPY says '{F}', the step '{G}'; building the step"),
    (_other_blob, "building the steps that used it"),
    (_other_stack, None),  # made on other layers than this build's: not this step's result
])
def test_a_record_mapped_to_the_wrong_layer_is_rebuilt(
        tmp_path: Path, busybox_tar: Path, registries: Registries, repository: str,
        change: Callable[[dict], None], says: str | None) -> None:
    a, b, context, _ = _machines(tmp_path, busybox_tar, registries, repository)
    folder = tmp_path / "folder"
    first = run_cli(a, "build", "-t", "app:a", *EPOCH, "--cache-to",
                    f"type=local,dest={folder},mode=max", str(context))
    _rewrite_cache(folder, change)
    built = run_cli(b, "build", "-t", "app:b", *EPOCH, "--cache-from",
                    f"type=local,src={folder}", str(context))
    out = built.stdout + built.stderr
    assert re.search(r"\[stage-1 3/5\] COPY f.txt /g.txt\n(warning: .*\n)?  cache miss", out), out
    if says is not None:
        assert says in out, out
    assert _image_id(built) == _image_id(first)
