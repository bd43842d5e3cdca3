"""BuildKit's behaviour through the engine and the fake sandbox: heredocs with blanks after
`<<`, heredoc destinations, EXPOSE host parts, ARG defaults, proxy args, TARGETSTAGE and
ADD --unpack."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginetools import Bench, new_bench
from fakesandbox import writes

from layerbuild.builder.stepcontext import layer_dirs
from layerbuild.digest import chain_ids
from layerbuild.errors import BuildfileError
from layerbuild.events import BuildWarning, CacheMiss, StepFinished
from layerbuild.image import Image
from layerbuild.sandbox.spec import RunSpec


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return new_bench(tmp_path)


def runs(bench: Bench) -> list[RunSpec]:
    return bench.sandbox.calls_of("run")  # type: ignore[return-value]


def env_of(spec: RunSpec) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in spec.env)


def holds(bench: Bench, image: Image, path: str) -> bool:
    """Whether a layer of the image has a file at `path` (whatever its bytes)."""
    chains = chain_ids(image.config.diff_ids)
    return any((d / path.lstrip("/")).is_file() for d in layer_dirs(bench.store, chains[-1]))


def history(image: Image | None) -> list[str]:
    assert image is not None
    return [h.created_by or "" for h in image.config.history]


# -- heredocs -----------------------------------------------------------------------------

def test_a_heredoc_with_blanks_after_the_operator_runs_its_body(bench: Bench) -> None:
    bench.sandbox.scripts["echo one\n"] = writes({"/one": "1"})
    bench.sandbox.scripts["<<  EOF  > /two\necho two\nEOF\n"] = writes({"/two": "2"})
    bench.sandbox.scripts["kept\n"] = writes({"/three": "3"})
    image = bench.build("FROM base\nRUN <<  EOF\necho one\nEOF\n"
                        "RUN <<  EOF  > /two\necho two\nEOF\n"
                        "RUN << -EOF\nkept\n-EOF\n")
    assert image is not None
    # The first is only a heredoc: its body is the script. The second goes to the shell
    # whole, which reads the body itself. In the third, the dash belongs to the name.
    assert [spec.argv[-1] for spec in runs(bench)] == [
        "echo one\n", "<<  EOF  > /two\necho two\nEOF\n", "kept\n"]
    assert [bench.read(image, p) for p in ("/one", "/two", "/three")] == ["1", "2", "3"]


@pytest.mark.parametrize("line", ["COPY <<  EOF /dest/", "COPY <<  EOF  /dest/"])
def test_a_spaced_heredoc_source_copies_context_files_named_by_its_words(
        bench: Bench, line: str) -> None:
    # BuildKit reads the body as a heredoc's, but copies the context paths `<<` and `EOF`.
    bench.write("<<", "the file named <<\n")
    bench.write("EOF", "the file named EOF\n")
    image = bench.build(f"FROM base\n{line}\nbody\nEOF\n")
    assert image is not None
    assert (bench.read(image, "/dest/<<"), bench.read(image, "/dest/EOF")) == (
        "the file named <<\n", "the file named EOF\n")
    assert history(image)[-1] == "COPY << EOF /dest/ # buildkit"


@pytest.mark.parametrize(("line", "reason"), [
    ("COPY <<  EOF /dest/", "<<: not found in the build context"),
    ("COPY <<  EOF  /dest/", "<<: not found in the build context"),
    ("COPY <<  EOF  /dest", "when using more than one source"),  # two paths, one file dest
])
def test_a_spaced_heredoc_source_without_such_files_fails_at_its_line(
        bench: Bench, line: str, reason: str) -> None:
    with pytest.raises(BuildfileError) as caught:
        bench.build(f"FROM base\nENV A=1\n{line}\nbody\nEOF\n")
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"{bench.context / 'Buildfile'}:3: COPY:")


@pytest.mark.parametrize("line", ["COPY /foo <<EOF\nEOF", "ADD f.txt <<EOF\nx\nEOF",
                                  "COPY /foo <<EOF"])
def test_a_heredoc_destination_fails_at_its_line(bench: Bench, line: str) -> None:
    bench.write("f.txt", "f")
    with pytest.raises(BuildfileError) as caught:
        bench.build(f"FROM base\nRUN true\n{line}\n")
    instruction = line.split()[0]
    assert caught.value.reason == f"{instruction} cannot accept a heredoc as a destination"
    assert str(caught.value).startswith(f"{bench.context / 'Buildfile'}:3: {instruction}:")
    assert runs(bench) == []


# -- EXPOSE -------------------------------------------------------------------------------

EXPOSING = "FROM base\nARG PORTS=\"80 443\"\nEXPOSE $PORTS 0.0.0.0:1234:1234/tcp [::1]:8080:80 " \
           "1234:1234/udp 127.0.0.1:7000-7001:7000-7001/udp\n"


def test_expose_host_parts_warn_and_keep_the_container_port(bench: Bench) -> None:
    image = bench.build(EXPOSING)
    assert image is not None
    assert sorted(image.config.config["ExposedPorts"]) == [
        "1234/tcp", "1234/udp", "443/tcp", "7000/udp", "7001/udp", "80/tcp"]
    where = f"{bench.context / 'Buildfile'}:3"
    assert bench.of(BuildWarning) == [BuildWarning(
        f"warning: {where}: EXPOSE instruction should not define an IP address or host-port "
        f"mapping, found '{spec}'") for spec in (
        "0.0.0.0:1234:1234/tcp", "[::1]:8080:80", "1234:1234/udp",
        "127.0.0.1:7000-7001:7000-7001/udp")]
    assert history(image)[-1] == ("EXPOSE map[1234/tcp:{} 1234/udp:{} 443/tcp:{} 7000/udp:{} "
                                  "7001/udp:{} 80/tcp:{}]")
    again = bench.build(EXPOSING)  # cached, and still said
    assert again is not None and again.id == image.id
    assert len(bench.of(BuildWarning)) == 4


def test_expose_of_an_upper_case_protocol_warns_and_exposes_it_lower_case(
        bench: Bench) -> None:
    image = bench.build("FROM base\nEXPOSE 80/TCP 53/udp\n")
    assert image is not None
    assert sorted(image.config.config["ExposedPorts"]) == ["53/udp", "80/tcp"]
    assert bench.of(BuildWarning) == [BuildWarning(
        f"warning: {bench.context / 'Buildfile'}:2: Defined protocol '80/TCP' in EXPOSE "
        "instruction should be lowercase")]
    assert history(image)[-1] == "EXPOSE map[53/udp:{} 80/tcp:{}]"


def test_a_bad_expose_port_names_its_line(bench: Bench) -> None:
    with pytest.raises(BuildfileError, match="invalid proto: icmp") as caught:
        bench.build("FROM base\nEXPOSE 80/icmp\n")
    assert caught.value.line == 2


# -- ARG defaults -------------------------------------------------------------------------

def test_an_arg_default_is_not_evaluated_when_a_build_arg_gives_the_value(bench: Bench,
                                                                            ) -> None:
    buildfile = "ARG G=${G:?give-G}\nFROM $G\nARG FOO=${FOO:?give-FOO}\nRUN echo $FOO $G\n"
    bench.sandbox.scripts["echo $FOO $G"] = writes({"/out": "x"})
    image = bench.build(buildfile, build_args={"G": "base", "FOO": "bar"})
    (spec,) = runs(bench)
    assert env_of(spec)["FOO"] == "bar" and "G" not in env_of(spec)
    # The default cannot be expanded, so the history shows the value given.
    assert history(image)[-2:] == ["ARG FOO=bar", "RUN |1 FOO=bar /bin/sh -c echo $FOO $G "
                                                  "# buildkit"]
    with pytest.raises(BuildfileError, match="FOO: give-FOO") as caught:
        bench.build(buildfile, build_args={"G": "base"})
    assert caught.value.line == 3 and caught.value.instruction == "ARG"
    with pytest.raises(BuildfileError, match="G: give-G") as caught:
        bench.build(buildfile, build_args={"FOO": "bar"})
    assert caught.value.line == 1


def test_each_arg_default_sees_the_args_before_it(bench: Bench) -> None:
    buildfile = ("ARG A=ba B=${A}se\nFROM $B\nARG X=1 Y=$X Z=${Y}2\nRUN env\n")
    bench.sandbox.scripts["env"] = writes({"/out": "x"})
    image = bench.build(buildfile)
    (spec,) = runs(bench)
    assert {k: env_of(spec)[k] for k in "XYZ"} == {"X": "1", "Y": "1", "Z": "12"}
    assert "ARG X=1 Y=1 Z=12" in history(image)
    bench.build(buildfile, build_args={"X": "7", "B": "base"})
    (spec,) = runs(bench)
    assert {k: env_of(spec)[k] for k in "XYZ"} == {"X": "7", "Y": "7", "Z": "72"}


def test_a_build_arg_still_records_the_default_docker_20_10_recorded(bench: Bench) -> None:
    image = bench.build("FROM base\nARG LEVEL=3\n", build_args={"LEVEL": "9"})
    assert history(image)[-1] == "ARG LEVEL=3"


# -- proxies ------------------------------------------------------------------------------

def test_proxy_args_reach_run_under_both_spellings_outside_history_and_keys(bench: Bench,
                                                                             ) -> None:
    buildfile = "FROM base\nRUN fetch\n"
    bench.sandbox.scripts["fetch"] = writes({"/out": "x"})
    given = {"http_proxy": "http://p:3128", "HTTPS_PROXY": "http://s:3128",
             "no_proxy": "localhost", "FTP_PROXY": "ftp://f", "all_proxy": "socks5://a"}
    image = bench.build(buildfile, build_args=given)
    (spec,) = runs(bench)
    env = env_of(spec)
    for name, value in given.items():
        assert env[name.upper()] == env[name.lower()] == value
    assert history(image)[-1] == "RUN /bin/sh -c fetch # buildkit"
    other = bench.build(buildfile, build_args={"http_proxy": "http://elsewhere:8080"})
    assert other is not None and image is not None and other.id == image.id
    assert bench.of(CacheMiss) == [] and runs(bench) == []
    assert [e.cached for e in bench.of(StepFinished)] == [False, True]  # type: ignore[attr-defined]


def test_a_declared_proxy_arg_counts_like_any_arg_and_env_wins(bench: Bench) -> None:
    bench.sandbox.scripts["fetch"] = writes({"/out": "x"})
    image = bench.build("FROM base\nENV HTTP_PROXY=http://env\nARG http_proxy\nRUN fetch\n",
                        build_args={"http_proxy": "http://given"})
    (spec,) = runs(bench)
    env = env_of(spec)
    assert (env["HTTP_PROXY"], env["http_proxy"]) == ("http://env", "http://given")
    assert history(image)[-1] == "RUN |1 http_proxy=http://given /bin/sh -c fetch # buildkit"


# -- TARGETSTAGE --------------------------------------------------------------------------

TWO_STAGES = ("ARG TARGETSTAGE\nFROM base AS First\nARG TARGETSTAGE\nRUN echo $TARGETSTAGE\n"
              "FROM base\nARG TARGETSTAGE\nRUN echo $TARGETSTAGE again\n")


@pytest.mark.parametrize(("target", "value"), [(None, "default"), ("first", "first")])
def test_targetstage_names_the_target_stage(bench: Bench, target: str | None,
                                            value: str) -> None:
    for text in ("echo $TARGETSTAGE", "echo $TARGETSTAGE again"):
        bench.sandbox.scripts[text] = writes({"/out": "x"})
    bench.build(TWO_STAGES, target=target)
    (spec,) = runs(bench)
    assert env_of(spec)["TARGETSTAGE"] == value
    assert bench.of(BuildWarning) == []


def test_targetstage_needs_an_arg_in_the_stage(bench: Bench) -> None:
    bench.sandbox.scripts["env"] = writes({"/out": "x"})
    bench.build("FROM base\nRUN env\n")
    (spec,) = runs(bench)
    assert "TARGETSTAGE" not in env_of(spec)


# -- ADD --unpack -------------------------------------------------------------------------

def _tarball(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            info.mtime = 1_000_000
            info.uid, info.gid = os.getuid(), os.getgid()
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server of a directory: its URL and the directory."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("flag", "unpacked"), [("", True), ("--unpack ", True),
                                                ("--unpack=true ", True),
                                                ("--unpack=false ", False)])
def test_add_unpack_for_a_local_archive(bench: Bench, flag: str, unpacked: bool) -> None:
    (bench.context / "a.tar.gz").write_bytes(_tarball({"inside.txt": "in"}))
    image = bench.build(f"FROM base\nADD {flag}a.tar.gz /dst/\n")
    assert image is not None
    assert (bench.read(image, "/dst/inside.txt") == "in") is unpacked
    assert holds(bench, image, "/dst/a.tar.gz") is not unpacked


@pytest.mark.parametrize(("flag", "unpacked"), [("", False), ("--unpack=false ", False),
                                                ("--unpack=true ", True)])
def test_add_unpack_for_a_url(bench: Bench, served: tuple[str, Path], flag: str,
                              unpacked: bool) -> None:
    url, root = served
    data = _tarball({"tool/bin": "binary"})
    (root / "t.tgz").write_bytes(data)
    checksum = f"sha256:{hashlib.sha256(data).hexdigest()}"
    image = bench.build(f"FROM base\nADD {flag}--checksum={checksum} {url}/t.tgz /opt/\n")
    assert image is not None
    assert (bench.read(image, "/opt/tool/bin") == "binary") is unpacked
    assert holds(bench, image, "/opt/t.tgz") is not unpacked


def test_add_unpack_true_copies_a_url_that_is_no_archive(bench: Bench,
                                                         served: tuple[str, Path]) -> None:
    url, root = served
    (root / "plain.txt").write_text("plain")
    image = bench.build(f"FROM base\nADD --unpack=true {url}/plain.txt /opt/\n")
    assert image is not None and bench.read(image, "/opt/plain.txt") == "plain"


def test_add_unpack_takes_only_a_boolean(bench: Bench) -> None:
    with pytest.raises(BuildfileError, match="expecting boolean value for flag --unpack"):
        bench.build("FROM base\nADD --unpack=maybe a /b\n")
    with pytest.raises(BuildfileError, match="unknown flag: --unpack"):
        bench.build("FROM base\nCOPY --unpack a /b\n")
