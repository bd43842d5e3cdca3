"""A small OCI distribution registry for tests, on 127.0.0.1 in a thread (stdlib only).

It serves `/v2/`, manifests (GET/HEAD/PUT), blobs (GET/HEAD, with `Range`), uploads (POST,
PATCH, PUT, and cross-repository mounts), and, as asked, Basic auth or Bearer tokens from its
own `/token` endpoint (a distribution-style token server: scopes, service, account). Faults
are programmable: an answer for the next N matching requests, or a blob download cut after
some bytes. Every request is recorded, so tests can say what was (and was not) asked.

Plain HTTP only: a TLS handshake is refused at once, as a plain registry does, so a client
that falls back to HTTP does so without waiting.

    with FakeRegistry(auth="bearer", users={"me": "pw"}) as reg:
        image = make_image([{"hello": b"world"}])
        reg.put_image("team/app", "1", image)
        ...  # pull f"{reg.host}/team/app:1"
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import secrets
import socket
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import tartools

from layerbuild.digest import Digest
from layerbuild.image import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    History,
    Image,
    ImageConfig,
    canonical_json,
    manifest_bytes,
)

SERVICE = "fake-registry"


# --- test images --------------------------------------------------------------------------


@dataclass(frozen=True)
class TestImage:
    """An image as a registry holds it: config, layer blobs and the manifest naming them."""

    __test__ = False  # not a pytest class

    image: Image
    layers: tuple[bytes, ...]
    manifest: bytes
    layer_type: str = OCI_LAYER_GZIP

    @property
    def digest(self) -> Digest:
        """The manifest's digest."""
        return Digest.of(self.manifest)

    @property
    def layer_digests(self) -> list[Digest]:
        """The layer blobs' digests, bottom first."""
        return [Digest.of(b) for b in self.layers]


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed layer tar of regular files owned by the current user."""
    return tartools.build(*(tartools.entry(name, data=data) for name, data in files.items()))


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no mtime in the header)."""
    return gzip.compress(data, compresslevel=1, mtime=0)


def make_image(layers: list[Mapping[str, bytes]], arch: str = "amd64", os_: str = "linux",
               variant: str | None = None, layer_type: str = OCI_LAYER_GZIP,
               created: str = "2024-01-01T00:00:00Z") -> TestImage:
    """An image of gzip layers, one per mapping of file names to contents."""
    tars = [layer_tar(files) for files in layers]
    config = ImageConfig(architecture=arch, os=os_, variant=variant, created=created,
                         config={"Cmd": ["/bin/sh"]})
    for n, tar in enumerate(tars):
        config = config.with_layer(Digest.of(tar), History(created, f"layer {n}"))
    image = Image.from_config(config)
    blobs = tuple(gzip_bytes(t) for t in tars)
    config_desc = Descriptor(OCI_CONFIG, image.id, len(image.config_bytes))
    manifest = manifest_bytes(config_desc, [Descriptor(layer_type, Digest.of(b), len(b))
                                            for b in blobs])
    return TestImage(image, blobs, manifest, layer_type)


# --- the registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A request as the registry got it."""

    method: str
    path: str
    """The path with its query."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    body_size: int = 0

    @property
    def route(self) -> str:
        """The path without its query."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        """The query's parameters."""
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)


@dataclass
class Fault:
    """What to do instead of answering the next `times` requests whose method is `method`
    (or any, for "*") and whose path contains `path`: answer `status` with `headers`, or, with
    `cut_after`, send a blob's headers and only that many of its bytes, then hang up.
    Faults are taken before auth is checked, and never by the token endpoint."""

    method: str
    path: str
    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    times: int = 1
    cut_after: int | None = None
    body: bytes = b""


class FakeRegistry:
    """The registry: its content, its settings and what it was asked."""

    def __init__(self, auth: str | None = None, users: Mapping[str, str] | None = None,
                 anonymous_pull: bool = True, identity_tokens: Mapping[str, str] | None = None,
                 ) -> None:
        assert auth in (None, "basic", "bearer")
        self.auth = auth
        self.users = dict(users or {})
        self.anonymous_pull = anonymous_pull
        self.identity_tokens = dict(identity_tokens or {})  # refresh token -> user
        self.blobs: dict[str, bytes] = {}
        self.repo_blobs: dict[str, set[str]] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.uploads: dict[str, tuple[str, bytearray]] = {}
        self.tokens: dict[str, frozenset[tuple[str, str]]] = {}
        self.requests: list[Seen] = []
        self.token_requests: list[Seen] = []
        self.tls_attempts = 0
        self.faults: list[Fault] = []
        self.ignore_range = False
        self.allow_mount = True
        self.manifest_without_length = False
        self.redirect_blobs: str | None = None
        """A base URL (another registry) blob GETs are sent to with a 307."""
        self.stopped = False
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    # --- life -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry's name in references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://{self.host}"

    def start(self) -> FakeRegistry:
        """Serve, in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (connections kept open are hung up on)."""
        self.stopped = True
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeRegistry:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- content --------------------------------------------------------------------------

    def put_blob(self, repo: str, data: bytes, digest: Digest | None = None) -> Digest:
        """Store a blob in `repo` (under `digest`, to serve bytes that do not match it)."""
        key = str(digest or Digest.of(data))
        with self.lock:
            self.blobs[key] = data
            self.repo_blobs.setdefault(repo, set()).add(key)
        return Digest.parse(key)

    def put_manifest(self, repo: str, tag: str | None, data: bytes,
                     media_type: str = OCI_MANIFEST) -> Digest:
        """Store a manifest or index under its digest and `tag`."""
        digest = Digest.of(data)
        with self.lock:
            self.manifests[(repo, str(digest))] = (media_type, data)
            if tag is not None:
                self.manifests[(repo, tag)] = (media_type, data)
        return digest

    def put_image(self, repo: str, tag: str | None, image: TestImage) -> Digest:
        """Store an image's blobs and manifest; returns the manifest's digest."""
        self.put_blob(repo, image.image.config_bytes)
        for blob in image.layers:
            self.put_blob(repo, blob)
        return self.put_manifest(repo, tag, image.manifest)

    def put_index(self, repo: str, tag: str, images: list[tuple[TestImage, dict[str, str]]],
                  attestations: bool = True) -> Digest:
        """Store a multi-platform index of (image, platform) pairs, each image followed by
        an attestation manifest (`unknown/unknown`) as BuildKit pushes them."""
        entries: list[dict[str, Any]] = []
        for image, platform in images:
            digest = self.put_image(repo, None, image)
            entries.append({"mediaType": OCI_MANIFEST, "digest": str(digest),
                            "size": len(image.manifest), "platform": platform})
            if attestations:
                statement = self.put_blob(repo, b'{"_type": "statement"}')
                att = manifest_bytes(
                    Descriptor(OCI_CONFIG, self.put_blob(repo, b"{}"), 2),
                    [Descriptor("application/vnd.in-toto+json", statement, 22)])
                entries.append({
                    "mediaType": OCI_MANIFEST, "digest": str(self.put_manifest(repo, None, att)),
                    "size": len(att), "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                    "vnd.docker.reference.digest": str(digest)}})
        index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                "manifests": entries})
        return self.put_manifest(repo, tag, index, OCI_INDEX)

    def blob(self, repo: str, digest: Digest | str) -> bytes | None:
        """The blob's bytes, when `repo` has it."""
        with self.lock:
            if str(digest) not in self.repo_blobs.get(repo, set()):
                return None
            return self.blobs[str(digest)]

    def manifest(self, repo: str, reference: str) -> bytes | None:
        """The manifest stored under a tag or digest."""
        with self.lock:
            found = self.manifests.get((repo, reference))
        return found[1] if found else None

    # --- what was asked -------------------------------------------------------------------

    def seen(self, method: str | None = None, contains: str = "") -> list[Seen]:
        """The requests with this method (any, for None) whose path contains `contains`."""
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and contains in r.path]

    def clear(self) -> None:
        """Forget the requests seen so far."""
        with self.lock:
            self.requests.clear()
            self.token_requests.clear()

    def fault(self, method: str, path: str, status: int = 503, times: int = 1,
              headers: Mapping[str, str] | None = None, cut_after: int | None = None,
              body: bytes = b"") -> Fault:
        """Program a fault (see `Fault`)."""
        found = Fault(method, path, status, dict(headers or {}), times, cut_after, body)
        with self.lock:
            self.faults.append(found)
        return found

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first live fault for this request, counted as used."""
        with self.lock:
            for f in self.faults:
                if f.times > 0 and f.method in ("*", method) and f.path in path:
                    f.times -= 1
                    return f
        return None

    # --- auth -----------------------------------------------------------------------------

    def issue_token(self, user: str | None, scopes: list[str]) -> str:
        """A token granting what `user` (anonymous for None) may do of `scopes`."""
        granted = set()
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            for action in actions.split(","):
                if user is not None or (action == "pull" and self.anonymous_pull):
                    granted.add((name, action))
        token = "tok-" + secrets.token_hex(8)
        with self.lock:
            self.tokens[token] = frozenset(granted)
        return token

    def check_basic(self, header: str) -> str | None:
        """The user a `Basic` header names with the right password, else None."""
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password and user else None

    def allowed(self, header: str, repo: str | None, action: str) -> bool:
        """Whether a request with this Authorization header may do `action` on `repo`."""
        if self.auth is None:
            return True
        if self.auth == "basic":
            return self.check_basic(header) is not None
        if not header.startswith("Bearer "):
            return False
        with self.lock:
            granted = self.tokens.get(header[7:])
        if granted is None:
            return False
        return repo is None or (repo, action) in granted

    def challenge(self, repo: str | None, action: str) -> str:
        """The WWW-Authenticate header for a refused request."""
        if self.auth == "basic":
            return 'Basic realm="fake-registry"'
        scope = f',scope="repository:{repo}:{action}"' if repo else ""
        return f'Bearer realm="{self.url}/token",service="{SERVICE}"{scope}'


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-answer is what some tests do (a manifest too large to
        read, say); anything else is reported."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for "connection refused")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _error(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def _split(path: str) -> tuple[str, str, str] | None:
    """`/v2/<name>/<kind>/<rest>` → (name, kind, rest), kind being manifests, blobs or
    uploads."""
    if not path.startswith("/v2/"):
        return None
    body = path[len("/v2/"):]
    for kind, marker in (("uploads", "/blobs/uploads/"), ("manifests", "/manifests/"),
                         ("blobs", "/blobs/")):
        name, sep, rest = body.partition(marker)
        if sep and name:
            return name, kind, rest
    return None


def _handler(reg: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def handle(self) -> None:
            try:
                first = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                return
            if first == b"\x16":  # a TLS ClientHello: this registry speaks plain HTTP
                with reg.lock:
                    reg.tls_attempts += 1
                return
            super().handle()

        # --- plumbing -----------------------------------------------------------------

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None,
                  length: int | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _route(self) -> None:
            if reg.stopped:
                self.close_connection = True
                return
            body = self._body()
            seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                        len(body))
            route = self.path.split("?", 1)[0]
            if route == "/token":
                with reg.lock:
                    reg.token_requests.append(seen)
                self._token(seen, body)
                return
            with reg.lock:
                reg.requests.append(seen)
            fault = reg.take_fault(self.command, self.path)
            if fault is not None and fault.cut_after is None:
                self._send(fault.status, fault.body or _error("UNAVAILABLE", "fault"),
                           fault.headers)
                return
            parts = _split(route)
            repo = parts[0] if parts else None
            action = "pull" if self.command in ("GET", "HEAD") else "push"
            if route not in ("/v2", "/v2/") and parts is None:
                self._send(404, _error("NAME_UNKNOWN", "no such route"))
                return
            if not reg.allowed(self.headers.get("Authorization", ""), repo, action):
                self._send(401, _error("UNAUTHORIZED", "authentication required"),
                           {"WWW-Authenticate": reg.challenge(repo, action),
                            "Content-Type": "application/json"})
                return
            if parts is None:
                self._send(200, b"{}", {"Docker-Distribution-API-Version": "registry/2.0"})
                return
            name, kind, rest = parts
            getattr(self, f"_{kind}")(name, rest, seen, body, fault)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _route

        # --- token server -------------------------------------------------------------

        def _token(self, seen: Seen, body: bytes) -> None:
            if self.command == "POST":
                form = urllib.parse.parse_qs(body.decode())
                user = reg.identity_tokens.get(form.get("refresh_token", [""])[0])
                if user is None:
                    self._send(401, _error("UNAUTHORIZED", "bad refresh token"))
                    return
                scopes = " ".join(form.get("scope", [])).split()
            else:
                header = self.headers.get("Authorization", "")
                user = reg.check_basic(header) if header else None
                if header and user is None:
                    self._send(401, _error("UNAUTHORIZED", "wrong user name or password"))
                    return
                scopes = seen.query.get("scope", [])
            token = reg.issue_token(user, scopes)
            key = "access_token" if self.command == "POST" else "token"
            self._send(200, json.dumps({key: token, "expires_in": 300}).encode(),
                       {"Content-Type": "application/json"})

        # --- manifests ----------------------------------------------------------------

        def _manifests(self, name: str, ref: str, seen: Seen, body: bytes,
                       fault: Fault | None) -> None:
            if self.command == "PUT":
                media = self.headers.get("Content-Type", OCI_MANIFEST)
                digest = reg.put_manifest(name, None if ref.startswith("sha256:") else ref,
                                          body, media)
                self._send(201, b"", {"Location": f"/v2/{name}/manifests/{digest}",
                                      "Docker-Content-Digest": str(digest)})
                return
            with reg.lock:
                found = reg.manifests.get((name, ref))
            if found is None:
                self._send(404, _error("MANIFEST_UNKNOWN", "manifest unknown"))
                return
            media, data = found
            headers = {"Content-Type": media,
                       "Docker-Content-Digest": str(Digest.of(data))}
            if reg.manifest_without_length and self.command == "GET":
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True
                return
            self._send(200, data, headers)

        # --- blobs --------------------------------------------------------------------

        def _blobs(self, name: str, digest: str, seen: Seen, body: bytes,
                   fault: Fault | None) -> None:
            data = reg.blob(name, digest)
            if data is None:
                self._send(404, _error("BLOB_UNKNOWN", "blob unknown to registry"))
                return
            if reg.redirect_blobs and self.command == "GET":
                self._send(307, b"", {"Location": f"{reg.redirect_blobs}/v2/{name}/blobs/"
                                                  f"{digest}"})
                return
            start = 0
            status = 200
            headers = {"Content-Type": "application/octet-stream",
                       "Docker-Content-Digest": digest, "Accept-Ranges": "bytes"}
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes=") and not reg.ignore_range:
                start = int(wanted[len("bytes="):].split("-", 1)[0])
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            part = data[start:]
            if fault is not None and fault.cut_after is not None:
                self._send(status, part[:fault.cut_after], headers, length=len(part))
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(status, part, headers)

        # --- uploads ------------------------------------------------------------------

        def _uploads(self, name: str, rest: str, seen: Seen, body: bytes,
                     fault: Fault | None) -> None:
            query = seen.query
            if self.command == "POST":
                mount = query.get("mount", [""])[0]
                source = query.get("from", [""])[0]
                if mount and source and reg.allow_mount and reg.blob(source, mount) is not None \
                        and reg.allowed(self.headers.get("Authorization", ""), source, "pull"):
                    reg.put_blob(name, reg.blobs[mount])
                    self._send(201, b"", {"Location": f"/v2/{name}/blobs/{mount}",
                                          "Docker-Content-Digest": mount})
                    return
                upload = secrets.token_hex(8)
                with reg.lock:
                    reg.uploads[upload] = (name, bytearray())
                self._send(202, b"", {"Location": f"/v2/{name}/blobs/uploads/{upload}?_state=s",
                                      "Range": "0-0", "Docker-Upload-UUID": upload})
                return
            upload = rest.split("?", 1)[0]
            with reg.lock:
                found = reg.uploads.get(upload)
            if found is None or found[0] != name:
                self._send(404, _error("BLOB_UPLOAD_UNKNOWN", "blob upload unknown"))
                return
            buffer = found[1]
            if self.command == "PATCH":
                where = self.headers.get("Content-Range")
                if where is not None and int(where.split("-", 1)[0]) != len(buffer):
                    self._send(416, _error("BLOB_UPLOAD_INVALID", "wrong range"))
                    return
                buffer += body
                self._send(202, b"", {"Location": f"/v2/{name}/blobs/uploads/{upload}?_state=p",
                                      "Range": f"0-{len(buffer) - 1}",
                                      "Docker-Upload-UUID": upload})
                return
            if self.command == "PUT":
                buffer += body
                digest = query.get("digest", [""])[0]
                if digest != "sha256:" + hashlib.sha256(buffer).hexdigest():
                    self._send(400, _error("DIGEST_INVALID", "provided digest did not match "
                                                             "uploaded content"))
                    return
                reg.put_blob(name, bytes(buffer))
                with reg.lock:
                    reg.uploads.pop(upload, None)
                self._send(201, b"", {"Location": f"/v2/{name}/blobs/{digest}",
                                      "Docker-Content-Digest": digest})
                return
            self._send(405, _error("UNSUPPORTED", "method not allowed"))

    return Handler
