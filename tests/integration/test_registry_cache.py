"""A build cache shared by two stores standing for two machines, through the real registry and
through a folder: the second store takes every step from the first one's cache (same image ID),
fetches only the final image's layers, reruns only from a changed COPY on, and rebuilds a step
whose imported layer is not what its record says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
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


def _fetched(proc: subprocess.CompletedProcess[str]) -> set[str]:
    text = proc.stdout + proc.stderr
    return {line.split(":")[0] for line in text.splitlines() if line.endswith("Pull complete")}


def test_a_second_store_takes_every_step_from_the_registry_cache(
        tmp_path: Path, busybox_tar: Path, registries: Registries, repository: str) -> None:
    a, b, context, _ = _machines(tmp_path, busybox_tar, registries, repository)
    cache = f"{registries.open}/{repository}/cache:1"
    first = run_cli(a, "build", "-t", "app:a", *EPOCH, "--cache-to",
                    f"type=registry,ref={cache},mode=max", str(context))
    second = run_cli(b, "build", "-t", "app:b", *EPOCH, "--cache-from",
                     f"type=registry,ref={cache}", str(context))
    assert _image_id(second) == _image_id(first)
    out = second.stdout + second.stderr
    assert out.count(f"CACHED (from {cache})") == 6, out
    # Only the final image's own layers came down (not the build stage's RUN layer).
    made = json.loads(run_cli(a, "inspect", "app:a").stdout)[0]["RootFS"]["Layers"]
    assert len(_fetched(second)) == len(made) - 1, out
    # A dry run says where each step would come from, and fetches no layer.
    d = tmp_path / "d"
    run_cli(d, "pull", _base_of(context))
    layers = sorted((d / "overlay2").iterdir())
    dry = run_cli(d, "build", "--dry-run", *EPOCH, "--cache-from", cache, str(context))
    assert (dry.stdout + dry.stderr).count(f"CACHED (from {cache})") == 6, dry.stderr
    assert sorted((d / "overlay2").iterdir()) == layers
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
