"""The transport against a fake registry on 127.0.0.1: Docker's bearer and basic auth flows,
retries that honour Retry-After (with a recording `sleep`, so no test waits), unreachable
registries, the plain-HTTP fallback for insecure registries only, and no secret in any
message."""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeregistry import SERVICE, FakeRegistry, free_port, make_image

from layerbuild.errors import RegistryError
from layerbuild.registry import Registry, challenge
from layerbuild.registry.credentials import Credentials, CredentialStore
from layerbuild.registry.errors import NotFound, Unauthorized, Unreachable
from layerbuild.registry.hosts import Endpoint, RegistryHosts
from layerbuild.registry.transport import Policy, Transport

SECRET = "s3cret-pw"
REPO = "team/app"


class Recorder:
    """A transport's `sleep` and `notice`, recorded."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.notices: list[str] = []


def _transport(tmp_path: Path, registry: str | None = None, creds: Credentials | None = None,
               attempts: int = 3) -> tuple[Transport, Recorder]:
    store = CredentialStore(tmp_path / "docker")
    if registry is not None and creds is not None:
        store.save(registry, creds)
    rec = Recorder()
    policy = Policy(attempts=attempts, backoff=0.5, max_wait=30.0, connect_timeout=5,
                    read_timeout=10)
    return Transport(store, policy, sleep=rec.waits.append, notice=rec.notices.append), rec


def _endpoint(reg: FakeRegistry | str) -> Endpoint:
    host = reg.host if isinstance(reg, FakeRegistry) else reg
    return RegistryHosts({}, frozenset()).endpoints(host)[-1]


@pytest.fixture
def bearer() -> Iterator[FakeRegistry]:
    with FakeRegistry(auth="bearer", users={"me": SECRET}) as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        yield reg


def _manifest(transport: Transport, reg: FakeRegistry, tag: str = "1",
              repo: str = REPO) -> bytes:
    response = transport.request(_endpoint(reg), "GET", f"/v2/{repo}/manifests/{tag}",
                                 scopes=[challenge.pull(repo)], what=f"{repo}:{tag}",
                                 stream=True)
    return bytes(response.read())


def _no_secret(text: str, *tokens: str) -> None:
    assert SECRET not in text
    assert base64.b64encode(f"me:{SECRET}".encode()).decode() not in text
    for token in tokens:
        assert token not in text


# --- bearer -------------------------------------------------------------------------------


def test_bearer_flow(tmp_path: Path, bearer: FakeRegistry) -> None:
    transport, rec = _transport(tmp_path, bearer.host, Credentials("me", SECRET))
    assert _manifest(transport, bearer) == bearer.manifest(REPO, "1")
    first, retried = bearer.seen()
    assert "authorization" not in first.headers
    (token_request,) = bearer.token_requests
    assert token_request.method == "GET"
    assert token_request.query == {"service": [SERVICE], "scope": [f"repository:{REPO}:pull"],
                                   "account": ["me"]}
    assert token_request.headers["authorization"] == "Basic " + base64.b64encode(
        f"me:{SECRET}".encode()).decode()
    token = retried.headers["authorization"].removeprefix("Bearer ")
    assert token in bearer.tokens
    assert bearer.tokens[token] == {(REPO, "pull")}

    # the same scope again: the token goes with the first request, none is asked for
    bearer.clear()
    transport.request(_endpoint(bearer), "HEAD", f"/v2/{REPO}/manifests/1",
                      scopes=[challenge.pull(REPO)])
    (only,) = bearer.seen()
    assert only.headers["authorization"] == f"Bearer {token}"
    assert bearer.token_requests == []

    # another scope: a token of its own
    bearer.clear()
    transport.request(_endpoint(bearer), "POST", f"/v2/{REPO}/blobs/uploads/",
                      scopes=[challenge.push(REPO)], body=b"", expect=(202,))
    (asked,) = bearer.token_requests
    assert asked.query["scope"] == [f"repository:{REPO}:pull,push"]
    assert bearer.seen()[-1].headers["authorization"] != f"Bearer {token}"
    assert rec.waits == [] and rec.notices == []


def test_tokens_stay_with_their_registry(tmp_path: Path, bearer: FakeRegistry) -> None:
    transport, _ = _transport(tmp_path, bearer.host, Credentials("me", SECRET))
    _manifest(transport, bearer)
    token = bearer.seen()[-1].headers["authorization"]
    with FakeRegistry(auth="bearer", users={"me": SECRET}) as other:
        other.put_image(REPO, "1", make_image([{"a": b"a"}]))
        _manifest(transport, other)
        assert "authorization" not in other.seen()[0].headers
        assert all(r.headers.get("authorization") != token for r in other.seen())
        assert all(r.headers.get("authorization") != token for r in other.token_requests)


def test_redirected_blob_gets_no_authorization(tmp_path: Path, bearer: FakeRegistry) -> None:
    image = make_image([{"a": b"a"}])
    with FakeRegistry() as storage:
        storage.put_image(REPO, None, image)
        bearer.redirect_blobs = storage.url
        transport, _ = _transport(tmp_path, bearer.host, Credentials("me", SECRET))
        digest = image.layer_digests[0]
        response = transport.request(_endpoint(bearer), "GET", f"/v2/{REPO}/blobs/{digest}",
                                     scopes=[challenge.pull(REPO)], stream=True)
        assert response.read() == image.layers[0]
        assert bearer.seen()[-1].headers["authorization"].startswith("Bearer ")
        (fetched,) = storage.seen()
        assert "authorization" not in fetched.headers


def test_anonymous_token(tmp_path: Path, bearer: FakeRegistry) -> None:
    transport, _ = _transport(tmp_path)
    assert _manifest(transport, bearer) == bearer.manifest(REPO, "1")
    (token_request,) = bearer.token_requests
    assert token_request.query == {"service": [SERVICE], "scope": [f"repository:{REPO}:pull"]}
    assert "authorization" not in token_request.headers


def test_anonymous_refused_is_unauthorized(tmp_path: Path) -> None:
    with FakeRegistry(auth="bearer", anonymous_pull=False) as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        transport, rec = _transport(tmp_path)
        with pytest.raises(Unauthorized) as info:
            _manifest(transport, reg)
    assert str(info.value) == (f"{REPO}:1: authentication required; log in with "
                               f"`layerbuild login {reg.host}`")
    assert len(reg.token_requests) == 1 and rec.waits == []


def test_wrong_credentials_bearer(tmp_path: Path, bearer: FakeRegistry) -> None:
    transport, rec = _transport(tmp_path, bearer.host, Credentials("me", "wrong-" + SECRET))
    with pytest.raises(Unauthorized) as info:
        _manifest(transport, bearer)
    message = str(info.value)
    assert message == (f"{REPO}:1: unauthorized: the token server refused the credentials "
                       "(HTTP 401)")
    _no_secret(message)
    assert "wrong-" not in message
    for notice in rec.notices:
        _no_secret(notice)


def test_identity_token_is_exchanged(tmp_path: Path) -> None:
    with FakeRegistry(auth="bearer", identity_tokens={"refresh-me": "me"}) as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        transport, _ = _transport(tmp_path, reg.host, Credentials("<token>", "refresh-me"))
        transport.request(_endpoint(reg), "POST", f"/v2/{REPO}/blobs/uploads/",
                          scopes=[challenge.push(REPO)], body=b"", expect=(202,))
        (asked,) = reg.token_requests
        assert asked.method == "POST"
        assert asked.headers["content-type"] == "application/x-www-form-urlencoded"
        assert "authorization" not in asked.headers
        token = reg.seen()[-1].headers["authorization"].removeprefix("Bearer ")
        assert reg.tokens[token] == {(REPO, "pull"), (REPO, "push")}


# --- basic --------------------------------------------------------------------------------


def test_basic_flow(tmp_path: Path) -> None:
    with FakeRegistry(auth="basic", users={"me": SECRET}) as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        transport, _ = _transport(tmp_path, reg.host, Credentials("me", SECRET))
        assert _manifest(transport, reg) == reg.manifest(REPO, "1")
        first, retried = reg.seen()
        assert "authorization" not in first.headers
        assert retried.headers["authorization"] == "Basic " + base64.b64encode(
            f"me:{SECRET}".encode()).decode()
        assert reg.token_requests == []
        reg.clear()
        _manifest(transport, reg)
        (only,) = reg.seen()  # sent with the first request from now on
        assert only.headers["authorization"].startswith("Basic ")


def test_basic_wrong_and_missing_credentials(tmp_path: Path) -> None:
    with FakeRegistry(auth="basic", users={"me": SECRET}) as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        transport, _ = _transport(tmp_path / "a", reg.host, Credentials("me", "nope"))
        with pytest.raises(Unauthorized) as info:
            _manifest(transport, reg)
        assert str(info.value) == f"{REPO}:1: unauthorized: authentication required (HTTP 401)"
        assert "nope" not in str(info.value)
        transport, _ = _transport(tmp_path / "b")
        with pytest.raises(Unauthorized) as info:
            _manifest(transport, reg)
        assert str(info.value) == (f"{REPO}:1: authentication required; log in with "
                                   f"`layerbuild login {reg.host}`")


# --- retries ------------------------------------------------------------------------------


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    with FakeRegistry() as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        reg.fault("GET", "/manifests/1", 503, times=1, headers={"Retry-After": "3"})
        reg.fault("GET", "/manifests/1", 429, times=1, headers={"Retry-After": "7"})
        transport, rec = _transport(tmp_path, attempts=5)
        assert _manifest(transport, reg) == reg.manifest(REPO, "1")
    assert rec.waits == [3.0, 7.0]
    assert rec.notices == [f"{reg.host}: HTTP 503; retrying in 3.0s",
                           f"{reg.host}: HTTP 429; retrying in 7.0s"]
    assert len(reg.seen("GET", "/manifests/1")) == 3


def test_backoff_without_retry_after(tmp_path: Path) -> None:
    with FakeRegistry() as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        reg.fault("GET", "/manifests/1", 502, times=3)
        transport, rec = _transport(tmp_path, attempts=5)
        _manifest(transport, reg)
    assert rec.waits == [0.5, 1.0, 2.0]


def test_retry_after_bounds(tmp_path: Path) -> None:
    with FakeRegistry() as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        soon = email.utils.formatdate(time.time() + 20, usegmt=True)
        reg.fault("GET", "/manifests/1", 429, headers={"Retry-After": "3600"})
        reg.fault("GET", "/manifests/1", 429, headers={"Retry-After": soon})
        reg.fault("GET", "/manifests/1", 429, headers={"Retry-After": "soon"})
        transport, rec = _transport(tmp_path, attempts=5)
        _manifest(transport, reg)
    assert rec.waits[0] == 30.0  # capped at the policy's longest wait
    assert 17 <= rec.waits[1] <= 20
    assert rec.waits[2] == 2.0  # unreadable: the backoff's


def test_retries_run_out(tmp_path: Path) -> None:
    with FakeRegistry() as reg:
        reg.put_image(REPO, "1", make_image([{"a": b"a"}]))
        reg.fault("GET", "/manifests/1", 503, times=99)
        transport, rec = _transport(tmp_path, attempts=3)
        with pytest.raises(RegistryError) as info:
            _manifest(transport, reg)
    assert str(info.value) == f"{REPO}:1: unavailable: fault (HTTP 503)"
    assert len(rec.waits) == 2 and len(reg.seen()) == 3


def test_not_found_is_not_retried(tmp_path: Path) -> None:
    with FakeRegistry() as reg:
        transport, rec = _transport(tmp_path)
        with pytest.raises(NotFound) as info:
            _manifest(transport, reg, "nope")
    assert str(info.value) == f"{REPO}:nope: manifest unknown (HTTP 404)"
    assert rec.waits == [] and len(reg.seen()) == 1


def test_connection_refused(tmp_path: Path) -> None:
    port = free_port()
    transport, rec = _transport(tmp_path, attempts=3)
    with pytest.raises(Unreachable) as info:
        transport.request(_endpoint(f"127.0.0.1:{port}"), "GET", "/v2/", what="ping")
    assert str(info.value) == f"ping: cannot reach 127.0.0.1:{port}: connection refused"
    assert rec.waits == [0.5, 1.0]
    assert all("connection refused" in n for n in rec.notices)


def test_messages_hold_no_secret(tmp_path: Path, bearer: FakeRegistry) -> None:
    transport, rec = _transport(tmp_path, bearer.host, Credentials("me", SECRET))
    _manifest(transport, bearer)
    token = bearer.seen()[-1].headers["authorization"].removeprefix("Bearer ")
    bearer.fault("GET", "/manifests/1", 500, times=99, headers={"Retry-After": "1"})
    with pytest.raises(RegistryError) as info:
        _manifest(transport, bearer)
    texts = [str(info.value), *rec.notices]
    bearer.stop()
    with pytest.raises(Unreachable) as gone:
        _manifest(transport, bearer)
    texts += [str(gone.value), *rec.notices]
    for text in texts:
        _no_secret(text, token)
        assert "\n" not in text


# --- plain HTTP ---------------------------------------------------------------------------


def test_plain_http_fallback_for_insecure_registries(tmp_path: Path) -> None:
    with FakeRegistry() as reg:
        endpoint = _endpoint(reg)
        assert endpoint.base.startswith("https://") and endpoint.plain_fallback
        transport, rec = _transport(tmp_path)
        transport.request(endpoint, "GET", "/v2/")
        transport.request(endpoint, "GET", "/v2/")
        assert reg.tls_attempts == 1  # tried once, then plain HTTP from then on
        assert len(reg.seen("GET", "/v2/")) == 2
        assert rec.waits == []


def test_no_plain_http_for_secure_registries(tmp_path: Path) -> None:
    with FakeRegistry() as reg:
        endpoint = Endpoint(f"https://{reg.host}", "registry.example", verify=True,
                            plain_fallback=False)
        transport, rec = _transport(tmp_path, attempts=2)
        with pytest.raises(Unreachable, match=f"cannot reach {reg.host}"):
            transport.request(endpoint, "GET", "/v2/")
        assert reg.tls_attempts == 2
        assert reg.seen() == []  # nothing went in plain text
        assert rec.waits == [0.5]


# --- login --------------------------------------------------------------------------------


def test_login_checks_then_keeps(tmp_path: Path, bearer: FakeRegistry) -> None:
    store = CredentialStore(tmp_path / "docker")
    notices: list[str] = []
    session = Registry(RegistryHosts({}, frozenset()), store, notice=notices.append)
    with pytest.raises(Unauthorized) as info:
        session.login(bearer.host, "me", "wrong")
    assert str(info.value).startswith("login failed: ")
    assert "wrong" not in str(info.value)
    assert not store.path.exists()  # nothing kept
    assert session.login(bearer.host, "me", SECRET) == str(store.path)
    assert store.get(bearer.host) == Credentials("me", SECRET)
    (asked,) = bearer.token_requests[-1:]
    assert asked.query["account"] == ["me"]
    assert session.logout(bearer.host) is True
    assert store.get(bearer.host) is None
    assert session.logout(bearer.host) is False
    for notice in notices:
        _no_secret(notice)
