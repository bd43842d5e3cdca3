"""A fault-injecting HTTP proxy for the registry tests (stdlib only, a thread per connection):
put in front of one registry, it cuts, corrupts, delays or refuses chosen responses, so a
client's retries and resumes can be tested against a real registry."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "proxy-connection"}
ERROR_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND", 429: "TOOMANYREQUESTS",
               503: "UNAVAILABLE"}
CHUNK = 64 * 1024
FLIP = bytes(b ^ 0xFF for b in range(256))


@dataclass
class Rule:
    """One fault: what it does, to which requests, how many more times (None: every time)."""

    kind: str  # "fail", "cut", "corrupt", "delay" or "serve"
    pattern: re.Pattern[str]
    method: str | None
    remaining: int | None
    status: int = 0
    after: int = 0
    seconds: float = 0.0
    retry_after: str = "1"
    body: bytes = b""
    content_type: str = "application/octet-stream"
    chunked: bool = False

    def matches(self, kind: str, method: str, target: str) -> bool:
        return (self.kind == kind and self.remaining != 0
                and (self.method is None or self.method == method)
                and self.pattern.search(target) is not None)


@dataclass
class Seen:
    """A request the proxy saw, and what it answered: `sent` counts the body bytes relayed so
    far (each chunk counted before the client has it, so a test that waited for the client
    reads the whole count)."""

    method: str
    target: str
    headers: dict[str, str]  # by lower-case name
    status: int
    fault: str | None
    sent: int = 0


@dataclass
class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of one registry that injects faults per test.

    Requests go upstream as they came (Range and every other end-to-end header untouched,
    Host included, so the registry's upload URLs name the proxy); Location headers naming
    the upstream are rewritten to the proxy. Patterns are searched in the request target
    (path and query). `times=None` means every time.

        with FaultProxy("127.0.0.1:5000") as proxy:
            proxy.fail(r"/manifests/", status=503)          # the first one answers 503
            proxy.cut(r"/blobs/sha256:", after=1000)         # one blob stops at 1000 bytes
            subprocess.run(["skopeo", "inspect", f"docker://{proxy.address}/repo:tag", ...])
    """

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: _ProxyServer | None = None
    port: int = 0
    """The port to listen on (0: any free one)."""

    @property
    def address(self) -> str:
        assert self.server is not None, "the proxy is not started"
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> FaultProxy:
        self.server = _ProxyServer(self)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, pattern: str, status: int = 503, count: int = 1, method: str | None = None,
             retry_after: str = "1") -> None:
        """Answer the first `count` matching requests `status` with `Retry-After`, not
        forwarding them."""
        self._add(Rule("fail", re.compile(pattern), method, count, status=status,
                       retry_after=retry_after))

    def cut(self, pattern: str, after: int, times: int | None = 1,
            method: str | None = "GET") -> None:
        """Close the connection after `after` bytes of a matching response's body (a body
        no longer than that goes through whole)."""
        self._add(Rule("cut", re.compile(pattern), method, times, after=after))

    def corrupt(self, pattern: str, times: int | None = 1, method: str | None = "GET") -> None:
        """Send a matching response's body with every byte flipped (same length)."""
        self._add(Rule("corrupt", re.compile(pattern), method, times))

    def delay(self, pattern: str, seconds: float, times: int | None = None,
              method: str | None = None) -> None:
        """Wait `seconds` before forwarding a matching request."""
        self._add(Rule("delay", re.compile(pattern), method, times, seconds=seconds))

    def serve(self, pattern: str, body: bytes, content_type: str, status: int = 200,
              chunked: bool = False, times: int | None = 1, method: str | None = "GET") -> None:
        """Answer matching requests with `body` instead of the registry's answer, with a
        Content-Length or (`chunked`) without one."""
        self._add(Rule("serve", re.compile(pattern), method, times, status=status, body=body,
                       content_type=content_type, chunked=chunked))

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def requests(self, pattern: str = "", method: str | None = None) -> list[Seen]:
        """The requests seen so far whose target matches `pattern`."""
        with self.lock:
            return [s for s in self.seen if re.search(pattern, s.target)
                    and (method is None or s.method == method)]

    def _add(self, rule: Rule) -> None:
        with self.lock:
            self.rules.append(rule)

    def take(self, kind: str, method: str, target: str) -> Rule | None:
        """The first live rule of `kind` for this request, one use of it spent."""
        with self.lock:
            for rule in self.rules:
                if rule.matches(kind, method, target):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__(("127.0.0.1", proxy.port), _ProxyHandler)
        self.proxy = proxy

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up (as after a cut) is no error of the proxy's


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._relay()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _relay(self) -> None:
        proxy, method, target = self.server.proxy, self.command, self.path
        # A list, not a dict: Go clients send Accept once per media type.
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        seen = _joined(headers)
        body = self._read_body()
        delay = proxy.take("delay", method, target)  # one rule: `times=None` is every request
        if delay is not None:
            time.sleep(delay.seconds)
        fault = proxy.take("fail", method, target)
        if fault is not None:
            self._answer_fault(fault)
            proxy.record(Seen(method, target, seen, fault.status, "fail"))
            return
        served = proxy.take("serve", method, target)
        if served is not None:
            self._serve(served)
            proxy.record(Seen(method, target, seen, served.status, "serve"))
            return
        try:
            upstream = HTTPConnection(proxy.upstream, timeout=120)
            response = self._forward(upstream, headers, body)
        except OSError as e:
            self._answer(502, {"errors": [{"code": "UNKNOWN", "message": f"upstream: {e}"}]})
            proxy.record(Seen(method, target, seen, 502, "upstream"))
            return
        try:
            self._send_response(response, seen)
        finally:
            upstream.close()

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(parts)
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length is not None else None

    def _forward(self, upstream: HTTPConnection, headers: list[tuple[str, str]],
                 body: bytes | None) -> HTTPResponse:
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            if name.lower() != "content-length":
                upstream.putheader(name, value)
        if body is not None:
            upstream.putheader("Content-Length", str(len(body)))
        upstream.endheaders(body)
        return upstream.getresponse()

    def _send_response(self, response: HTTPResponse, seen: dict[str, str]) -> None:
        """Relay the upstream response, with a cut or corrupt rule applied."""
        proxy, method, target = self.server.proxy, self.command, self.path
        has_body = method != "HEAD" and response.status not in (204, 304)
        length = response.getheader("Content-Length")
        buffered = response.read() if has_body and length is None else None
        cut = proxy.take("cut", method, target) if has_body else None
        corrupt = proxy.take("corrupt", method, target) if has_body else None
        # Recorded before the client has the answer, so a test sees it when the client is done.
        record = Seen(method, target, seen, response.status,
                      "cut" if cut else "corrupt" if corrupt else None)
        proxy.record(record)
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() in HOP_BY_HOP or (buffered is not None and
                                              name.lower() == "content-length"):
                continue
            self.send_header(name, self._through_proxy(value) if name.lower() == "location"
                             else value)
        if buffered is not None:
            self.send_header("Content-Length", str(len(buffered)))
        self.end_headers()
        if not has_body:
            return
        sent = 0
        for chunk in _chunks(response, buffered):
            if corrupt is not None:
                chunk = chunk.translate(FLIP)
            if cut is not None and sent + len(chunk) > cut.after:
                record.sent += cut.after - sent
                self.wfile.write(chunk[:cut.after - sent])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            record.sent += len(chunk)
            self.wfile.write(chunk)
            sent += len(chunk)

    def _through_proxy(self, location: str) -> str:
        url = urlsplit(location)
        if url.netloc != self.server.proxy.upstream:
            return location
        return urlunsplit(url._replace(netloc=self.server.proxy.address))

    def _answer_fault(self, rule: Rule) -> None:
        code = ERROR_CODES.get(rule.status, "UNKNOWN")
        self._answer(rule.status, {"errors": [{"code": code, "message": "injected fault"}]},
                     {"Retry-After": rule.retry_after})

    def _serve(self, rule: Rule) -> None:
        self.send_response(rule.status)
        self.send_header("Content-Type", rule.content_type)
        if rule.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(rule.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if not rule.chunked:
            self.wfile.write(rule.body)
            return
        try:
            for start in range(0, len(rule.body), CHUNK):
                part = rule.body[start:start + CHUNK]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client stopped reading: that is its right

    def _answer(self, status: int, body: dict[str, object],
                headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the proxy's record (FaultProxy.seen) is the log


def _joined(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Headers by lower-case name, repeated ones joined by commas (as RFC 9110 allows)."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _chunks(response: HTTPResponse, buffered: bytes | None) -> Iterator[bytes]:
    if buffered is not None:
        yield buffered
        return
    while chunk := response.read(CHUNK):
        yield chunk
