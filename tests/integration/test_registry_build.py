"""Builds and registries, with the real tools: `build --push` and `-o type=registry` to the token
registry after `layerbuild login`, then docker pulls and runs the image; bases of another
platform from a multi-platform index; `FROM busybox` pulled through a `docker.io` mirror; and
README's "Try it" run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from registrytools import (
    MultiArch,
    Registries,
    run,
    skopeo_push_busybox,
)
from treeutil import need_root, need_tool

from layerbuild.image import host_platform

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("client_config")]

Lb = Callable[..., subprocess.CompletedProcess[str]]
REPO = Path(__file__).resolve().parents[2]
HOST = host_platform()[0]
OTHER = "arm64" if HOST != "arm64" else "amd64"
QEMU = {"amd64": "x86_64", "arm64": "aarch64"}
GREETING = f"Hello from layerbuild! (running as uid 0 on {os.uname().machine})"
TRANSFER_LINE = re.compile(r"[0-9a-f]{12}: (Preparing|Pushed|Layer already exists|"
                           r"Mounted from \S+)")


def inspect(lb: Lb, ref: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(lb("inspect", ref).stdout)[0]
    return data


# --- build --push and -o type=registry ------------------------------------------------------

def test_build_pushes_to_the_token_registry_and_docker_runs_the_image(
        lb: Lb, base: str, docker: Any, registries: Registries, repository: str,
        tmp_path: Path) -> None:
    server = registries.token
    lb("login", server, "-u", registries.user, "--password-stdin",
       input_=registries.password + "\n")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text(
        f'FROM {base}\nRUN echo "made by RUN" > /made\nCOPY note.txt /note.txt\n'
        'CMD ["cat", "/made", "/note.txt"]\n')
    (context / "note.txt").write_text("copied by COPY\n")
    pushed, output = f"{server}/{repository}/pushed:v1", f"{server}/{repository}/output:v1"

    first = lb("build", "--push", "-t", pushed, str(context))
    second = lb("build", "-o", f"type=registry,name={output}", str(context))
    for built in (first, second):  # every blob's line whole, though several threads report
        lines = [line for line in built.stderr.splitlines() if line[:12].isalnum()
                 and line[12:14] == ": "]
        assert lines and all(TRANSFER_LINE.fullmatch(line) for line in lines), built.stderr
    assert "Pushed" in first.stderr
    assert "Pushed" not in second.stderr  # the same image: its blobs are mounted
    assert f"Mounted from {repository}/pushed" in second.stderr
    info = inspect(lb, output)
    assert info["Id"] == inspect(lb, pushed)["Id"]
    digests = info["RepoDigests"]
    assert [d.split("@")[0] for d in digests] == [ref.split(":v1")[0] for ref in (output, pushed)]
    assert len({d.split("@")[1] for d in digests}) == 1

    run("docker", "login", server, "-u", registries.user, "--password-stdin",
        input_=registries.password + "\n")
    for ref in (pushed, output):
        docker.created.append(ref)
        docker("pull", ref)
        ran = docker("run", "--rm", "--network", "none", ref)
        assert ran.stdout == "made by RUN\ncopied by COPY\n"
        repo_digests = json.loads(docker("image", "inspect", ref).stdout)[0]["RepoDigests"]
        assert set(repo_digests) <= set(digests) and repo_digests


# --- bases of another platform ---------------------------------------------------------------

def test_a_build_from_another_platform_copies_and_needs_an_emulator_to_run(
        lb: Lb, multi_arch: MultiArch, tmp_path: Path) -> None:
    need_root()
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "f").write_text("copied\n")
    buildfile = context / "Buildfile"
    buildfile.write_text(f"FROM --platform=linux/{OTHER} {multi_arch.ref}\nCOPY f /f\n")
    lb("build", "-t", "copied", str(context))
    copied = inspect(lb, "copied")
    assert copied["Architecture"] == OTHER
    assert lb("inspect", multi_arch.ref, check=False).returncode == 1  # the base is untagged

    buildfile.write_text(f"FROM --platform=linux/{OTHER} {multi_arch.ref}\nRUN cat /etc/motd\n")
    handler = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{QEMU[OTHER]}"
    try:
        emulated = handler.read_text().startswith("enabled")
    except OSError:
        emulated = False
    built = lb("build", "-t", "ran", str(context), check=False)
    if emulated:
        assert built.returncode == 0, built.stderr
        assert inspect(lb, "ran")["Architecture"] == OTHER
        lb("rmi", "ran")
    else:
        assert built.returncode == 1
        assert built.stderr.strip().splitlines()[-1] == (
            f"layerbuild: error: {buildfile}:2: RUN cat /etc/motd: the image is for "
            f"linux/{OTHER} and this machine is {HOST}, and no emulator for {OTHER} is "
            "registered (install qemu-user-static and binfmt-support)")
    lb("rmi", "copied")  # an image of another platform: not for the engine's checks


# --- a docker.io mirror, and README's first commands ----------------------------------------

def fill_hub_mirror(registries: Registries, busybox_tar: Path, work: Path) -> tuple[Path, str]:
    """busybox pushed to the open registry as `library/busybox:latest`, and a registries.toml
    that makes that registry docker.io's mirror; returns the config and the digest."""
    need_tool("skopeo")
    work.mkdir()
    skopeo_push_busybox(busybox_tar, work, f"{registries.open}/library/busybox:latest")
    config = work / "registries.toml"
    config.write_text(f'[registry."docker.io"]\nmirrors = ["http://{registries.open}"]\n')
    digest = json.loads((work / "layout" / "index.json").read_text())["manifests"][0]["digest"]
    return config, str(digest)


def test_a_build_pulls_busybox_through_the_docker_io_mirror(
        lb: Lb, docker: Any, registries: Registries, busybox_tar: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    need_root()
    config, digest = fill_hub_mirror(registries, busybox_tar, tmp_path / "mirror")
    monkeypatch.setenv("LAYERBUILD_REGISTRIES_CONFIG", str(config))
    name = docker.name("hello")
    lb("build", "-t", name, str(REPO / "examples" / "hello"))
    assert inspect(lb, "busybox:latest")["RepoDigests"] == [f"busybox@{digest}"]
    archive = tmp_path / "hello.tar"
    lb("save", name, "-o", str(archive))
    docker("load", "-i", str(archive))
    assert docker("run", "--rm", "--network", "none", name).stdout == GREETING + "\n"


def first_sh_block(markdown: str, section: str) -> str:
    """The first ```sh block after the heading `section`."""
    after = markdown.split(f"\n{section}\n", 1)[1]
    found = re.search(r"^```sh\n(.*?)^```$", after, re.MULTILINE | re.DOTALL)
    assert found, f"no sh block in {section}"
    return found.group(1)


def copy_checkout(dest: Path) -> Path:
    """The files git tracks in this checkout, copied to `dest` (as they are in the tree)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest


def test_readme_try_it_runs_as_written(
        docker: Any, registries: Registries, busybox_tar: Path, tmp_path: Path) -> None:
    """README's first commands, from a copy of the checkout (which stays clean), with the venv
    in a temporary dir, docker.io's mirror set in the environment, and a store of the test's
    own (LAYERBUILD_ROOT) instead of the machine's. `python3` is the system's own (Debian
    12's 3.11.2, externally managed), as on a new user's machine; the apt-get line is checked
    (update before install, every package installed: scripts/setup installs them) rather than
    run, so that the test never waits on the apt lock of another run."""
    need_root()
    need_tool("git")
    config, _digest = fill_hub_mirror(registries, busybox_tar, tmp_path / "mirror")
    block = first_sh_block((REPO / "README.md").read_text(), "## Try it")
    assert "~/.local/layerbuild" in block and "layerbuild build -t hello examples/hello" in block
    apt = re.search(r"^apt-get update && apt-get install -y ([\w. -]+)\n", block, re.M)
    assert apt, "the block installs its Debian packages, apt-get update first"
    venv = tmp_path / "venv"
    script = block.replace(apt.group(0), f"dpkg -s {apt.group(1)} >/dev/null\n")
    script = script.replace("~/.local/layerbuild", str(venv))
    checkout = copy_checkout(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LAYERBUILD_ROOT", "VIRTUAL_ENV")}
    if Path("/usr/bin/python3").exists():
        env["PATH"] = f"/usr/bin:{env['PATH']}"
    env.update(LAYERBUILD_REGISTRIES_CONFIG=str(config), LAYERBUILD_ROOT=str(tmp_path / "store"))
    docker.created.append("hello:latest")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert done.stdout.splitlines()[-1] == GREETING
    assert "Loaded image: hello:latest" in done.stdout
    assert (venv / "bin" / "layerbuild").exists()
    assert (checkout / "hello.tar").exists() and not (REPO / "hello.tar").exists()
