"""The images a build stands on, through the fake sandbox: found in the store, or pulled as
`--pull` says (the puller is a fake that stores an image, as a registry pull would)."""

from __future__ import annotations

from pathlib import Path

import pytest
from enginetools import Bench, new_bench

from layerbuild.builder.bases import Bases
from layerbuild.builder.engine import build
from layerbuild.errors import BuildfileError
from layerbuild.events import RecordingEvents
from layerbuild.image import Image
from layerbuild.reference import Reference
from layerbuild.request import BuildRequest


class FakePuller:
    """Pulls by storing a base image under the asked name; records every call."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, ref: str, platform: str | None) -> Image:
        self.calls.append((ref, platform))
        files = {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "pulled": ref}
        return self.bench.base(files, tag=ref if platform is None else "foreign-unnamed")


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return new_bench(tmp_path)


def run(bench: Bench, buildfile: str, policy: str = "missing", puller: FakePuller | None = None,
        **request: object) -> Image | None:
    bench.write("Buildfile", buildfile)
    req = BuildRequest(bench.context, bench.context / "Buildfile",
                       tags=(Reference.parse("out"),), pull=policy,
                       **request)  # type: ignore[arg-type]
    bases = Bases(bench.store, policy, puller, req.platform)
    return build(bench.store, req, RecordingEvents(), bench.sandbox, bases)


def test_a_base_the_store_lacks_is_pulled_once_and_built_on(bench: Bench) -> None:
    puller = FakePuller(bench)
    image = run(bench, "FROM remote/app:1\nCOPY --from=remote/app:1 /pulled /copied\n",
                puller=puller)
    assert image is not None
    assert puller.calls == [("remote/app:1", None)]
    assert bench.read(image, "/copied") == "remote/app:1"


def test_a_stored_base_is_not_pulled(bench: Bench) -> None:
    puller = FakePuller(bench)
    assert run(bench, "FROM base\n", puller=puller) is not None
    assert puller.calls == []


def test_pull_always_asks_again_for_a_stored_base_once_per_build(bench: Bench) -> None:
    puller = FakePuller(bench)
    run(bench, "FROM base AS a\nFROM base\nCOPY --from=base /pulled /p\n", "always", puller)
    assert puller.calls == [("base", None)]
    run(bench, "FROM base\n", "always", puller)
    assert puller.calls == [("base", None), ("base", None)]


def test_pull_never_names_the_file_line_and_the_policy(bench: Bench) -> None:
    puller = FakePuller(bench)
    with pytest.raises(BuildfileError) as caught:
        run(bench, "FROM base\nFROM remote/absent\n", "never", puller)
    assert puller.calls == []
    assert caught.value.line == 2 and caught.value.instruction == "FROM"
    assert "not in the store (and --pull=never)" in str(caught.value)


def test_a_dry_run_pulls_nothing(bench: Bench) -> None:
    puller = FakePuller(bench)
    bench.write("Buildfile", "FROM base\nCOPY --from=remote/x /a /a\n")
    req = BuildRequest(bench.context, bench.context / "Buildfile", dry_run=True)
    assert build(bench.store, req, RecordingEvents(), bench.sandbox,
                 Bases(bench.store, "missing", None)) is None
    assert puller.calls == []


def test_a_base_of_another_platform_is_pulled_for_it_and_not_named(bench: Bench) -> None:
    puller = FakePuller(bench)
    image = run(bench, "FROM --platform=linux/s390x remote/app:1\nCOPY --from=base /etc /e\n",
                puller=puller)
    assert image is not None
    assert puller.calls == [("remote/app:1", "linux/s390x")]
    assert "remote/app:1" not in bench.store.tags()


def test_the_host_platform_named_in_from_is_the_host_s_own(bench: Bench) -> None:
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    puller = FakePuller(bench)
    assert run(bench, f"FROM --platform=linux/{arch} base\n", puller=puller) is not None
    assert puller.calls == []


def test_an_unknown_policy_is_refused() -> None:
    from layerbuild.errors import LayerbuildError

    with pytest.raises(LayerbuildError, match="--pull=sometimes"):
        Bases(None, "sometimes")  # type: ignore[arg-type]


def test_a_new_image_drops_what_docker_alone_wrote_into_its_base(bench: Bench) -> None:
    """As BuildKit derives an image: no `comment`, `container_config`, `docker_version`,
    and no runtime key that is empty or unknown to an OCI image config."""
    import json

    from layerbuild.image import Image

    base = bench.store.get_image("base")
    raw = json.loads(base.config_bytes)
    raw.update({"comment": "Imported from -", "docker_version": "20.10.24",
                "container_config": {"Hostname": "", "Cmd": None}, "os.version": "10.0"})
    raw["config"] = {"Hostname": "", "AttachStdin": False, "Env": ["A=1"], "Cmd": ["sh"],
                     "Labels": {}, "WorkingDir": "", "Image": "sha256:abc"}
    docker_made = Image.from_config_bytes(json.dumps(raw).encode())
    bench.store.put_image(docker_made, [Reference.parse("imported")])
    image = run(bench, "FROM imported\nLABEL a=b\n")
    assert image is not None
    got = json.loads(image.config_bytes)
    for gone in ("comment", "docker_version", "container_config"):
        assert gone not in got
    assert got["os.version"] == "10.0"
    assert got["config"] == {"Env": ["A=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                    "/usr/bin:/sbin:/bin"], "Cmd": ["sh"],
                             "Labels": {"a": "b"}}
