"""layerbuild's registry client against the real tools: images docker and skopeo push are pulled
as they are, images layerbuild pushes are what docker, skopeo and umoci read; layers in every
compression a registry holds; multi-platform indexes; RepoDigests; logins and credentials as
Docker keeps them. Every step runs the real tool on the test registries (scripts/registries)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from registrytools import (
    OCI_LAYER,
    MultiArch,
    Registries,
    docker_push_busybox,
    push_layout,
    run,
    skopeo_push_busybox,
    unique_rootfs_tar,
    write_oci_layout,
)
from treeutil import need_root, need_tool

from layerbuild.image import host_platform

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("client_config")]

Lb = Callable[..., subprocess.CompletedProcess[str]]
HOST = host_platform()[0]
OTHER = "arm64" if HOST != "arm64" else "amd64"
BUILDFILE = """\
FROM {base}
RUN echo "made by RUN" > /made && [ "$(readlink /bin/ls)" = busybox ]
COPY note.txt /srv/note.txt
CMD ["cat", "/made", "/srv/note.txt"]
"""
PRINTED = "made by RUN\ncopied by COPY\n"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def write_context(tmp_path: Path, base: str, name: str = "ctx") -> Path:
    """A build context whose Buildfile RUNs and COPYs on `base`: its image prints PRINTED."""
    context = tmp_path / name
    context.mkdir()
    (context / "Buildfile").write_text(BUILDFILE.format(base=base))
    (context / "note.txt").write_text("copied by COPY\n")
    return context


def inspect(lb: Lb, ref: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(lb("inspect", ref).stdout)[0]
    return data


def pushed_digest(out: str) -> str:
    """The digest `layerbuild push` printed (`TAG: digest: sha256:… size: N`, as docker)."""
    last = out.strip().splitlines()[-1].split()
    assert last[1:2] == ["digest:"], out
    return last[2]


def docker_repo_digests(docker: Any, ref: str) -> list[str]:
    return sorted(json.loads(docker("image", "inspect", ref).stdout)[0]["RepoDigests"])


def skopeo_json(*args: str) -> Any:
    return json.loads(run("skopeo", "inspect", "--tls-verify=false", *args).stdout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed (exit 1, nothing else on stderr)."""
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerbuild: error: "), proc.stderr
    return lines[0].removeprefix("layerbuild: error: ")


def layout_manifest(layout: Path, index: int = 0) -> tuple[str, dict[str, Any]]:
    """The digest and parsed manifest of an OCI layout's image."""
    digest = json.loads((layout / "index.json").read_text())["manifests"][index]["digest"]
    return digest, json.loads(blob(layout, digest))


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


# --- docker and skopeo push, layerbuild pulls; layerbuild pushes, they read ------------------

def test_docker_pushes_layerbuild_pulls_builds_and_pushes_docker_runs(
        lb: Lb, docker: Any, registries: Registries, busybox_tar: Path, repository: str,
        tmp_path: Path) -> None:
    need_root()
    base = f"{registries.open}/{repository}/busybox:v1"
    base_digest = docker_push_busybox(docker, busybox_tar, base)
    pulled = lb("pull", base).stdout
    assert f"Digest: {base_digest}" in pulled
    assert f"Status: Downloaded newer image for {base}" in pulled
    assert inspect(lb, base)["RepoDigests"] == docker_repo_digests(docker, base) == [
        f"{registries.open}/{repository}/busybox@{base_digest}"]

    app = f"{registries.open}/{repository}/app:v1"
    lb("build", "-t", app, str(write_context(tmp_path, base)))
    pushed = lb("push", app).stdout
    app_digest = pushed_digest(pushed)
    assert f"Mounted from {repository}/busybox" in pushed  # the base layer is not sent again

    docker.created.append(app)
    assert f"Digest: {app_digest}" in docker("pull", app).stdout
    assert docker("run", "--rm", "--network", "none", app).stdout == PRINTED
    assert inspect(lb, app)["RepoDigests"] == docker_repo_digests(docker, app) == [
        f"{registries.open}/{repository}/app@{app_digest}"]


def test_skopeo_pushes_and_layerbuild_pulls_the_same_config_and_diff_ids(
        lb: Lb, registries: Registries, busybox_tar: Path, repository: str,
        tmp_path: Path) -> None:
    need_root()
    need_tool("skopeo")
    ref = f"{registries.open}/{repository}:v1"
    skopeo_push_busybox(busybox_tar, tmp_path, ref)
    digest, manifest = layout_manifest(tmp_path / "layout")
    config = json.loads(blob(tmp_path / "layout", manifest["config"]["digest"]))

    assert f"Digest: {digest}" in lb("pull", ref).stdout
    info = inspect(lb, ref)
    assert info["Id"] == manifest["config"]["digest"]  # the config's very bytes
    assert info["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    assert info["RepoDigests"] == [f"{registries.open}/{repository}@{digest}"]
    # and they run: a build with a RUN on it
    lb("build", "-t", "on-skopeo", str(write_context(tmp_path, ref)))


def test_layerbuild_pushes_and_skopeo_copies_inspects_and_umoci_unpacks(
        lb: Lb, base: str, registries: Registries, repository: str, tmp_path: Path) -> None:
    need_tool("skopeo", "umoci")
    ref = f"{registries.open}/{repository}:v1"
    lb("build", "-t", ref, str(write_context(tmp_path, base)))
    digest = pushed_digest(lb("push", ref).stdout)
    info = inspect(lb, ref)

    inspected = skopeo_json(f"docker://{ref}")
    assert inspected["Digest"] == digest
    assert inspected["Architecture"] == HOST and inspected["Os"] == "linux"
    assert len(inspected["Layers"]) == len(info["RootFS"]["Layers"]) == 3
    config = skopeo_json("--config", f"docker://{ref}")
    assert config["rootfs"]["diff_ids"] == info["RootFS"]["Layers"]
    assert config["config"]["Cmd"] == ["cat", "/made", "/srv/note.txt"]

    layout = tmp_path / "oci"
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1")
    assert layout_manifest(layout)[0] == digest  # copied as it is
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{layout}:v1", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "made").read_text() == "made by RUN\n"
    assert (rootfs / "srv/note.txt").read_text() == "copied by COPY\n"
    assert os.readlink(rootfs / "bin/ls") == "busybox"
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["args"] == ["cat", "/made", "/srv/note.txt"]


def test_a_zstd_push_holds_zstd_layers_that_skopeo_copies(
        lb: Lb, base: str, registries: Registries, repository: str, tmp_path: Path) -> None:
    # Debian's Docker 20.10 cannot pull zstd layers (it fails on them with "archive/tar:
    # invalid tar header"; Docker 23 reads them), so docker is not asked here.
    need_tool("skopeo")
    ref = f"{registries.open}/{repository}:zstd"
    lb("build", "-t", ref, str(write_context(tmp_path, base)))
    digest = pushed_digest(lb("push", "--compress", "zstd", ref).stdout)

    layout = tmp_path / "oci"
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:zstd")
    copied, manifest = layout_manifest(layout)
    assert copied == digest
    assert [layer["mediaType"] for layer in manifest["layers"]] == [f"{OCI_LAYER}+zstd"] * 3
    for layer in manifest["layers"]:
        assert blob(layout, layer["digest"])[:4] == ZSTD_MAGIC

    other = tmp_path / "other-store"
    run_cli(other, "pull", ref)
    back = json.loads(run_cli(other, "inspect", ref).stdout)[0]
    assert back["Id"] == inspect(lb, ref)["Id"]
    assert back["RepoDigests"] == [f"{registries.open}/{repository}@{digest}"]


MEDIA = {"gzip": f"{OCI_LAYER}+gzip", "zstd": f"{OCI_LAYER}+zstd", "uncompressed": OCI_LAYER}


@pytest.mark.parametrize("compression", sorted(MEDIA))
def test_layers_as_registries_hold_them_are_pulled_and_run(
        compression: str, lb: Lb, docker: Any, registries: Registries, busybox_tar: Path,
        repository: str, tmp_path: Path) -> None:
    need_root()
    need_tool("skopeo")
    ref = f"{registries.open}/{repository}:v1"
    rootfs = unique_rootfs_tar(busybox_tar, tmp_path / "rootfs.tar", repository)
    layout = tmp_path / "layout"
    if compression == "uncompressed":  # docker and skopeo would compress it: plain requests
        write_oci_layout(rootfs, layout, compressed=False)
        push_layout(layout, registries.open, repository, "v1")
    else:
        write_oci_layout(rootfs, layout)
        recompress = ["--dest-compress-format", "zstd"] if compression == "zstd" else []
        run("skopeo", "copy", "--dest-tls-verify=false", *recompress, f"oci:{layout}:latest",
            f"docker://{ref}")
    held = skopeo_json("--raw", f"docker://{ref}")
    assert [layer["mediaType"] for layer in held["layers"]] == [MEDIA[compression]]

    lb("pull", ref)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text(
        f'FROM {ref}\nRUN cp /etc/lbtest-marker /seen\nCMD ["cat", "/seen"]\n')
    name = docker.name(f"on-{compression}")
    lb("build", "-t", name, str(context))
    archive = tmp_path / "saved.tar"
    lb("save", name, "-o", str(archive))
    docker("load", "-i", str(archive))
    assert docker("run", "--rm", "--network", "none", name).stdout == f"{repository}\n"


# --- a multi-platform index ------------------------------------------------------------------

def test_pull_takes_the_host_entry_of_an_index_or_the_asked_platform(
        lb: Lb, docker: Any, multi_arch: MultiArch) -> None:
    need_root()
    ref = multi_arch.ref
    name = ref.rsplit(":", 1)[0]
    assert f"Digest: {multi_arch.digest}" in lb("pull", ref).stdout
    info = inspect(lb, ref)
    assert info["Architecture"] == HOST
    docker.created.append(ref)
    assert f"Digest: {multi_arch.digest}" in docker("pull", ref).stdout
    assert info["RepoDigests"] == docker_repo_digests(docker, ref) == [
        f"{name}@{multi_arch.digest}"]
    assert info["Id"] == json.loads(docker("image", "inspect", ref).stdout)[0]["Id"]

    lb("pull", "--platform", f"linux/{OTHER}", ref)
    other = inspect(lb, ref)
    assert other["Architecture"] == OTHER and other["Id"] != info["Id"]
    # the same image by its own manifest's digest (not the index's): pulled, with a notice
    by_image = f"{name}@{multi_arch.images[OTHER]}"
    direct = lb("pull", by_image)
    assert f"the image is for linux/{OTHER}, this machine is linux/{HOST}" in direct.stdout
    assert inspect(lb, by_image)["Id"] == other["Id"]

    refused = lb("pull", "--platform", "linux/s390x", ref, check=False)
    offered = ", ".join(sorted(f"linux/{arch}" for arch in multi_arch.images))
    assert one_error_line(refused) == (f"{ref}: no image for linux/s390x "
                                       f"(the image has: {offered})")


# --- RepoDigests -------------------------------------------------------------------------

def test_repo_digests_name_what_was_pulled_and_pushed_until_the_tag_goes(
        lb: Lb, registries: Registries, busybox_tar: Path, repository: str,
        tmp_path: Path) -> None:
    need_root()
    need_tool("skopeo")
    ref = f"{registries.open}/{repository}:v1"
    skopeo_push_busybox(busybox_tar, tmp_path, ref)
    lb("pull", ref)
    digest = skopeo_json(f"docker://{ref}")["Digest"]
    pinned = f"{registries.open}/{repository}@{digest}"
    assert inspect(lb, ref)["RepoDigests"] == [pinned]

    # FROM name@sha256:… is the pulled image, from the store
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text(f"FROM {pinned}\nLABEL from=digest\n")
    lb("build", "--pull=never", "-t", "by-digest", str(context))
    built = inspect(lb, "by-digest")
    assert built["RootFS"]["Layers"] == inspect(lb, pinned)["RootFS"]["Layers"]

    # a push adds the pushed name, with the digest skopeo reports for it
    target = f"{registries.open}/{repository}/copy:v2"
    pushed = pushed_digest(lb("push", "by-digest", target).stdout)
    assert skopeo_json(f"docker://{target}")["Digest"] == pushed
    assert f"{registries.open}/{repository}/copy@{pushed}" in inspect(lb, "by-digest")[
        "RepoDigests"]

    # removing the tag removes the digest name with it
    removed = lb("rmi", ref).stdout
    assert f"Untagged: {ref}\nUntagged: {pinned}\nDeleted: " in removed
    assert lb("inspect", pinned, check=False).returncode == 1

    # and a pull by digest names the image by it alone
    out = lb("pull", pinned).stdout
    assert f"Digest: {digest}" in out
    info = inspect(lb, pinned)
    assert info["RepoTags"] == [] and info["RepoDigests"] == [pinned]
    lb("build", "--pull=never", "-t", "by-digest", str(context))


# --- logins and credentials ----------------------------------------------------------------

def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_login_refuses_a_wrong_password_and_keeps_the_right_one(
        kind: str, lb: Lb, base: str, registries: Registries, repository: str,
        client_config: Path, tmp_path: Path) -> None:
    server = getattr(registries, kind)
    config = client_config / "config.json"
    before = json.dumps({"auths": {"elsewhere.example": {"auth": _b64("someone:else")}},
                         "psFormat": "table"}, indent="\t") + "\n"
    config.write_text(before)
    login = ("login", server, "-u", registries.user, "--password-stdin")

    wrong = lb(*login, input_="wrong\n", check=False)
    assert one_error_line(wrong).startswith(f"login failed: {server}: unauthorized")
    assert wrong.stdout == "" and config.read_text() == before

    done = lb(*login, input_=registries.password + "\n")
    assert done.stdout == f"credentials kept in {config}\nLogin Succeeded\n"
    kept = json.loads(config.read_text())
    assert kept["psFormat"] == "table" and "elsewhere.example" in kept["auths"]
    assert kept["auths"][server] == {"auth": _b64(f"{registries.user}:{registries.password}")}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    ref = f"{server}/{repository}:v1"
    digest = pushed_digest(lb("push", base, ref).stdout)
    assert f"Digest: {digest}" in run_cli(tmp_path / "second", "pull", ref).stdout

    assert lb("logout", server).stdout == f"Removing login credentials for {server}\n"
    assert server not in json.loads(config.read_text())["auths"]
    refused = run_cli(tmp_path / "third", "pull", ref, check=False)
    assert one_error_line(refused) == (f"{ref}: authentication required; log in with "
                                       f"`layerbuild login {server}`")


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_layerbuild_uses_the_credentials_docker_login_keeps(
        kind: str, lb: Lb, base: str, docker: Any, registries: Registries, repository: str,
        client_config: Path, tmp_path: Path) -> None:
    server = getattr(registries, kind)
    run("docker", "login", server, "-u", registries.user, "--password-stdin",
        input_=registries.password + "\n")
    assert server in json.loads((client_config / "config.json").read_text())["auths"]
    ref = f"{server}/{repository}:v1"
    digest = pushed_digest(lb("push", base, ref).stdout)
    assert f"Digest: {digest}" in run_cli(tmp_path / "second", "pull", ref).stdout
    docker.created.append(ref)
    assert f"Digest: {digest}" in docker("pull", ref).stdout
    ran = docker("run", "--rm", "--network", "none", ref, "/bin/busybox", "echo", "pushed")
    assert ran.stdout == "pushed\n"


HELPER = """\
#!/bin/sh
# A credential helper as Docker's are (store/get/erase/list), keeping each server's entry in a
# file of its own under one directory.
set -eu
dir='{store}'
printf '%s\\n' "$1" >>"$dir/calls"
case "$1" in
  store)
    input=$(cat)
    server=$(printf '%s' "$input" | sed -n 's/.*"ServerURL": *"\\([^"]*\\)".*/\\1/p')
    printf '%s' "$input" >"$dir/$(printf '%s' "$server" | tr -c 'A-Za-z0-9.' _)"
    ;;
  get|erase)
    read -r server || true
    file="$dir/$(printf '%s' "$server" | tr -c 'A-Za-z0-9.' _)"
    [ -f "$file" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
    if [ "$1" = get ]; then cat "$file"; else rm "$file"; fi
    ;;
  list) echo '{{}}' ;;
  *) echo "unknown action $1" >&2; exit 1 ;;
esac
"""


def test_a_credential_helper_keeps_what_login_gives_it(
        lb: Lb, base: str, docker: Any, registries: Registries, repository: str,
        client_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helpers, kept = tmp_path / "helpers", tmp_path / "helper-store"
    helpers.mkdir()
    kept.mkdir()
    helper = helpers / "docker-credential-lbtest"
    helper.write_text(HELPER.format(store=kept))
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helpers}:{os.environ['PATH']}")
    config = client_config / "config.json"
    config.write_text('{"credsStore": "lbtest"}\n')
    server = registries.token

    done = lb("login", server, "-u", registries.user, "--password-stdin",
              input_=registries.password + "\n")
    assert done.stdout == "credentials kept in docker-credential-lbtest\nLogin Succeeded\n"
    assert config.read_text() == '{"credsStore": "lbtest"}\n'  # no secret in the file
    entry = json.loads((kept / server.replace(":", "_")).read_text())
    assert entry == {"ServerURL": server, "Username": registries.user,
                     "Secret": registries.password}

    ref = f"{server}/{repository}:v1"
    digest = pushed_digest(lb("push", base, ref).stdout)
    assert f"Digest: {digest}" in run_cli(tmp_path / "second", "pull", ref).stdout
    docker.created.append(ref)  # Docker's CLI takes the credentials from the same helper
    assert f"Digest: {digest}" in docker("pull", ref).stdout

    assert lb("logout", server).stdout == f"Removing login credentials for {server}\n"
    assert not (kept / server.replace(":", "_")).exists()
    calls = (kept / "calls").read_text().split()
    assert calls[0] == "store" and "get" in calls and calls[-1] == "erase"
    refused = run_cli(tmp_path / "third", "pull", ref, check=False)
    assert one_error_line(refused) == (f"{ref}: authentication required; log in with "
                                       f"`layerbuild login {server}`")


def test_anonymous_pulls_get_the_public_repositories_of_the_token_registry(
        lb: Lb, registries: Registries, busybox_tar: Path, repository: str,
        tmp_path: Path) -> None:
    need_root()
    need_tool("skopeo")
    public = f"{registries.token}/public/{repository.split('/', 1)[1]}:v1"
    private = f"{registries.token}/{repository}:v1"
    for n, ref in enumerate((public, private)):
        skopeo_push_busybox(busybox_tar, tmp_path / str(n), ref, registries.creds)
    assert f"Status: Downloaded newer image for {public}" in lb("pull", public).stdout
    refused = lb("pull", private, check=False)
    assert one_error_line(refused) == (f"{private}: authentication required; log in with "
                                       f"`layerbuild login {registries.token}`")
    assert registries.password not in refused.stderr + refused.stdout
