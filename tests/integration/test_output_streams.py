"""`-o …,dest=-` streams a tar to stdout, read here by the real tools through a pipe, with
everything else on stderr; `-o type=oci,dest=x.tar` writes a tar that skopeo and umoci read,
and `tar=false` a directory, as BuildKit's exporters do."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from treeutil import need_tool

from layerbuild.archive.sources import TarSource
from layerbuild.validate import validate_archive


def _ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Buildfile").write_text("FROM base\nCOPY hello.txt /srv/hello.txt\n")
    (ctx / "hello.txt").write_text("hello\n")
    return ctx


def _build_into(store_root: Path, cwd: Path, reader: list[str], *args: str,
                ) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """`layerbuild build ARGS | READER`, in `cwd`: the build's result and the reader's output."""
    build = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                              "build", "--progress", "plain", *args],
                             cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert build.stdout is not None
    read = subprocess.run(reader, stdin=build.stdout, capture_output=True, cwd=cwd,
                          timeout=300)
    build.stdout.close()
    err = build.stderr.read() if build.stderr else b""
    build.wait(timeout=300)
    assert read.returncode == 0, read.stderr.decode()
    return subprocess.CompletedProcess(build.args, build.returncode, b"", err), read.stdout


@pytest.mark.parametrize("spelling", ["type=tar,dest=-", "-", "type=tar"])
def test_a_rootfs_tar_streams_to_stdout(lb, base: str, tmp_path: Path, store_root: Path,
                                        spelling: str) -> None:
    need_tool("tar")
    ctx = _ctx(tmp_path)
    build, listing = _build_into(store_root, tmp_path, ["tar", "-t"], "-t", "streamed:1",
                                 "-o", spelling, str(ctx))
    assert build.returncode == 0, build.stderr.decode()
    names = listing.decode().split()
    assert "./srv/hello.txt" in names and "./bin/busybox" in names
    said = build.stderr.decode()
    assert "Successfully built sha256:" in said and "Successfully tagged streamed:1" in said
    assert "[2/2] COPY hello.txt /srv/hello.txt" in said
    assert not (tmp_path / "-").exists() and not (ctx / "-").exists()


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_an_image_archive_streams_to_stdout(lb, base: str, tmp_path: Path, store_root: Path,
                                            kind: str) -> None:
    need_tool("tar", "skopeo")
    ctx = _ctx(tmp_path)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    build, _ = _build_into(store_root, tmp_path, ["tar", "-x", "-C", str(unpacked)],
                           "-q", "-t", "streamed:1", "-o", f"type={kind},dest=-", str(ctx))
    assert build.returncode == 0, build.stderr.decode()
    assert build.stderr.decode().startswith("sha256:")  # -q's image ID, on stderr
    assert (unpacked / "manifest.json").is_file() and (unpacked / "oci-layout").is_file()
    inspected = subprocess.run(["skopeo", "inspect", f"oci:{unpacked}:1"],
                               capture_output=True, text=True, check=True)
    assert '"Layers"' in inspected.stdout


def test_an_oci_output_is_a_tar_unless_tar_false(lb, base: str, tmp_path: Path) -> None:
    need_tool("skopeo", "umoci")
    ctx = _ctx(tmp_path)
    archive = tmp_path / "x.tar"
    lb("build", "-t", "ocitar:1", "-o", f"type=oci,dest={archive}", str(ctx))
    assert archive.is_file() and tarfile.is_tarfile(archive)
    validate_archive(TarSource(archive))
    inspected = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}:1"],
                               capture_output=True, text=True)
    assert inspected.returncode == 0, inspected.stderr
    copied = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", f"oci-archive:{archive}:1", f"oci:{copied}:1"],
                   capture_output=True, check=True)
    listed = subprocess.run(["umoci", "ls", "--layout", str(copied)], capture_output=True,
                            text=True, check=True)
    assert listed.stdout.split() == ["1"]
    layout = tmp_path / "layout"
    lb("build", "-t", "ocitar:1", "-o", f"type=oci,dest={layout},tar=false", str(ctx))
    assert layout.is_dir()
    listed = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True,
                            text=True, check=True)
    assert listed.stdout.split() == ["1"]
    unpacked = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1", str(unpacked)],
                   capture_output=True, check=True)
    assert (unpacked / "rootfs/srv/hello.txt").read_text() == "hello\n"


def test_a_stream_is_never_written_to_a_terminal(lb, base: str, tmp_path: Path,
                                                 store_root: Path) -> None:
    ctx = _ctx(tmp_path)
    primary, secondary = os.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                               "build", "-o", "type=tar,dest=-", str(ctx)],
                              stdout=secondary, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "layerbuild: error: -o …,dest=-: refusing to write a tar to a terminal; redirect "
        "stdout or give dest=FILE"]


@pytest.mark.parametrize(("output", "said"), [
    ("type=local,dest=-", "a directory cannot go to stdout"),
    ("type=oci,dest=-,tar=false", "a directory cannot go to stdout"),
    ("-", "only one output can go to stdout"),
])
def test_outputs_that_cannot_be_written_fail_before_the_build(lb, base: str, tmp_path: Path,
                                                              output: str, said: str) -> None:
    ctx = _ctx(tmp_path)
    proc = lb("build", "-o", "type=docker,dest=-", "-o", output, str(ctx), check=False) \
        if output == "-" else lb("build", "-o", output, str(ctx), check=False)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert said in line and line.startswith("layerbuild: error: -o")
