"""The FaultProxy of the registry tests, against a small upstream of our own: what it forwards
untouched, and each fault it injects."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from http.client import HTTPConnection, IncompleteRead
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from faultproxy import FaultProxy

BLOB = bytes(range(256)) * 1000  # 256,000 bytes


class Upstream(BaseHTTPRequestHandler):
    """/blob (Range-aware), /echo (the request as JSON), POST /upload (202 and a Location)."""

    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def do_GET(self) -> None:
        Upstream.hits.append(self.path)
        if self.path == "/echo":
            return self._send(200, json.dumps(self.headers.items()).encode())
        start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-"))
        status = 206 if start else 200
        self._send(status, BLOB[start:], {"Content-Range": f"bytes {start}-{len(BLOB) - 1}/"
                                          f"{len(BLOB)}"} if start else {})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        host, port = self.server.server_address[:2]
        self._send(202, b"", {"Location": f"http://{host!s}:{port}/upload/1?n={len(body)}",
                              "Docker-Upload-UUID": "1"})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the proxy hangs up on a body it cut


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = UpstreamServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    Upstream.hits = []
    host, port = server.server_address[:2]
    with FaultProxy(f"{host!s}:{port}") as p:
        yield p
    server.shutdown()
    server.server_close()


def request(proxy: FaultProxy, method: str, path: str, body: bytes | None = None,
            headers: Sequence[tuple[str, str]] = ()) -> tuple[int, dict[str, str], bytes]:
    conn = HTTPConnection(proxy.address, timeout=10)
    conn.putrequest(method, path)
    for name, value in headers:
        conn.putheader(name, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def test_headers_go_upstream_untouched_repeated_ones_too(proxy: FaultProxy) -> None:
    sent = [("Accept", "application/a"), ("Accept", "application/b"), ("Range", "bytes=5-"),
            ("Authorization", "Bearer x")]
    _, _, body = request(proxy, "GET", "/echo", headers=sent)
    got = [tuple(h) for h in json.loads(body)]
    assert [h for h in got if h[0] in ("Accept", "Range", "Authorization")] == sent
    assert ("Host", proxy.address) in got
    assert proxy.requests("/echo")[0].headers["accept"] == "application/a, application/b"


def test_range_requests_pass(proxy: FaultProxy) -> None:
    status, headers, body = request(proxy, "GET", "/blob", headers=[("Range", "bytes=1000-")])
    assert (status, body) == (206, BLOB[1000:])
    assert headers["content-range"] == f"bytes 1000-{len(BLOB) - 1}/{len(BLOB)}"


def test_head_keeps_its_length_and_sends_no_body(proxy: FaultProxy) -> None:
    status, headers, body = request(proxy, "HEAD", "/blob")
    assert (status, headers["content-length"], body) == (200, str(len(BLOB)), b"")


def test_upload_locations_point_back_through_the_proxy(proxy: FaultProxy) -> None:
    status, headers, _ = request(proxy, "POST", "/v2/r/blobs/uploads/", body=b"x" * 10)
    assert status == 202
    assert headers["location"] == f"http://{proxy.address}/upload/1?n=10"


def test_a_chunked_request_body_arrives_whole(proxy: FaultProxy) -> None:
    conn = HTTPConnection(proxy.address, timeout=10)
    conn.request("POST", "/up", body=iter([b"abc", b"defg"]), encode_chunked=True)
    response = conn.getresponse()
    response.read()
    assert response.getheader("Location", "").endswith("?n=7")


def test_cut_once_stops_one_body_at_n_bytes(proxy: FaultProxy) -> None:
    proxy.cut(r"^/blob", after=70_000)
    with pytest.raises(IncompleteRead) as cut:
        request(proxy, "GET", "/blob")
    assert cut.value.partial == BLOB[:70_000]
    assert request(proxy, "GET", "/blob")[2] == BLOB
    assert [s.fault for s in proxy.requests("/blob")] == ["cut", None]


def test_cut_every_time(proxy: FaultProxy) -> None:
    proxy.cut(r"^/blob", after=10, times=None)
    for _ in range(3):
        with pytest.raises(IncompleteRead):
            request(proxy, "GET", "/blob")


def test_fail_answers_the_first_k_without_forwarding(proxy: FaultProxy) -> None:
    proxy.fail(r"^/blob", status=429, count=2)
    answers = [request(proxy, "GET", "/blob") for _ in range(3)]
    assert [a[0] for a in answers] == [429, 429, 200]
    assert answers[0][1]["retry-after"] == "1"
    assert json.loads(answers[0][2])["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert Upstream.hits == ["/blob"]


def test_fail_with_503_on_one_method_only(proxy: FaultProxy) -> None:
    proxy.fail(r"^/blob", status=503, method="HEAD")
    assert request(proxy, "GET", "/blob")[0] == 200
    assert request(proxy, "HEAD", "/blob")[0] == 503
    assert request(proxy, "HEAD", "/blob")[0] == 200


def test_corrupt_keeps_the_length_and_changes_every_byte(proxy: FaultProxy) -> None:
    proxy.corrupt(r"^/blob")
    _, headers, body = request(proxy, "GET", "/blob")
    assert len(body) == len(BLOB) == int(headers["content-length"])
    assert all(a != b for a, b in zip(body, BLOB, strict=True))
    assert request(proxy, "GET", "/blob")[2] == BLOB


def test_delay(proxy: FaultProxy) -> None:
    proxy.delay(r"^/echo", seconds=0.3, times=1)
    start = time.monotonic()
    request(proxy, "GET", "/echo")
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    request(proxy, "GET", "/echo")
    assert time.monotonic() - start < 0.3
