"""HTTP to registries: pooled connections, retries with backoff, and Docker's auth flow.

urllib3 carries the requests (connection pools shared by threads, streamed bodies, timeouts,
the system's CA certificates). On top of it, per request:

- **auth**: a 401 names its challenge; `Bearer` gets a token from the realm for the scopes
  the request needs (with the user's credentials when there are some, anonymously otherwise;
  an identity token is exchanged by OAuth2 POST), `Basic` sends the credentials. Tokens are
  kept per registry and scope set until they expire, so later requests send them first.
- **retries**: connection errors, 408, 429 and 5xx are retried with exponential backoff
  (honouring `Retry-After`); anything else is the caller's answer.
- **plain HTTP** only for insecure registries (localhost, 127.0.0.0/8, and those the config
  marks), and only after HTTPS could not be spoken there, as Docker does.

Credentials go into `Authorization` headers and nowhere else: no message built here contains
a header, a token or a URL's query.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import urllib3
from urllib3.exceptions import HTTPError, ProtocolError

from layerbuild.errors import RegistryError
from layerbuild.registry import challenge as challenges
from layerbuild.registry.challenge import Challenge, Scope
from layerbuild.registry.credentials import Credentials, CredentialStore
from layerbuild.registry.errors import Unauthorized, Unreachable, from_status
from layerbuild.registry.hosts import ConfigError, Endpoint

USER_AGENT = "layerbuild/0.1"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
ATTEMPTS_ENV = "LAYERBUILD_REGISTRY_ATTEMPTS"
"""Overrides how many times a request is tried (`Policy.attempts`)."""
Body = bytes | Callable[[], IO[bytes]] | None
"""A request body: bytes, or a callable that opens it afresh (so a retry can resend it)."""


@dataclass(frozen=True)
class Policy:
    """How hard to try: attempts per request, the first backoff and the longest wait."""

    attempts: int = 5
    backoff: float = 0.5
    max_wait: float = 30.0
    connect_timeout: float = 15.0
    read_timeout: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Policy:
        """The default policy, with `attempts` from $LAYERBUILD_REGISTRY_ATTEMPTS when set
        (e.g. 1 to fail at once on a registry that is down)."""
        text = (os.environ if env is None else env).get(ATTEMPTS_ENV, "").strip()
        if not text:
            return cls()
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"{ATTEMPTS_ENV} must be a whole number of at least 1, "
                              f"not {text!r}")
        return cls(attempts=int(text))


class Transport:
    """Requests to registries, shared by the threads of one pull or push."""

    def __init__(self, credentials: CredentialStore | None = None, policy: Policy | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 notice: Callable[[str], None] | None = None) -> None:
        self.credentials = credentials or CredentialStore()
        self.policy = policy or Policy.from_env()
        self._sleep = sleep
        self._notice = notice or (lambda _m: None)
        timeout = urllib3.Timeout(connect=self.policy.connect_timeout,
                                  read=self.policy.read_timeout)
        self._pool = urllib3.PoolManager(num_pools=16, maxsize=8, block=False, retries=False,
                                         blocksize=1 << 20, timeout=timeout)
        self._unverified = urllib3.PoolManager(  # for registries marked insecure only
            num_pools=4, maxsize=8, block=False, retries=False, blocksize=1 << 20,
            timeout=timeout, cert_reqs="CERT_NONE")
        self._lock = threading.Lock()
        self._challenge: dict[str, Challenge | None] = {}
        self._tokens: dict[tuple[str, tuple[Scope, ...]], tuple[str, float]] = {}
        self._creds: dict[str, Credentials | None] = {}
        self._plain: set[str] = set()

    # --- requests -------------------------------------------------------------------------

    def request(self, endpoint: Endpoint, method: str, path: str, *,
                scopes: Iterable[Scope] = (), headers: Mapping[str, str] | None = None,
                body: Body = None, what: str = "", expect: Iterable[int] = (200,),
                stream: bool = False) -> urllib3.BaseHTTPResponse:
        """Send a request (retried, authenticated) and return an expected answer; any other
        raises its RegistryError. With `stream`, the body is left to be read."""
        scopes = tuple(sorted(set(scopes)))
        expected = set(expect)
        what = what or endpoint.registry
        authed = False
        tries = self._tries()
        while True:
            url = self._url(endpoint, path)
            sent = {"User-Agent": USER_AGENT, **(headers or {})}
            auth = self._auth_header(endpoint, scopes)
            if auth:
                sent["Authorization"] = auth
            try:
                response = self._send(method, url, sent, body, endpoint)
            except HTTPError as exc:
                if url.startswith("https://") and self._fall_back_to_plain(endpoint):
                    continue
                if tries.again(f"{endpoint.host}: {error_reason(exc)}"):
                    continue
                raise Unreachable(f"{what}: cannot reach {endpoint.host}: "
                                  f"{error_reason(exc)}") from None
            status = response.status
            if status in expected:
                if not stream:
                    response.read()
                    response.release_conn()
                return response
            data = _drain(response)
            if status == 401 and not authed:
                authed = True
                if self._learn(endpoint, response.headers.get("WWW-Authenticate", ""),
                               scopes, what):
                    continue
            if status in RETRY_STATUS and tries.again(f"{endpoint.host}: HTTP {status}",
                                                      response.headers.get("Retry-After")):
                continue
            if status == 401 and not endpoint.mirror and \
                    self.credentials_for(endpoint.registry) is None:
                # An anonymous token did not do: as for a Basic challenge, say how to log in.
                raise Unauthorized(f"{what}: authentication required; log in with "
                                   f"`layerbuild login {endpoint.registry}`")
            raise from_status(what, status, data)

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body,
              endpoint: Endpoint) -> urllib3.BaseHTTPResponse:
        opened = body() if callable(body) else None
        try:
            pool = self._pool if endpoint.verify else self._unverified
            return pool.request(
                method, url, headers=headers,
                body=opened if opened is not None else body,  # type: ignore[arg-type]
                preload_content=False, redirect=True, retries=urllib3.Retry(
                    total=None, connect=0, read=0, status=0, other=0, redirect=5,
                    raise_on_redirect=True, remove_headers_on_redirect=["Authorization"]))
        finally:
            if opened is not None:
                opened.close()

    def _url(self, endpoint: Endpoint, path: str) -> str:
        url = path if path.startswith(("https://", "http://")) else endpoint.base + path
        if endpoint.base in self._plain and url.startswith("https://"):
            url = "http://" + url[len("https://"):]
        return url

    def _fall_back_to_plain(self, endpoint: Endpoint) -> bool:
        """Whether an insecure registry's HTTPS failure means: speak HTTP to it (from now on,
        for every thread; as Docker, on any failure of HTTPS there)."""
        if not endpoint.plain_fallback:
            return False
        with self._lock:
            self._plain.add(endpoint.base)
        return True

    def _tries(self) -> _Tries:
        return _Tries(self.policy, self._notice, self._sleep)

    def notice(self, text: str) -> None:
        """Tell the user something worth knowing (a retry, a mirror skipped)."""
        self._notice(text)

    # --- auth -----------------------------------------------------------------------------

    def credentials_for(self, registry: str) -> Credentials | None:
        """The stored credentials for a registry (read once per transport)."""
        with self._lock:
            if registry not in self._creds:
                self._creds[registry] = self.credentials.get(registry)
            return self._creds[registry]

    def use_credentials(self, registry: str, creds: Credentials | None) -> None:
        """Use these credentials for `registry` instead of the stored ones (login)."""
        with self._lock:
            self._creds[registry] = creds
            self._tokens = {k: v for k, v in self._tokens.items() if k[0] != registry}

    def _auth_header(self, endpoint: Endpoint, scopes: tuple[Scope, ...]) -> str | None:
        found = self._challenge.get(endpoint.base)
        if found is None:
            return None
        if found.scheme == "basic":
            creds = self.credentials_for(endpoint.registry) if not endpoint.mirror else None
            if creds is None:
                return None
            raw = f"{creds.username}:{creds.secret}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        token = self._tokens.get((endpoint.base, scopes))
        if token is not None and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        return None

    def _learn(self, endpoint: Endpoint, header: str, scopes: tuple[Scope, ...],
               what: str) -> bool:
        """Act on a 401's challenge; whether the request is worth sending again."""
        offered = {c.scheme: c for c in challenges.parse(header)}
        if "bearer" in offered:
            found = offered["bearer"]
            with self._lock:
                self._challenge[endpoint.base] = found
            token, lifetime = self._fetch_token(endpoint, found, scopes, what)
            with self._lock:
                self._tokens[(endpoint.base, scopes)] = (token, time.monotonic() + lifetime)
            return True
        if "basic" in offered:
            with self._lock:
                self._challenge[endpoint.base] = offered["basic"]
            if endpoint.mirror or self.credentials_for(endpoint.registry) is None:
                raise Unauthorized(f"{what}: authentication required; log in with "
                                   f"`layerbuild login {endpoint.registry}`")
            return True
        return False

    def _fetch_token(self, endpoint: Endpoint, found: Challenge, scopes: tuple[Scope, ...],
                     what: str) -> tuple[str, float]:
        realm = found.params.get("realm", "")
        parsed = urllib.parse.urlsplit(realm)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise RegistryError(f"{what}: the registry's token realm {realm!r} is not a URL")
        creds = None if endpoint.mirror else self.credentials_for(endpoint.registry)
        if parsed.scheme == "http" and creds is not None and not endpoint.plain_fallback:
            raise RegistryError(f"{what}: the registry's token realm is plain HTTP; "
                                "credentials are not sent there")
        service = found.params.get("service")
        asked = [str(s) for s in scopes] or (
            [found.params["scope"]] if found.params.get("scope") else [])
        token_endpoint = Endpoint(f"{parsed.scheme}://{parsed.netloc}", endpoint.registry,
                                  verify=endpoint.verify)
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": USER_AGENT.split("/")[0], "scope": " ".join(asked)}
            if service:
                form["service"] = service
            payload = urllib.parse.urlencode(form).encode()
            answer = self._token_request(token_endpoint, "POST", realm, {
                "Content-Type": "application/x-www-form-urlencoded"}, payload, what)
        else:
            query = [("scope", s) for s in asked]
            if service:
                query.insert(0, ("service", service))
            headers = {}
            if creds is not None:
                query.append(("account", creds.username))
                raw = f"{creds.username}:{creds.secret}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            sep = "&" if parsed.query else "?"
            url = realm + (sep + urllib.parse.urlencode(query) if query else "")
            answer = self._token_request(token_endpoint, "GET", url, headers, None, what)
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{what}: the token server's answer has no token")
        try:
            lifetime = float(answer.get("expires_in") or 60)
        except (TypeError, ValueError):
            lifetime = 60.0
        return token, max(lifetime - 10.0, 5.0)

    def _token_request(self, endpoint: Endpoint, method: str, url: str,
                       headers: dict[str, str], body: bytes | None,
                       what: str) -> dict[str, Any]:
        tries = self._tries()
        while True:
            try:
                response = self._send(method, url, {"User-Agent": USER_AGENT, **headers},
                                      body, endpoint)
            except HTTPError as exc:
                if tries.again(f"token server {endpoint.host}: {error_reason(exc)}"):
                    continue
                raise Unreachable(f"{what}: cannot reach the token server "
                                  f"{endpoint.host}: {error_reason(exc)}") from None
            data = _drain(response, 1 << 20)
            if response.status == 200:
                try:
                    answer = json.loads(data)
                except ValueError:
                    answer = None
                if not isinstance(answer, dict):
                    raise RegistryError(f"{what}: the token server's answer is not JSON")
                return answer
            if response.status in RETRY_STATUS and tries.again(
                    f"token server {endpoint.host}: HTTP {response.status}",
                    response.headers.get("Retry-After")):
                continue
            if response.status in (400, 401, 403):
                raise Unauthorized(f"{what}: unauthorized: the token server refused the "
                                   f"credentials (HTTP {response.status})")
            raise from_status(f"{what} (token server)", response.status, data)


def _drain(response: urllib3.BaseHTTPResponse, limit: int = 64 << 10) -> bytes:
    """Up to `limit` bytes of an answer's body; the connection is let go."""
    try:
        data = response.read(limit + 1)
    except HTTPError:
        response.close()
        return b""
    let_go(response, len(data) <= limit)
    return data[:limit]


def let_go(response: urllib3.BaseHTTPResponse, complete: bool) -> None:
    """Give a connection back to the pool when its answer was read to the end, else close it
    (unread bytes would be taken for the next answer)."""
    if complete:
        response.release_conn()
    else:
        response.close()
        response.release_conn()


def error_reason(exc: HTTPError) -> str:
    """What went wrong with a connection, in a few words (no URL, no header)."""
    reason = getattr(exc, "reason", None) or exc
    text = str(exc.args[0]) if isinstance(exc, ProtocolError) and exc.args else str(reason)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "Temporary failure in name resolution" in text:
        return "no such host"
    text = text.split(": ", 1)[-1] if "<" in text else text
    return text.replace("\n", " ")[:200]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


class _Tries:
    """The attempts of one request: each failure worth retrying waits (exponential backoff,
    or the server's `Retry-After`) until the policy's attempts are spent."""

    def __init__(self, policy: Policy, notice: Callable[[str], None],
                 sleep: Callable[[float], None]) -> None:
        self.policy, self.notice, self.sleep = policy, notice, sleep
        self.attempt = 0

    def again(self, why: str, retry_after: str | None = None) -> bool:
        """Count a failure; wait and say True while attempts are left, else False."""
        self.attempt += 1
        if self.attempt >= self.policy.attempts:
            return False
        wait = min(self.policy.backoff * 2 ** (self.attempt - 1), self.policy.max_wait)
        told = _retry_after(retry_after)
        if told is not None:
            wait = min(max(told, 0.0), self.policy.max_wait)
        self.notice(f"{why}; retrying in {wait:.1f}s")
        self.sleep(wait)
        return True
