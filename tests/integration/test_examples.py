"""Buildfile.example and every example under examples/: built as their READMEs say, each image
checked with `validate_archive` on its saved archive, loaded into Docker and run.

The busybox base is made by running the README's own commands; the Debian base comes from
debootstrap once per session (about a minute), never from a cache kept between runs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from treeutil import need, need_root, need_tool

from layerbuild.archive.sources import TarSource
from layerbuild.image import Image
from layerbuild.validate import validate_archive

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BUILT_HERE = {"hello", "multistage", "templated", "heredocs", "debian-apt", "showcase"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def _readme_blocks() -> list[str]:
    """The shell blocks of the README's "Build the example" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Build the example\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _shell_env(tmp_path: Path, store_root: Path) -> dict[str, str]:
    """An environment whose `layerbuild` is this checkout's CLI on the test's store."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "layerbuild"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m layerbuild.cli "$@"\n')
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "LAYERBUILD_ROOT": str(store_root), "PYTHONPATH": str(REPO)}


@pytest.fixture
def busybox_base(tmp_path: Path, store_root: Path) -> str:
    """`busybox:latest` in the test's store, made by the README's commands as written."""
    need_root()
    need_tool("tar")
    need(Path("/bin/busybox").exists(), "needs /bin/busybox (Debian package busybox-static)")
    work = tmp_path / "readme"
    work.mkdir()
    subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_blocks()[0]], cwd=work,
                   env=_shell_env(tmp_path, store_root), check=True, timeout=120)
    return "busybox:latest"


def _debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    apt = Path("/etc/apt")
    files = sorted((apt / "sources.list.d").glob("*.sources")) if apt.exists() else []
    for path in files:
        for paragraph in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", paragraph, re.M))
            if "bookworm" in fields.get("Suites", "").split() and "URIs" in fields:
                return fields["URIs"].split()[0]
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) >= 3 and words[0] == "deb" and words[-2] == "bookworm":
                    return words[-3]
    return DEFAULT_MIRROR


@pytest.fixture(scope="session")
def debian_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal bookworm root filesystem from debootstrap, as examples/debian-apt says."""
    need_root()
    need_tool("debootstrap", "chroot", "tar")
    rootfs = tmp_path_factory.mktemp("debian") / "rootfs"
    proc = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs),
                           _debian_mirror()], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"debootstrap failed:\n{proc.stdout[-3000:]}{proc.stderr}"
    subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=True, timeout=60)
    return rootfs


class Checked:
    """A built image: its saved archive validated, loaded into Docker."""

    def __init__(self, name: str, image: Image, config: dict) -> None:
        self.name = name
        self.image = image
        self.config = config


def _ship(lb, docker, tmp_path: Path, name: str) -> Checked:
    archive = tmp_path / f"{name.replace('/', '_').replace(':', '_')}.tar"
    lb("save", name, "-o", str(archive))
    images = validate_archive(TarSource(archive))
    assert len(images) == 1
    docker("load", "-i", str(archive))
    archive.unlink()
    config = json.loads(lb("inspect", name).stdout)[0]["Config"]
    return Checked(name, images[0], config)


def _run(docker, name: str, *args: str, entrypoint: str | None = None) -> str:
    extra = ["--entrypoint", entrypoint] if entrypoint is not None else []
    return docker("run", "--rm", "--network", "none", *extra, name, *args).stdout


@pytest.fixture
def container(docker) -> Iterator[list[str]]:
    """Detached containers started by the test, removed afterwards."""
    started: list[str] = []
    yield started
    for cid in started:
        docker("rm", "-f", cid, check=False)


def _healthy(docker, container: list[str], name: str) -> str:
    """Start the image's default command detached; wait until its HEALTHCHECK passes.

    The check's command is the image's; the interval is shortened (Docker engines before 25
    ignore HEALTHCHECK --start-interval, so the first check would come after --interval).
    """
    cid = docker("run", "-d", "--network", "none", "--health-interval", "1s", name
                 ).stdout.strip()
    container.append(cid)
    status = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", cid).stdout.strip()
        if status in ("healthy", "unhealthy"):
            break
        time.sleep(0.5)
    assert status == "healthy", docker("logs", cid).stdout + docker("inspect", cid).stdout
    return cid


def test_every_example_is_built_here() -> None:
    folders = {p.name for p in EXAMPLES.iterdir() if p.is_dir()}
    assert folders - {"import-busybox"} == BUILT_HERE
    for name in folders:  # as the top-level README says: each has a README
        assert (EXAMPLES / name / "README.md").is_file(), name
    for name in BUILT_HERE - {"showcase"}:
        folder = EXAMPLES / name
        assert (folder / "Buildfile").is_file() or (folder / "Buildfile.j2").is_file(), name


def test_buildfile_example(lb, docker, busybox_base: str, container: list[str],
                           tmp_path: Path) -> None:
    name = docker.name("showcase")
    lb("build", "-f", str(REPO / "Buildfile.example"), "-t", name,
       "--build-arg", "VERSION=1.2.3", str(EXAMPLES / "showcase"))
    got = _ship(lb, docker, tmp_path, name)
    config = got.config
    assert config["User"] == "app"
    assert config["WorkingDir"] == "/srv/app"
    assert config["Entrypoint"] == ["/srv/app/entrypoint.sh"] and config["Cmd"] == ["serve"]
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Labels"]["org.opencontainers.image.version"] == "1.2.3"
    assert "APP_VERSION=1.2.3" in config["Env"]
    assert config["Healthcheck"]["Test"][0] == "CMD-SHELL"

    assert _run(docker, name, "info") == (
        "version: 1.2.3\nuser: app (1000:1000)\nworkdir: /srv/app\n"
        "page: <h1>layerbuild showcase 1.2.3</h1>\nchecksums: ok\n")
    owners = _run(docker, name, "stat", "-c", "%u:%g %a %n", "entrypoint.sh", "data", "www")
    assert owners.splitlines() == ["1000:1000 755 entrypoint.sh", "1000:1000 755 data",
                                   "0:0 755 www"]
    # Only the builder's output reached the image, not its sources.
    assert _run(docker, name, "sh", "-c", "ls /src 2>&1 || echo absent").endswith("absent\n")

    # As the README runs it, with the image's own HEALTHCHECK timing, healthy as soon as it
    # says (at the check's interval on this Docker; Docker 25+ checks sooner, every
    # --start-interval during the start period).
    said = re.search(r"State\.Health\.Status.*# healthy (\d+) s after the start",
                     (REPO / "README.md").read_text())
    assert said, "the README says when the container is healthy"
    assert config["Healthcheck"]["Interval"] == int(said.group(1)) * 1_000_000_000
    cid = docker("run", "-d", "--network", "none", name).stdout.strip()
    container.append(cid)
    started = time.monotonic()
    status = ""
    while time.monotonic() - started < int(said.group(1)) + 3 and status != "healthy":
        time.sleep(0.2)
        status = docker("inspect", "-f", "{{.State.Health.Status}}", cid).stdout.strip()
    assert status == "healthy", docker("logs", cid).stdout + docker("inspect", cid).stdout
    page = docker("exec", cid, "wget", "-q", "-O-", "http://127.0.0.1:8080/").stdout
    assert "<h1>layerbuild showcase 1.2.3</h1>" in page
    assert "showcase 1.2.3 listening on :8080" in docker("logs", cid).stdout


def test_import_busybox(docker, tmp_path: Path, store_root: Path) -> None:
    """examples/import-busybox/run.sh as its README runs it, with a name given."""
    need_root()
    need(Path("/bin/busybox").exists(), "needs /bin/busybox (Debian package busybox-static)")
    name = docker.name("import-busybox")
    env = _shell_env(tmp_path, store_root)
    done = subprocess.run([str(EXAMPLES / "import-busybox" / "run.sh"), name], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-2:] == [f"Loaded image: {name}",
                                            "hello from an imported rootfs"]
    readme = (EXAMPLES / "import-busybox" / "README.md").read_text()
    assert "Loaded image: example/busybox:1\nhello from an imported rootfs\n" in readme
    images = validate_archive(TarSource(tmp_path / "busybox-example.tar"))
    assert len(images) == 1 and len(images[0].config.diff_ids) == 1


def test_hello(lb, docker, busybox_base: str, tmp_path: Path) -> None:
    name = docker.name("hello")
    lb("build", "-t", name, str(EXAMPLES / "hello"))
    _ship(lb, docker, tmp_path, name)
    assert _run(docker, name) == (
        f"Hello from layerbuild! (running as uid 0 on {platform.machine()})\n")


def test_multistage(lb, docker, busybox_base: str, tmp_path: Path) -> None:
    tested = lb("build", "--target", "test", "--progress", "plain", str(EXAMPLES / "multistage"))
    assert "summary ok" in tested.stdout + tested.stderr

    name = docker.name("multistage")
    built = lb("build", "-t", name, "--progress", "plain", str(EXAMPLES / "multistage"))
    assert "check.sh" not in built.stderr  # the test stage is not part of the default build
    got = _ship(lb, docker, tmp_path, name)
    assert len(got.image.config.diff_ids) == 2  # FROM scratch: busybox, then the report
    lines = _run(docker, name).splitlines()
    assert re.fullmatch(r"Temperature report \(built \d{4}-\d\d-\d\d\)", lines[0])
    assert lines[1:] == ["berlin   min   1.5  max  24.5  mean  11.5",
                         "lisbon   min  11.5  max  28.0  mean  19.2"]
    def ls(path: str) -> list[str]:
        return _run(docker, name, "ls", path, entrypoint="/bin/busybox").split()

    assert (ls("/bin"), ls("/usr/bin")) == (["busybox"], ["report"])
    assert ls("/usr/share/report") == ["built-at", "summary.txt"]


@pytest.mark.parametrize("flavour", ["small", "full"])
def test_templated(lb, docker, busybox_base: str, container: list[str], tmp_path: Path,
                   flavour: str) -> None:
    context = EXAMPLES / "templated"
    name = docker.name(f"templated-{flavour}")
    how = (["--var", "flavour=small"] if flavour == "small"
           else ["--var-file", str(context / "full.vars")])
    lb("build", "-t", name, *how, str(context))
    got = _ship(lb, docker, tmp_path, name)
    assert got.config["Labels"]["example.flavour"] == flavour
    applets = _run(docker, name, "ls", "/bin").split()
    if flavour == "small":
        assert applets == ["busybox", "cat", "echo", "ls", "sh"]
        assert _run(docker, name) == ("Welcome to a templated image.\nflavour: small\n"
                                      "applets: busybox cat echo ls sh\n")
        assert "Healthcheck" not in got.config and "ExposedPorts" not in got.config
    else:
        assert applets == ["busybox", "cat", "echo", "gzip", "httpd", "ls", "sh", "tar", "wget"]
        assert got.config["ExposedPorts"] == {"8080/tcp": {}}
        cid = _healthy(docker, container, name)
        page = docker("exec", cid, "wget", "-q", "-O-", "http://127.0.0.1:8080/").stdout
        assert "The full flavour serves this page" in page


def test_templated_needs_a_flavour(lb, busybox_base: str) -> None:
    proc = lb("build", str(EXAMPLES / "templated"), check=False)
    assert proc.returncode != 0
    assert "undefined template variable 'flavour'" in proc.stderr


def test_heredocs(lb, docker, busybox_base: str, tmp_path: Path) -> None:
    name = docker.name("heredocs")
    lb("build", "-t", name, "--build-arg", "NAME=layerbuild", str(EXAMPLES / "heredocs"))
    _ship(lb, docker, tmp_path, name)
    out = _run(docker, name, "readers")
    assert re.fullmatch(r"Hello, readers! \(layerbuild, built on \d{4}-\d\d-\d\d\)\n"
                        r"squares: 1 4 9 16 25\n", out), out
    files = _run(docker, name, "/opt/app/etc/app.conf", "/opt/app/etc/README.txt",
                 "/opt/app/bin/greet", entrypoint="cat")
    assert files.startswith("NAME=layerbuild\nGREETING=Hello\n"
                            "This image was built from examples/heredocs/Buildfile.\n")
    assert '. "$APP_HOME/etc/app.conf"' in files  # the quoted heredoc kept its $VARS


def test_debian_apt(lb, docker, debian_rootfs: Path, tmp_path: Path, store_root: Path) -> None:
    # As the example's README says: tar -C DIR -c . | layerbuild import - debian:bookworm
    subprocess.run(f'tar -C "{debian_rootfs}" -c . | layerbuild import - debian:bookworm',
                   shell=True, check=True, env=_shell_env(tmp_path, store_root), timeout=300,
                   stdout=subprocess.DEVNULL)
    name = docker.name("debian-apt")
    built = lb("build", "-t", name, "--progress", "plain", str(EXAMPLES / "debian-apt"))
    assert "Setting up jq" in built.stderr + built.stdout
    got = _ship(lb, docker, tmp_path, name)
    sizes = {layer["Size"] for layer in json.loads(lb("inspect", name).stdout)[0]["Store"]
             ["Layers"][1:]}
    assert max(sizes) < 10_000_000, sizes  # apt's lists and caches stayed out of the layer
    assert len(got.image.config.diff_ids) == 3
    assert _run(docker, name) == "19\n"
    assert _run(docker, name, "jq", "--version").startswith("jq-")
    assert _run(docker, name, "sh", "-c", "ls /var/lib/apt/lists | wc -l").strip() == "0"
