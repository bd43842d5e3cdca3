"""Registry faults, against the real test registries (through a FaultProxy where a fault is
needed) and the real command line: each fault ends the command with one clear line and exit 1,
leaves the store as it was (once the next command cleaned the debris), and the same command
succeeds once the fault is gone. Last, no credential gets anywhere but Docker's config file."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import run_cli
from registrytools import FaultProxy, Registries, repository_name
from storecheck import Contents, check_consistent
from treeutil import need_root

pytestmark = pytest.mark.registry

ATTEMPTS = "2"
"""LAYERBUILD_REGISTRY_ATTEMPTS for a registry that is down: one retry, 0.5 s of backoff."""
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Cli:
    """The command line on one store, with a Docker config of the test's own; every output
    is kept (for the credentials check)."""

    root: Path
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def __call__(self, *args: str, check: bool = True, input_: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        stdin = {"input": input_} if input_ is not None else {"stdin": subprocess.DEVNULL}
        proc = subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(self.root),
                               *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, **self.env, **(env or {})}, **stdin)
        self.outputs += [proc.stdout, proc.stderr]
        if check and proc.returncode != 0:
            raise AssertionError(f"layerbuild {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def refused(self, *args: str, says: tuple[str, ...] = (), input_: str | None = None,
                env: dict[str, str] | None = None) -> str:
        """Run a command that must fail with one `layerbuild: error: …` line; returns it."""
        proc = self(*args, check=False, input_=input_, env=env)
        assert proc.returncode == 1, f"{args}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("layerbuild: error: "), proc.stderr
        assert sum(line.startswith("layerbuild:") for line in lines) == 1, proc.stderr
        for text in says:
            assert text in lines[-1], f"{text!r} not in {lines[-1]!r}"
        return lines[-1]

    def unchanged(self, before: Contents) -> None:
        """The next command cleans what a failed one left; then the store is as before."""
        self("images")
        assert check_consistent(self.root) == before


@dataclass(frozen=True)
class Pushed:
    """Busybox, imported into a store and pushed to the open registry by layerbuild."""

    store: Path
    repository: str
    layer: str  # the layer blob's digest
    manifest: str


@pytest.fixture(scope="module")
def pushed(registries: Registries, busybox_tar: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    need_root()
    store = tmp_path_factory.mktemp("faults-source") / "store"
    repository = repository_name("faults")
    run_cli(store, "import", str(busybox_tar), "bb:1")
    out = run_cli(store, "push", "bb:1", f"{registries.open}/{repository}:v1").stdout
    manifest = out.split("digest: ")[1].split()[0]
    with urllib.request.urlopen(urllib.request.Request(
            f"http://{registries.open}/v2/{repository}/manifests/v1",
            headers={"Accept": OCI_MANIFEST})) as answer:
        layer = json.load(answer)["layers"][0]["digest"]
    return Pushed(store, repository, layer, manifest)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A fresh store with busybox in it as `keep:1`, and an empty Docker config."""
    config = tmp_path / "docker-config"
    config.mkdir()
    return Cli(tmp_path / "store", {"DOCKER_CONFIG": str(config)})


@pytest.fixture
def kept(cli: Cli, busybox_tar: Path) -> Contents:
    """What `cli`'s store holds before the fault: busybox as `keep:1`."""
    need_root()
    cli("import", str(busybox_tar), "keep:1")
    return check_consistent(cli.root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifest_status(registry: str, repository: str, tag: str) -> int:
    request = urllib.request.Request(f"http://{registry}/v2/{repository}/manifests/{tag}",
                                     method="HEAD", headers={"Accept": OCI_MANIFEST})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code


# --- the registry cannot be reached -----------------------------------------------------------

def test_a_registry_that_is_down_fails_after_the_retries_and_works_once_it_is_up(
        cli: Cli, kept: Contents, pushed: Pushed, registries: Registries) -> None:
    port = free_port()
    ref = f"127.0.0.1:{port}/{pushed.repository}:v1"
    env = {"LAYERBUILD_REGISTRY_ATTEMPTS": ATTEMPTS}
    started = time.monotonic()
    error = cli.refused("pull", ref, env=env, says=(f"cannot reach 127.0.0.1:{port}",
                                                    "connection refused"))
    assert error == f"layerbuild: error: {ref}: cannot reach 127.0.0.1:{port}: connection refused"
    assert cli.outputs[-2].count("retrying in 0.5s") == 1  # one retry, as many as asked
    cli.refused("push", "keep:1", ref, env=env, says=(f"cannot reach 127.0.0.1:{port}",))
    assert time.monotonic() - started < 10
    cli.unchanged(kept)
    cli.refused("pull", ref, env={"LAYERBUILD_REGISTRY_ATTEMPTS": "none"},
                says=("LAYERBUILD_REGISTRY_ATTEMPTS must be a whole number",))
    # The registry comes up on that port: the same commands work.
    with FaultProxy(registries.open, port=port):
        cli("pull", ref, env=env)
        cli("push", "keep:1", f"127.0.0.1:{port}/{pushed.repository}-up:v1", env=env)
    found = check_consistent(cli.root)
    assert ref in found.tags and "keep:1" in found.tags


# --- refusals: 401, 403, 404 -----------------------------------------------------------------

def _docker_config(cli: Cli, registry: str, user: str, password: str) -> Path:
    config = Path(cli.env["DOCKER_CONFIG"]) / "config.json"
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return config


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_bad_credentials_are_refused_and_good_ones_then_work(
        cli: Cli, kept: Contents, registries: Registries, auth: str) -> None:
    registry = registries.basic if auth == "basic" else registries.token
    ref = f"{registry}/{repository_name(f'creds-{auth}')}:v1"
    refusal = ("unauthorized: authentication required (HTTP 401)" if auth == "basic" else
               "unauthorized: the token server refused the credentials (HTTP 401)")
    config = _docker_config(cli, registry, registries.user, "not-the-password")
    written = config.read_bytes()
    cli.refused("push", "keep:1", ref, says=(refusal,))
    cli.refused("pull", ref, says=(refusal,))
    cli.refused("login", registry, "-u", registries.user, "--password-stdin",
                input_="still-not-it\n", says=("login failed", refusal))
    assert config.read_bytes() == written, "a failed login changed the credentials"
    cli.unchanged(kept)
    cli("login", registry, "-u", registries.user, "--password-stdin",
        input_=registries.password + "\n")
    cli("push", "keep:1", ref)
    cli("rmi", "keep:1")
    cli("pull", ref)
    assert set(check_consistent(cli.root).tags) >= {ref}


def test_a_refused_upload_fails_the_push_and_leaves_no_tag(
        cli: Cli, kept: Contents, fault_proxy: FaultProxy, registries: Registries) -> None:
    repository = repository_name("denied")
    ref = f"{fault_proxy.address}/{repository}:v1"
    fault_proxy.fail(r"/blobs/uploads/", status=403, method="POST")
    cli.refused("push", "keep:1", ref, says=("denied: injected fault (HTTP 403)",
                                             f"{fault_proxy.address}/{repository} blob"))
    assert manifest_status(registries.open, repository, "v1") == 404
    cli.unchanged(kept)
    pushed = cli("push", "keep:1", ref).stdout
    assert manifest_status(registries.open, repository, "v1") == 200
    assert "v1: digest: sha256:" in pushed
    assert check_consistent(cli.root).without_pins() == kept


def test_an_unknown_tag_is_not_found_until_it_is_pushed(
        cli: Cli, kept: Contents, pushed: Pushed, registries: Registries) -> None:
    ref = f"{registries.open}/{pushed.repository}:later"
    cli.refused("pull", ref, says=(f"{ref}: manifest unknown", "(HTTP 404)"))
    cli.refused("pull", f"{registries.open}/{pushed.repository}-none:v1",
                says=("(HTTP 404)",))
    cli.unchanged(kept)
    run_cli(pushed.store, "push", "bb:1", ref)
    assert "Already exists" in cli("pull", ref).stdout  # keep:1 is the same busybox
    assert ref in check_consistent(cli.root).tags


# --- bytes that are not what they should be ------------------------------------------------

def test_a_corrupted_layer_fails_on_its_digest(
        cli: Cli, kept: Contents, fault_proxy: FaultProxy, pushed: Pushed) -> None:
    cli("rmi", "keep:1")
    empty = check_consistent(cli.root)
    ref = f"{fault_proxy.address}/{pushed.repository}:v1"
    fault_proxy.corrupt(f"/blobs/{pushed.layer}")
    short = pushed.layer[7:19]
    error = cli.refused("pull", ref, says=(f"layer {short} blob: content is sha256:",
                                           f"expected {pushed.layer}"))
    assert error.startswith(f"layerbuild: error: {fault_proxy.address}/{pushed.repository} ")
    assert [s.fault for s in fault_proxy.requests(pushed.layer)] == ["corrupt"]
    cli.unchanged(empty)
    assert "Downloaded newer image" in cli("pull", ref).stdout
    assert ref in check_consistent(cli.root).tags


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_manifest_over_the_size_limit_is_refused(
        cli: Cli, kept: Contents, fault_proxy: FaultProxy, pushed: Pushed,
        chunked: bool) -> None:
    ref = f"{fault_proxy.address}/{pushed.repository}:v1"
    huge = b'{"schemaVersion": 2, "layers": [' + b" " * (5 << 20) + b"]}"
    fault_proxy.serve(r"/manifests/v1", huge, OCI_MANIFEST, chunked=chunked)
    cli.refused("pull", ref, says=(f"{ref}: the manifest ", "over the 4194304-byte limit"))
    cli.unchanged(kept)
    cli("pull", ref)
    assert ref in check_consistent(cli.root).tags


# --- a cut connection --------------------------------------------------------------------------

def test_a_cut_download_resumes_with_a_range_request(
        cli: Cli, kept: Contents, fault_proxy: FaultProxy, pushed: Pushed) -> None:
    cli("rmi", "keep:1")
    empty = check_consistent(cli.root)
    ref = f"{fault_proxy.address}/{pushed.repository}:v1"
    fault_proxy.cut(f"/blobs/{pushed.layer}", after=300_000)
    out = cli("pull", ref).stdout
    assert "resuming at byte 300000" in out and "Downloaded newer image" in out
    gets = fault_proxy.requests(f"/blobs/{pushed.layer}", method="GET")
    assert [(s.status, s.fault, s.headers.get("range")) for s in gets] == [
        (200, "cut", None), (206, None, "bytes=300000-")]
    assert check_consistent(cli.root).tags.keys() == {ref, f"{ref[:-3]}@{pushed.manifest}"}
    # Cut every time (in a store of its own): six tries, each 100,000 bytes further, then a
    # clear error.
    cli = Cli(cli.root.with_name("store-2"), cli.env)
    cli("images")
    empty = check_consistent(cli.root)
    fault_proxy.seen.clear()
    fault_proxy.cut(f"/blobs/{pushed.layer}", after=100_000, times=None)
    error = cli.refused("pull", ref, says=(f"layer {pushed.layer[7:19]}: the download broke "
                                           "off 6 times (Connection broken",))
    assert "Traceback" not in cli.outputs[-2]
    ranges = [s.headers.get("range") for s in fault_proxy.requests(f"/blobs/{pushed.layer}")]
    assert ranges == [None, *(f"bytes={n * 100_000}-" for n in range(1, 6))], error
    cli.unchanged(empty)
    fault_proxy.clear()
    cli("pull", ref)
    assert ref in check_consistent(cli.root).tags


# --- busy registries: 429 and 503 with Retry-After --------------------------------------------

@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_registry_is_waited_for_as_it_asks(
        cli: Cli, kept: Contents, fault_proxy: FaultProxy, pushed: Pushed, status: int) -> None:
    cli("rmi", "keep:1")
    ref = f"{fault_proxy.address}/{pushed.repository}:v1"
    fault_proxy.fail(r"/manifests/v1", status=status, count=2, retry_after="1")
    started = time.monotonic()
    out = cli("pull", ref).stdout
    assert time.monotonic() - started >= 2.0  # two answers of Retry-After: 1
    assert out.count(f"HTTP {status}; retrying in 1.0s") == 2
    assert [s.status for s in fault_proxy.requests(r"/manifests/v1")] == [status, status, 200]
    # A push: the upload's start (here a mount from the pulled repository) is refused once,
    # then taken.
    target = f"{fault_proxy.address}/{repository_name(f'busy-{status}')}:v1"
    fault_proxy.fail(r"/blobs/uploads/", status=status, method="POST", retry_after="1")
    started = time.monotonic()
    out = cli("push", ref, target).stdout
    assert time.monotonic() - started >= 1.0
    assert f"HTTP {status}; retrying in 1.0s" in out and "v1: digest: sha256:" in out
    posts = fault_proxy.requests(r"/blobs/uploads/", method="POST")
    assert [s.status for s in posts][:2] == [status, 201]  # the layer: mounted
    check_consistent(cli.root)


# --- no credential is written anywhere but Docker's config -----------------------------------

@pytest.fixture
def token_proxy(registries: Registries) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the token-auth registry: it sees the tokens sent."""
    with FaultProxy(registries.token) as proxy:
        yield proxy


@pytest.fixture
def basic_proxy(registries: Registries) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the basic-auth registry: it sees the credentials sent."""
    with FaultProxy(registries.basic) as proxy:
        yield proxy


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def test_credentials_and_tokens_are_kept_only_in_the_docker_config(
        tmp_path: Path, busybox_tar: Path, registries: Registries, token_proxy: FaultProxy,
        basic_proxy: FaultProxy) -> None:
    need_root()
    config = tmp_path / "docker-config"
    config.mkdir()
    env = {"DOCKER_CONFIG": str(config)}
    first, second, third = (Cli(tmp_path / n, env) for n in ("store", "pulled", "built"))
    outputs = [first.outputs, second.outputs, third.outputs]
    password = registries.password
    wrong = f"wrong-{os.urandom(12).hex()}"
    for registry in (basic_proxy.address, token_proxy.address):
        first("login", registry, "-u", registries.user, "--password-stdin",
              input_=password + "\n")
    first("import", str(busybox_tar), "bb:1")
    repository = repository_name("secrets")
    refs = [f"{proxy.address}/{repository}:v1" for proxy in (basic_proxy, token_proxy)]
    for ref in refs:
        first("push", "bb:1", ref)
        second("pull", ref)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text(f"FROM {refs[1]}\nCOPY note /note\n")
    (context / "note").write_text("built on a pulled base\n")
    built = [ref.replace(":v1", ":built") for ref in refs]
    third("build", "--progress", "plain", "--push", "-t", built[0], "-t", built[1],
          str(context))
    # A pull with the wrong password, from a config of its own.
    bad_config = tmp_path / "docker-config-bad"
    bad_config.mkdir()
    bad = Cli(tmp_path / "bad", {"DOCKER_CONFIG": str(bad_config)})
    outputs.append(bad.outputs)
    for registry in (basic_proxy.address, token_proxy.address):
        auth = base64.b64encode(f"{registries.user}:{wrong}".encode()).decode()
        (bad_config / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
        bad.refused("pull", f"{registry}/{repository}:v1", says=("unauthorized",))
    # Every image of every store saved, as a user would share them.
    for n, store in enumerate((first, second, third)):
        ids = store("images", "-q").stdout.split()
        store("save", *ids, "-o", str(tmp_path / f"saved-{n}.tar"))

    tokens = {s.headers["authorization"].removeprefix("Bearer ")
              for s in token_proxy.seen if s.headers.get("authorization", "").startswith("Bearer ")}
    basics = {s.headers["authorization"] for s in basic_proxy.seen
              if s.headers.get("authorization", "").startswith("Basic ")}
    assert tokens, "the token registry was never sent a token"
    good_basic = base64.b64encode(f"{registries.user}:{password}".encode()).decode()
    bad_basic = base64.b64encode(f"{registries.user}:{wrong}".encode()).decode()
    assert basics == {f"Basic {good_basic}", f"Basic {bad_basic}"}
    secrets = [password, wrong, good_basic, bad_basic,
               base64.b64encode(password.encode()).decode(), *tokens]
    assert len(password) >= 16, "the test user's password is not distinctive"
    needles = [s.encode() for s in secrets]
    for output in (o for group in outputs for o in group):
        for secret in secrets:
            assert secret not in output, "a credential was printed"
    holders = {str(path.relative_to(tmp_path)) for path in _files(tmp_path)
               if any(n in path.read_bytes() for n in needles)}
    assert holders == {"docker-config/config.json", "docker-config-bad/config.json"}, holders
    kept = json.loads((config / "config.json").read_text())["auths"]
    assert {kept[r]["auth"] for r in (basic_proxy.address, token_proxy.address)} == {good_basic}
    assert list((tmp_path / "built/buildcache/records").iterdir()), "no build record to look at"
