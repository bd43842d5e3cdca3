"""BuildKit's Buildfile behaviour with real RUN steps: heredocs with blanks after `<<`, ARG
defaults, proxy args under both spellings, TARGETSTAGE, EXPOSE host parts, ADD --unpack."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

BUILDFILE = """\
ARG IMAGE=${IMAGE:?give-an-image}
FROM $IMAGE AS tested
ARG TARGETSTAGE
ARG A=1 B=$A C=${C:?give-C}
RUN mkdir /out && echo "$TARGETSTAGE $A $B $C" > /out/args
RUN <<  EOF
echo "body of a spaced heredoc" > /out/spaced-script
EOF
RUN cat <<  EOF  > /out/spaced
spaced
EOF
RUN << -EOF
echo dashed > /out/dashed
-EOF
RUN echo "$HTTP_PROXY|$http_proxy|$NO_PROXY|$no_proxy" > /out/proxies
EXPOSE 0.0.0.0:8080:80/tcp [::1]:53:53/udp
ADD --unpack=false local.tar.gz /kept/
ADD --unpack=true --checksum={checksum} {url}/remote.tar.gz /unpacked/
FROM $IMAGE
RUN exit 1
"""


def _tarball(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(text)
        info.mtime = 1_600_000_000
        tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_buildkit_behaviour_in_real_steps(lb, base: str, tmp_path: Path,
                                          served: tuple[str, Path]) -> None:
    url, root = served
    remote = _tarball("tool/bin", "remote\n")
    (root / "remote.tar.gz").write_bytes(remote)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    checksum = f"sha256:{hashlib.sha256(remote).hexdigest()}"
    (ctx / "Buildfile").write_text(BUILDFILE.replace("{url}", url).replace("{checksum}",
                                                                           checksum))
    (ctx / "local.tar.gz").write_bytes(_tarball("inside", "local\n"))
    given = ["IMAGE=base", "C=given", "http_proxy=http://proxy.invalid:3128",
             "NO_PROXY=localhost"]
    args = [item for arg in given for item in ("--build-arg", arg)]
    out = tmp_path / "rootfs"
    proc = lb("build", "--target", "tested", "-t", "conf:1", "-o", f"type=local,dest={out}",
              *args, str(ctx))
    files = {p.relative_to(out / "out").as_posix(): p.read_text()
             for p in (out / "out").iterdir()}
    assert files == {
        "args": "tested 1 1 given\n",  # C's default is never evaluated: C is given
        "spaced-script": "body of a spaced heredoc\n",
        "spaced": "spaced\n",
        "dashed": "dashed\n",
        "proxies": "http://proxy.invalid:3128|http://proxy.invalid:3128|localhost|localhost\n",
    }
    assert (out / "kept/local.tar.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert not (out / "kept/inside").exists()
    assert (out / "unpacked/tool/bin").read_text() == "remote\n"

    assert "EXPOSE instruction should not define an IP address or host-port mapping, found " \
           "'0.0.0.0:8080:80/tcp'" in proc.stderr
    assert "found '[::1]:53:53/udp'" in proc.stderr
    info = json.loads(lb("inspect", "conf:1").stdout)[0]
    assert sorted(info["Config"]["ExposedPorts"]) == ["53/udp", "80/tcp"]
    created = lb("history", "--no-trunc", "conf:1").stdout
    assert "proxy.invalid" not in created and "ARG A=1 B=1 C=given" in created

    # Another proxy changes no step: proxies are not part of the cache key.
    again = lb("build", "--target", "tested", "-t", "conf:2", *args[:-4],
               "--build-arg", "http_proxy=http://other.invalid:8080", str(ctx))
    assert "CACHED" in again.stderr and "cache miss" not in again.stderr
    assert json.loads(lb("inspect", "conf:2").stdout)[0]["Id"] == info["Id"]
