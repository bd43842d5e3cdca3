"""The test registries (scripts/registries) work with the real tools, and so does the
FaultProxy: what the registry client's tests stand on, checked with docker and skopeo only."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from registrytools import (
    FaultProxy,
    Registries,
    docker_push_busybox,
    run,
    skopeo_push_busybox,
    unique_rootfs_tar,
)
from treeutil import need_tool

pytestmark = pytest.mark.registry


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Docker client config of this test's own, so a login touches no one else's."""
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    return config


def status_of(url: str, creds: str | None = None) -> tuple[int, str]:
    """The HTTP status of a GET, and its WWW-Authenticate header."""
    request = urllib.request.Request(url)
    if creds is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(creds.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("WWW-Authenticate", "")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate", "")


def skopeo_inspect(ref: str, *args: str, check: bool = True) -> dict[str, object] | str:
    """`skopeo inspect` over plain HTTP: the parsed answer, or (check=False) the error text."""
    proc = run("skopeo", "inspect", "--tls-verify=false", *args, f"docker://{ref}", check=check)
    return json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr


def test_docker_pushes_to_and_pulls_from_the_open_registry(
        docker, registries: Registries, busybox_tar: Path, repository: str) -> None:
    ref = f"{registries.open}/{repository}:v1"
    digest = docker_push_busybox(docker, busybox_tar, ref)
    docker("rmi", "-f", docker("inspect", "--format", "{{.Id}}", ref).stdout.strip())
    pulled = docker("pull", ref).stdout
    assert f"Digest: {digest}" in pulled and "Downloaded newer image" in pulled
    ran = docker("run", "--rm", "--network", "none", ref, "/bin/busybox", "echo", "pulled")
    assert ran.stdout.strip() == "pulled"


def test_skopeo_copies_to_and_from_the_basic_auth_registry(
        registries: Registries, busybox_tar: Path, repository: str, tmp_path: Path) -> None:
    need_tool("skopeo")
    ref = f"{registries.basic}/{repository}:v1"
    skopeo_push_busybox(busybox_tar, tmp_path, ref, registries.creds)
    run("skopeo", "copy", "--src-tls-verify=false", "--src-creds", registries.creds,
        f"docker://{ref}", f"oci:{tmp_path / 'back'}:v1")
    pushed = json.loads((tmp_path / "layout" / "index.json").read_text())["manifests"][0]
    back = json.loads((tmp_path / "back" / "index.json").read_text())["manifests"][0]
    assert back["digest"] == pushed["digest"]


def test_the_basic_auth_registry_refuses_wrong_credentials(
        registries: Registries, busybox_tar: Path, repository: str, tmp_path: Path) -> None:
    need_tool("skopeo")
    ref = f"{registries.basic}/{repository}:v1"
    pushed = skopeo_push_busybox(busybox_tar, tmp_path, ref, f"{registries.user}:wrong",
                                 check=False)
    assert pushed.returncode != 0
    assert "unauthorized: authentication required" in pushed.stderr
    refused = skopeo_inspect(ref, "--no-creds", check=False)
    assert "unauthorized: authentication required" in str(refused)
    url = f"http://{registries.basic}/v2/"
    assert status_of(url, f"{registries.user}:wrong") == (401, 'Basic realm="layerbuild-test"')
    assert status_of(url, registries.creds)[0] == 200


def test_docker_logs_in_pushes_and_pulls_on_the_token_registry(
        docker, docker_config: Path, registries: Registries, busybox_tar: Path,
        repository: str) -> None:
    server = registries.token
    wrong = run("docker", "login", server, "-u", registries.user, "--password-stdin",
                input_="wrong\n", check=False)
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr
    run("docker", "login", server, "-u", registries.user, "--password-stdin",
        input_=registries.password + "\n")
    try:
        ref = f"{server}/{repository}:v1"
        digest = docker_push_busybox(docker, busybox_tar, ref)
        docker("rmi", "-f", docker("inspect", "--format", "{{.Id}}", ref).stdout.strip())
        assert f"Digest: {digest}" in docker("pull", ref).stdout
    finally:
        run("docker", "logout", server)
    assert server not in json.loads((docker_config / "config.json").read_text())["auths"]
    docker("rmi", ref)
    refused = docker("pull", ref, check=False)
    assert refused.returncode != 0
    assert "denied: requested access to the resource is denied" in refused.stderr


def test_anonymous_clients_pull_only_public_repositories_of_the_token_registry(
        docker, docker_config: Path, registries: Registries, busybox_tar: Path,
        repository: str, tmp_path: Path) -> None:
    need_tool("skopeo")
    public = f"{registries.token}/public/{repository.split('/', 1)[1]}:v1"
    private = f"{registries.token}/{repository}:v1"
    for n, ref in enumerate((public, private)):
        skopeo_push_busybox(busybox_tar, tmp_path / str(n), ref, registries.creds)
    docker.created.append(public)
    assert "Downloaded newer image" in docker("pull", public).stdout
    refused = docker("pull", private, check=False)
    assert refused.returncode != 0 and "pull access denied" in refused.stderr
    assert isinstance(skopeo_inspect(public, "--no-creds"), dict)
    assert "denied: requested access to the resource is denied" in str(
        skopeo_inspect(private, "--no-creds", check=False))
    pushed = skopeo_push_busybox(busybox_tar, tmp_path / "anonymous", public, check=False)
    assert pushed.returncode != 0, "an anonymous push must be refused"


def _pushed_to_open(registries: Registries, busybox_tar: Path, repository: str,
                    tmp_path: Path) -> tuple[str, str]:
    """The busybox image in the open registry (pushed there directly): its name, digest."""
    need_tool("skopeo")
    name = f"{repository}:v1"
    skopeo_push_busybox(busybox_tar, tmp_path, f"{registries.open}/{name}")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    return name, index["manifests"][0]["digest"]


def test_skopeo_inspects_through_the_fault_proxy(
        fault_proxy: FaultProxy, registries: Registries, busybox_tar: Path, repository: str,
        tmp_path: Path) -> None:
    name, digest = _pushed_to_open(registries, busybox_tar, repository, tmp_path)
    inspected = skopeo_inspect(f"{fault_proxy.address}/{name}")
    assert isinstance(inspected, dict) and inspected["Digest"] == digest
    manifests = fault_proxy.requests("/manifests/")
    assert [(s.method, s.status) for s in manifests] == [("GET", 200)]
    assert "application/vnd.oci.image.manifest.v1+json" in manifests[0].headers["accept"]


def test_skopeo_gives_up_on_a_503_and_waits_out_a_429(
        fault_proxy: FaultProxy, registries: Registries, busybox_tar: Path, repository: str,
        tmp_path: Path) -> None:
    name, digest = _pushed_to_open(registries, busybox_tar, repository, tmp_path)
    ref = f"{fault_proxy.address}/{name}"
    # skopeo 1.9 does not retry a 503, not even with --retry-times.
    fault_proxy.fail("/manifests/", status=503)
    assert "503 Service Unavailable" in str(skopeo_inspect(ref, "--retry-times", "2",
                                                           check=False))
    inspected = skopeo_inspect(ref)  # the fault was for one request only
    assert isinstance(inspected, dict) and inspected["Digest"] == digest
    # A 429 it waits out itself (Retry-After: 1), and asks again.
    fault_proxy.seen.clear()
    fault_proxy.fail("/manifests/", status=429)
    inspected = skopeo_inspect(ref)
    assert isinstance(inspected, dict) and inspected["Digest"] == digest
    assert [s.status for s in fault_proxy.requests("/manifests/")] == [429, 200]


def test_a_corrupted_blob_fails_skopeo_on_its_digest(
        fault_proxy: FaultProxy, registries: Registries, busybox_tar: Path, repository: str,
        tmp_path: Path) -> None:
    name, _ = _pushed_to_open(registries, busybox_tar, repository, tmp_path)
    fault_proxy.corrupt("/blobs/sha256:", times=None)
    copied = run("skopeo", "copy", "--src-tls-verify=false", f"docker://{fault_proxy.address}/"
                 f"{name}", f"oci:{tmp_path / 'back'}:v1", check=False)
    assert copied.returncode != 0 and "Digest did not match" in copied.stderr


def test_docker_resumes_a_cut_blob_download_with_a_range_request(
        docker, fault_proxy: FaultProxy, registries: Registries, busybox_tar: Path,
        repository: str, tmp_path: Path) -> None:
    # A layer of its own: one Docker has from an earlier test would never be fetched.
    rootfs = unique_rootfs_tar(busybox_tar, tmp_path / "unique.tar", repository)
    name, digest = _pushed_to_open(registries, rootfs, repository, tmp_path)
    manifest = json.loads((tmp_path / "layout" / "blobs" / "sha256" / digest[7:]).read_bytes())
    layer = manifest["layers"][0]["digest"]
    fault_proxy.cut(f"/blobs/{layer}", after=100_000)
    ref = f"{fault_proxy.address}/{name}"
    docker.created.append(ref)
    assert f"Digest: {digest}" in docker("pull", ref).stdout
    gets = fault_proxy.requests(f"/blobs/{layer}", method="GET")
    assert [(s.status, s.fault, s.headers.get("range")) for s in gets] == [
        (200, "cut", None), (206, None, "bytes=100000-")]
