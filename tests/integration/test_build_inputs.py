"""Build inputs beyond the context: secrets, bind mounts of stages, --parents, ADD of URLs."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


def _ctx(tmp_path: Path, buildfile: str, files: dict[str, str]) -> Path:
    ctx = tmp_path / "ctx"
    for name, text in {"Buildfile": buildfile, **files}.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def _top(lb, tag: str) -> Path:
    return Path(json.loads(lb("inspect", tag).stdout)[0]["Store"]["Layers"][-1]["DiffDir"])


def test_secrets_reach_run_but_never_the_image(lb, base: str, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t")
    ctx = _ctx(tmp_path, "FROM base\nRUN --mount=type=secret,id=token "
               "wc -c < /run/secrets/token > /len && ls /run/secrets > /listed\n", {})
    proc = lb("build", "-t", "sec:1", "--secret", f"id=token,src={secret}", str(ctx))
    top = _top(lb, "sec:1")
    assert (top / "len").read_text().strip() == "6"
    assert not (top / "run").exists()
    assert "s3cr3t" not in proc.stderr
    missing = _ctx(tmp_path, "FROM base\nRUN --mount=type=secret,id=absent,required=true "
                   "true\n", {})
    failed = lb("build", str(missing), check=False)
    assert failed.returncode == 1 and "absent" in failed.stderr


def test_bind_mount_from_a_stage(lb, base: str, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM base AS tools\nRUN mkdir /t && echo tool > /t/x\n"
               "FROM base\nRUN --mount=type=bind,from=tools,source=/t,target=/mnt "
               "cat /mnt/x > /got\n", {})
    lb("build", "-t", "bind:1", str(ctx))
    top = _top(lb, "bind:1")
    assert (top / "got").read_text() == "tool\n"
    assert not (top / "mnt").exists()


def test_copy_parents_keeps_source_paths(lb, base: str, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM base\nCOPY --parents a/b/f.txt c/*.txt /dst/\n",
               {"a/b/f.txt": "f", "c/1.txt": "1", "c/2.txt": "2", "c/no.md": "n"})
    lb("build", "-t", "par:1", str(ctx))
    top = _top(lb, "par:1")
    found = sorted(p.relative_to(top / "dst").as_posix() for p in (top / "dst").rglob("*")
                   if p.is_file())
    assert found == ["a/b/f.txt", "c/1.txt", "c/2.txt"]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "tool.txt").write_text("downloaded\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_add_url_with_checksum(lb, base: str, tmp_path: Path, http_server: str) -> None:
    digest = hashlib.sha256(b"downloaded\n").hexdigest()
    ctx = _ctx(tmp_path, f"FROM base\nADD --checksum=sha256:{digest} {http_server}/tool.txt "
               "/opt/\n", {})
    lb("build", "-t", "url:1", str(ctx))
    fetched = _top(lb, "url:1") / "opt/tool.txt"
    assert fetched.read_text() == "downloaded\n"
    assert fetched.stat().st_mode & 0o777 == 0o600
    again = lb("build", "-t", "url:1", str(ctx))
    assert "cache miss" not in again.stderr  # the checksum is the key: no download needed
    bad = _ctx(tmp_path, f"FROM base\nADD --checksum=sha256:{'0' * 64} {http_server}/tool.txt "
               "/opt/\n", {})
    proc = lb("build", str(bad), check=False)
    assert proc.returncode == 1 and "checksum" in proc.stderr
