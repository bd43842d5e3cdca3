"""`layerbuild build -f - CONTEXT` with the Buildfile on a real pipe, as `cat Buildfile |` and
`docker build -f -` users give it: read once, built, and answered from the build record the
next time the same bytes come."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BUILDFILE = b"FROM base\nCOPY f /f\nCOPY <<EOF /doc\nfrom a pipe\nEOF\nCMD [\"cat\", \"/doc\"]\n"


def _piped(store_root: Path, ctx: Path, data: bytes, *args: str,
           ) -> subprocess.CompletedProcess[bytes]:
    """`printf DATA | layerbuild build -f - ARGS CTX`, through a pipe from another process."""
    feeder = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert feeder.stdin is not None and feeder.stdout is not None
    build = subprocess.Popen([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                              "build", "--progress", "plain", "-f", "-", *args, str(ctx)],
                             stdin=feeder.stdout, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    feeder.stdout.close()  # the build holds the only read end
    try:
        feeder.stdin.write(data)
        feeder.stdin.close()
    except BrokenPipeError:
        pass  # the build stopped reading, as it does past the size limit
    out, err = build.communicate(timeout=300)
    feeder.wait(timeout=60)
    return subprocess.CompletedProcess(build.args, build.returncode, out, err)


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("f\n")
    return ctx


def test_a_buildfile_from_a_pipe_builds(lb, base: str, tmp_path: Path, store_root: Path) -> None:
    ctx = _context(tmp_path)
    first = _piped(store_root, ctx, BUILDFILE, "-t", "piped:1")
    assert first.returncode == 0, first.stderr.decode()
    image_id = first.stdout.decode().split("Successfully built ")[1].split()[0]
    top = Path(lb("inspect", "piped:1").stdout.split('"DiffDir": "')[-1].split('"')[0])
    assert (top / "doc").read_text() == "from a pipe\n"
    again = _piped(store_root, ctx, BUILDFILE, "-t", "piped:2")
    assert again.returncode == 0, again.stderr.decode()
    assert f"Successfully built {image_id}" in again.stdout.decode()
    assert again.stderr.decode().count("CACHED") == 3  # every step but FROM
    changed = _piped(store_root, ctx, BUILDFILE.replace(b"a pipe", b"another pipe"))
    assert changed.returncode == 0 and image_id not in changed.stdout.decode()


def test_the_same_bytes_on_a_pipe_give_the_same_image(lb, base: str, tmp_path: Path,
                                                      store_root: Path) -> None:
    """Not cached: a heredoc's time is the step before's, not the pipe's, which is new."""
    ctx = _context(tmp_path)
    ids = []
    for _ in range(2):
        proc = _piped(store_root, ctx, BUILDFILE, "--no-cache")
        assert proc.returncode == 0, proc.stderr.decode()
        ids.append(proc.stdout.decode().split("Successfully built ")[1].split()[0])
    assert ids[0] == ids[1]
    (ctx / "Buildfile").write_bytes(BUILDFILE)
    with open(ctx / "Buildfile", "rb") as redirected:  # `< Buildfile`: stdin is a file
        proc = subprocess.run([sys.executable, "-m", "layerbuild.cli", "--root", str(store_root),
                               "build", "-q", "-f", "-", str(ctx)], stdin=redirected,
                              capture_output=True, check=True)
    assert proc.stdout.decode().strip() == ids[0]


def test_an_endless_pipe_is_refused_in_one_line(tmp_path: Path, store_root: Path) -> None:
    ctx = _context(tmp_path)
    proc = _piped(store_root, ctx, b"# a comment\n" * 1_500_000)
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == [
        "layerbuild: error: /dev/stdin: the Buildfile is larger than the maximum of "
        "16777216 bytes"]
