"""One archive, several images: skopeo and podman find each by its name.

Tags go in index.json as `docker save` of Docker 25+ writes them (`ref.name` the tag alone,
`io.containerd.image.name` the full name; see tests/unit/test_save_names.py), so two images
both tagged `latest` share a `ref.name`: skopeo's `oci-archive:FILE:latest` then takes the
first, and `save` says so. By name, skopeo picks each through `docker-archive:FILE:NAME:TAG`
(the archive's manifest.json), and `podman load` stores each under its name.

podman and HEALTHCHECK: podman reads a healthcheck only from images whose manifest is Docker
schema 2 (containers/common, libimage/inspect.go); for an OCI manifest it reads none, so no
field of an OCI image's config can carry it there. `podman load` of a single-image archive
takes the OCI path and drops it; several images, or `podman pull docker-archive:FILE`, take
the docker-archive path, whose manifest is Docker schema 2, and keep it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from treeutil import need_root, need_tool


@pytest.fixture
def podman() -> Iterator[list[str]]:
    """Names the test loads into podman's store, removed afterwards."""
    need_root()
    need_tool("podman")
    loaded: list[str] = []
    yield loaded
    for name in loaded:
        subprocess.run(["podman", "rmi", "-f", name], capture_output=True)


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def two_latest(lb, base: str, tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """An archive of two images both tagged `latest` (one with a HEALTHCHECK), the image ID
    of each name, and what `save` said."""
    prefix = f"lbmulti-{uuid.uuid4().hex[:8]}"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text(f"FROM {base}\nHEALTHCHECK --interval=7s CMD true\n")
    names = {f"{prefix}-a:latest": "", f"{prefix}/b:latest": ""}
    lb("tag", base, f"{prefix}-a:latest")
    lb("build", "-q", "-t", f"{prefix}/b:latest", str(ctx))
    for name in names:
        names[name] = json.loads(lb("inspect", name).stdout)[0]["Id"]
    archive = tmp_path / "multi.tar"
    saved = lb("save", *names, "-o", str(archive))
    return archive, names, saved.stderr


def test_skopeo_finds_each_image_by_name(two_latest: tuple[Path, dict[str, str], str]
                                         ) -> None:
    need_tool("skopeo")
    archive, names, said = two_latest
    assert "share the OCI ref.name 'latest'" in said
    assert f"docker-archive:{archive}:" in said
    for name, image_id in names.items():
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--config",
                              f"docker-archive:{archive}:{name}"],
                             capture_output=True, check=True, timeout=300).stdout
        assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == image_id, name


def test_skopeo_finds_images_with_tags_of_their_own_by_tag(
        lb, two_latest: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    need_tool("skopeo")
    _, names, _ = two_latest
    (a, a_id), (b, b_id) = names.items()
    b2 = b.replace(":latest", ":2")
    lb("tag", b, b2)
    archive = tmp_path / "own.tar"
    assert lb("save", a, b2, "-o", str(archive)).stderr == ""  # nothing shared: no notice
    for tag, image_id in (("latest", a_id), ("2", b_id)):
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--config",
                              f"oci-archive:{archive}:{tag}"],
                             capture_output=True, check=True, timeout=300).stdout
        assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == image_id, tag


def test_podman_load_stores_each_image_under_its_name(
        two_latest: tuple[Path, dict[str, str], str], podman: list[str]) -> None:
    archive, names, _ = two_latest
    out = _run("podman", "load", "-i", str(archive))
    for name, image_id in names.items():
        stored = f"localhost/{name}"  # podman's name for a short one, as for docker save's
        podman.append(stored)
        assert f"Loaded image: {stored}" in out
        info = json.loads(_run("podman", "image", "inspect", stored))[0]
        assert "sha256:" + info["Id"] == image_id
    healthcheck = json.loads(_run("podman", "image", "inspect", f"localhost/{list(names)[1]}")
                             )[0]["Healthcheck"]
    assert healthcheck["Test"] == ["CMD-SHELL", "true"]
    assert healthcheck["Interval"] == 7_000_000_000


def test_podman_keeps_healthcheck_through_docker_archive(
        lb, two_latest: tuple[Path, dict[str, str], str], podman: list[str],
        tmp_path: Path) -> None:
    _, names, _ = two_latest
    name = list(names)[1]
    single = tmp_path / "single.tar"
    lb("save", name, "-o", str(single))
    _run("podman", "pull", "-q", f"docker-archive:{single}")
    podman.append(f"localhost/{name}")
    info = json.loads(_run("podman", "image", "inspect", f"localhost/{name}"))[0]
    assert info["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
