"""One repository on one registry: the distribution API's requests, as plain calls.

    GET/HEAD /v2/<path>/manifests/<tag|digest>       PUT for a push (last)
    GET/HEAD /v2/<path>/blobs/<digest>               streamed, resumed with Range
    POST     /v2/<path>/blobs/uploads/[?mount=&from=] then PATCH chunks, PUT ?digest=

Pulls try the registry's mirrors first (any failure of a mirror moves on to the next, then to
the registry itself, as Docker does); pushes go to the registry only.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from urllib3.exceptions import HTTPError

from layerbuild.digest import CHUNK, Digest
from layerbuild.errors import FormatError, RegistryError
from layerbuild.image import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from layerbuild.reference import Reference
from layerbuild.registry import challenge
from layerbuild.registry.errors import NotFound, Unreachable
from layerbuild.registry.hosts import Endpoint, RegistryHosts
from layerbuild.registry.transport import Transport, error_reason, let_go

MANIFEST_LIMIT = 4 << 20
"""Largest manifest or index read (distribution refuses to store larger ones)."""
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+prettyjws",
           "application/vnd.docker.distribution.manifest.v1+json")
RESUMES = 5
"""How many times one blob download picks up again after a cut connection."""


@dataclass(frozen=True)
class Fetched:
    """A manifest as the registry sent it."""

    data: bytes
    media_type: str
    digest: Digest


class Repository:
    """Requests about one repository (`ref`'s), through one transport."""

    def __init__(self, transport: Transport, hosts: RegistryHosts, ref: Reference,
                 push: bool = False) -> None:
        self.transport = transport
        self.ref = ref
        self.name = ref.path
        self.endpoints = hosts.endpoints(ref.domain, pull=not push)
        self.endpoint = self.endpoints[-1]
        self.scope = challenge.push(self.name) if push else challenge.pull(self.name)

    # --- manifests ------------------------------------------------------------------------

    def manifest(self, reference: str, what: str) -> Fetched:
        """Fetch a manifest or index by tag or digest (mirrors first), checked: size, media
        type, and its digest when `reference` is one."""
        errors: list[RegistryError] = []
        for endpoint in self.endpoints:
            try:
                fetched = self._manifest_from(endpoint, reference, what)
            except RegistryError as exc:
                if not endpoint.mirror:
                    raise
                errors.append(exc)
                self.transport.notice(f"mirror {endpoint.host}: {exc}; trying the next")
                continue
            self.endpoint = endpoint  # the blobs come from where the manifest came
            return fetched
        raise errors[-1]  # pragma: no cover - the registry itself is always last

    def _manifest_from(self, endpoint: Endpoint, reference: str, what: str) -> Fetched:
        response = self.transport.request(
            endpoint, "GET", f"/v2/{self.name}/manifests/{reference}", scopes=[self.scope],
            headers={"Accept": ACCEPT}, what=what, stream=True)
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > MANIFEST_LIMIT:
            let_go(response, False)
            raise FormatError(f"{what}: the manifest is {int(length)} bytes, over the "
                              f"{MANIFEST_LIMIT}-byte limit")
        try:
            data = response.read(MANIFEST_LIMIT + 1)
        except HTTPError as exc:
            let_go(response, False)
            raise Unreachable(f"{what}: the manifest could not be read: "
                              f"{error_reason(exc)}") from None
        let_go(response, len(data) <= MANIFEST_LIMIT)
        if len(data) > MANIFEST_LIMIT:
            raise FormatError(f"{what}: the manifest is over the {MANIFEST_LIMIT}-byte limit")
        media = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        if media in SCHEMA1:
            raise FormatError(f"{what}: the registry serves a schema 1 manifest, which "
                              "layerbuild does not support (push it again with a current client)")
        digest = Digest.of(data)
        if reference.startswith("sha256:") and str(digest) != reference:
            raise FormatError(f"{what}: the manifest's digest is {digest}, not {reference}")
        return Fetched(data, media, digest)

    def put_manifest(self, reference: str, data: bytes, media_type: str, what: str) -> Digest:
        """Upload a manifest under a tag or its digest; returns its digest."""
        self.transport.request(
            self.endpoint, "PUT", f"/v2/{self.name}/manifests/{reference}",
            scopes=[self.scope], headers={"Content-Type": media_type,
                                          "Content-Length": str(len(data))},
            body=data, what=what, expect=(200, 201, 202))
        return Digest.of(data)

    # --- blobs ----------------------------------------------------------------------------

    def open_blob(self, digest: Digest, size: int, what: str) -> BlobReader:
        """A reader of a blob's bytes, resuming after a cut connection."""
        return BlobReader(self, digest, size, what)

    def read_small_blob(self, digest: Digest, size: int, what: str,
                        limit: int = 16 << 20) -> bytes:
        """A config-sized blob's bytes, checked against its digest and size."""
        if size > limit:
            raise FormatError(f"{what}: {size} bytes, over the {limit}-byte limit")
        with self.open_blob(digest, size, what) as blob:
            data = blob.read(size + 1)
        if len(data) != size:
            raise FormatError(f"{what}: {len(data)} bytes, expected {size}")
        if Digest.of(data) != digest:
            raise FormatError(f"{what}: its bytes do not match its digest {digest}")
        return data

    def has_blob(self, digest: Digest, what: str) -> bool:
        """Whether the repository has the blob."""
        try:
            self.transport.request(self.endpoint, "HEAD", f"/v2/{self.name}/blobs/{digest}",
                                   scopes=[self.scope], what=what)
        except NotFound:
            return False
        return True

    def start_upload(self, what: str, mount: Digest | None = None,
                     source: str | None = None) -> str | None:
        """Begin an upload; None when `mount` was mounted from repository `source` instead.
        Returns the upload's location."""
        path = f"/v2/{self.name}/blobs/uploads/"
        scopes = [self.scope]
        if mount is not None and source is not None:
            path += "?" + urllib.parse.urlencode({"mount": str(mount), "from": source})
            scopes.append(challenge.pull(source))
        response = self.transport.request(self.endpoint, "POST", path, scopes=scopes,
                                          headers={"Content-Length": "0"}, body=b"",
                                          what=what, expect=(201, 202))
        if response.status == 201:
            return None
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"{what}: the registry started an upload without a Location")
        return self._absolute(location)

    def upload(self, location: str, size: int, opener: Callable[[int, int], IO[bytes]],
               digest: Digest, what: str, chunk: int,
               progress: Callable[[int], None]) -> None:
        """Send a blob to an upload: one PUT when it fits `chunk`, else PATCHes of `chunk`
        bytes and a closing PUT. `opener(offset, length)` opens a part afresh."""
        scopes = [self.scope]
        if size <= chunk:
            self.transport.request(
                self.endpoint, "PUT", _with_query(location, digest=str(digest)),
                scopes=scopes, headers={"Content-Type": "application/octet-stream",
                                        "Content-Length": str(size)},
                body=lambda: opener(0, size), what=what, expect=(201,))
            progress(size)
            return
        offset = 0
        while offset < size:
            length = min(chunk, size - offset)
            start = offset
            response = self.transport.request(
                self.endpoint, "PATCH", location, scopes=scopes,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(length),
                         "Content-Range": f"{start}-{start + length - 1}"},
                body=_part(opener, start, length), what=what, expect=(202,))
            location = self._absolute(response.headers.get("Location") or location)
            offset += length
            progress(offset)
        self.transport.request(self.endpoint, "PUT", _with_query(location, digest=str(digest)),
                               scopes=scopes, headers={"Content-Length": "0"}, body=b"",
                               what=what, expect=(201,))

    def _absolute(self, location: str) -> str:
        return urllib.parse.urljoin(self.endpoint.base + "/", location)


class BlobReader:
    """A blob's bytes from the registry, at most its stated size; a cut connection is picked
    up again with a `Range` request (or, where the registry ignores ranges, by skipping what
    was read)."""

    def __init__(self, repo: Repository, digest: Digest, size: int, what: str) -> None:
        self.repo, self.digest, self.size, self.what = repo, digest, size, what
        self.offset = 0
        self.resumes = 0
        self._response = self._open(0)

    def _open(self, offset: int) -> object:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.repo.transport.request(
            self.repo.endpoint, "GET", f"/v2/{self.repo.name}/blobs/{self.digest}",
            scopes=[self.repo.scope], headers=headers, what=self.what, expect=(200, 206),
            stream=True)
        if offset and response.status == 200:  # no ranges here: skip what we have
            skip = offset
            while skip:
                try:
                    got = response.read(min(skip, CHUNK), decode_content=False)
                except HTTPError:
                    break  # cut again: the next read finds it broken and resumes
                if not got:
                    break
                skip -= len(got)
        return response

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all that is left for -1); b"" at the end."""
        left = self.size - self.offset
        if n < 0 or n > left:
            n = left + (1 if n < 0 or n > left else 0)  # one more, to see an overlong blob
        if n <= 0:
            return b""
        while True:
            try:
                data = self._response.read(n, decode_content=False)  # type: ignore[attr-defined]
            except HTTPError as exc:
                data = b""
                reason = error_reason(exc)
            else:
                reason = "the connection closed early"
            if data:
                self.offset += len(data)
                if self.offset > self.size:
                    raise FormatError(f"{self.what}: the registry sent more than its "
                                      f"{self.size} bytes")
                return data
            if self.offset >= self.size:
                return b""
            self._resume(reason)

    def _resume(self, reason: str) -> None:
        self.resumes += 1
        self._close_response()
        if self.resumes > RESUMES:
            raise Unreachable(f"{self.what}: the download broke off {RESUMES + 1} times "
                              f"({reason})")
        self.repo.transport.notice(f"{self.what}: resuming at byte {self.offset} ({reason})")
        self._response = self._open(self.offset)

    def _close_response(self) -> None:
        with contextlib.suppress(HTTPError, OSError):
            let_go(self._response, self.offset >= self.size)  # type: ignore[arg-type]

    def close(self) -> None:
        """Let the connection go."""
        self._close_response()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _part(opener: Callable[[int, int], IO[bytes]], start: int,
          length: int) -> Callable[[], IO[bytes]]:
    return lambda: opener(start, length)


def _with_query(url: str, **params: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + urllib.parse.urlencode(params)
