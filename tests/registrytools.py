"""Test helpers for the registry tests: where the test registries are (scripts/registries starts
them), and a busybox image pushed there with the real tools. The fault-injecting proxy lives in
faultproxy.py; `FaultProxy` is importable from here too."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultproxy import FaultProxy as FaultProxy
from faultproxy import Seen as Seen

STATE_DIR = Path(os.environ.get("LAYERBUILD_REGISTRIES_DIR", "/var/tmp/layerbuild-registries"))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class Registries:
    """The running test registries, as scripts/registries wrote them to registries.json."""

    open: str  # host:port, no auth
    basic: str  # host:port, htpasswd basic auth
    token: str  # host:port, token auth through `token_server`
    token_server: str  # URL
    service: str  # the token auth service name
    user: str
    password: str
    logs: Path

    @property
    def creds(self) -> str:
        """`user:password`, as skopeo's --creds takes it."""
        return f"{self.user}:{self.password}"

    def all_answer(self) -> bool:
        return all(answers(f"http://{a}/v2/") for a in (self.open, self.basic, self.token)) \
            and answers(f"{self.token_server}/token")


def load_registries(path: Path = STATE_DIR / "registries.json") -> Registries | None:
    """The registries of registries.json, or None when scripts/registries never ran."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return Registries(open=data["open"]["address"], basic=data["basic"]["address"],
                      token=data["token"]["address"], token_server=data["token_server"],
                      service=data["token"]["service"], user=data["user"],
                      password=data["password"], logs=Path(data["logs"]))


def answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` (with any status)."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def repository_name(test_name: str, prefix: str = "lbtest") -> str:
    """A repository name of its own for one test: valid for a registry whatever the test's name.

    >>> repository_name("test_push[open]")[:20]
    'lbtest/test-push-ope'
    """
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40]
    return f"{prefix}/{stem}-{os.urandom(4).hex()}"


# --- a busybox image, pushed by the real tools -------------------------------------------------

def run(*args: str, input_: str | None = None, check: bool = True, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure (when `check`), an AssertionError with its output."""
    proc = subprocess.run(list(args), input=input_, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env} if env else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def docker_push_busybox(docker: Any, rootfs_tar: Path, ref: str) -> str:
    """Import `rootfs_tar` into Docker, tag it `ref` (REGISTRY/NAME:TAG) and `docker push` it;
    returns the pushed manifest digest. Both tags are removed by the `docker` fixture."""
    local = docker.name("busybox")
    docker("import", "--change", "CMD [\"/bin/sh\"]", str(rootfs_tar), local)
    docker("tag", local, ref)
    docker.created.append(ref)
    pushed = docker("push", ref).stdout
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert found, f"no digest in docker push output:\n{pushed}"
    return found.group(1)


def write_oci_layout(rootfs_tar: Path, dest: Path, tag: str = "latest",
                     architecture: str = "amd64", compressed: bool = True) -> str:
    """A one-layer OCI image layout of `rootfs_tar` at `dest`, for `linux/<architecture>`
    (arm64 with variant v8, as real arm64 images say), its layer gzipped or (`compressed`
    False) stored as the plain tar; returns the manifest digest."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    raw = rootfs_tar.read_bytes()
    layer = blob(gzip.compress(raw, mtime=0), f"{OCI_LAYER}+gzip") if compressed \
        else blob(raw, OCI_LAYER)
    config: dict[str, object] = {
        "architecture": architecture, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
        "history": [{"created_by": "busybox rootfs of the layerbuild tests"}]}
    if architecture == "arm64":
        config["variant"] = "v8"
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": blob(json.dumps(config).encode(),
                               "application/vnd.oci.image.config.v1+json"),
                "layers": [layer]}
    top = blob(json.dumps(manifest).encode(), OCI_MANIFEST)
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return str(top["digest"])


def unique_rootfs_tar(rootfs_tar: Path, dest: Path, marker: str) -> Path:
    """A copy of `rootfs_tar` with `etc/lbtest-marker` holding `marker`: a layer no registry
    and no blob cache has seen (skopeo reuses a blob it knows as it is, whatever compression
    it was asked for)."""
    shutil.copyfile(rootfs_tar, dest)
    data = f"{marker}\n".encode()
    info = tarfile.TarInfo("./etc/lbtest-marker")
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    with tarfile.open(dest, "a", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return dest


def push_layout(layout: Path, registry: str, name: str, tag: str) -> str:
    """Push the first image of an OCI layout to an open registry with the distribution API's
    plain requests, every blob exactly as the layout holds it (docker and skopeo would
    compress an uncompressed layer); returns the manifest digest."""
    blobs = layout / "blobs" / "sha256"
    top = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = (blobs / top["digest"][7:]).read_bytes()
    parsed = json.loads(manifest)
    base = f"http://{registry}/v2/{name}"
    for desc in [parsed["config"], *parsed["layers"]]:
        started = _http("POST", f"{base}/blobs/uploads/", b"", {})
        location = urllib.parse.urljoin(base, started.headers["Location"])
        sep = "&" if "?" in location else "?"
        _http("PUT", f"{location}{sep}digest={desc['digest']}",
              (blobs / desc["digest"][7:]).read_bytes(),
              {"Content-Type": "application/octet-stream"})
    _http("PUT", f"{base}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
    return str(top["digest"])


def _http(method: str, url: str, body: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return response


def skopeo_push_busybox(rootfs_tar: Path, work: Path, ref: str, creds: str | None = None,
                        check: bool = True) -> subprocess.CompletedProcess[str]:
    """`skopeo copy` a busybox OCI layout (made in `work`) to `docker://ref` over plain HTTP."""
    write_oci_layout(rootfs_tar, work / "layout")
    auth = ["--dest-creds", creds] if creds else ["--dest-no-creds"]
    return run("skopeo", "copy", "--dest-tls-verify=false", *auth,
               f"oci:{work / 'layout'}:latest", f"docker://{ref}", check=check)


@dataclass(frozen=True)
class MultiArch:
    """A multi-platform image in a registry: an index and the image of each architecture."""

    ref: str
    """`REGISTRY/NAME:TAG` of the index."""
    digest: str
    """The index's digest."""
    images: dict[str, str]
    """Architecture → the digest of its image's manifest."""


def push_multi_arch(rootfs_tar: Path, work: Path, name: str,
                    architectures: tuple[str, ...] = ("amd64", "arm64")) -> MultiArch:
    """A manifest list at `NAME:multi` made by `docker manifest create/push --insecure` of one
    busybox image per architecture, which skopeo pushes first as `NAME:<arch>`. Their configs
    say their architecture; the rootfs is the host's busybox in all (for pulls and COPY-only
    builds that is enough). Docker schema 2, since Debian's docker 20.10 CLI does not list
    OCI manifests. The CLI's manifest store goes to a config dir of its own in `work`."""
    images = {}
    for arch in architectures:
        layout = work / f"layout-{arch}"
        write_oci_layout(rootfs_tar, layout, architecture=arch)
        digest_file = work / f"digest-{arch}"
        run("skopeo", "copy", "--format", "v2s2", "--dest-tls-verify=false", "--dest-no-creds",
            "--digestfile", str(digest_file), f"oci:{layout}:latest", f"docker://{name}:{arch}")
        images[arch] = digest_file.read_text().strip()
    env = {"DOCKER_CONFIG": str(work / "docker-manifest-config")}
    ref = f"{name}:multi"
    run("docker", "manifest", "create", "--insecure", ref,
        *(f"{name}:{arch}" for arch in architectures), env=env)
    pushed = run("docker", "manifest", "push", "--purge", "--insecure", ref, env=env).stdout
    found = re.search(r"sha256:[0-9a-f]{64}", pushed)
    assert found, f"no digest in docker manifest push output:\n{pushed}"
    return MultiArch(ref, found.group(0), images)
