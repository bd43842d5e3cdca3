"""The token server of the test registries: its policy, its tokens, and its HTTP answers."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from registry_tokenserver import (
    Policy,
    Scope,
    TokenServer,
    grant,
    libtrust_key_id,
    load_or_make_signer,
    parse_scopes,
)

SERVICE, ISSUER = "svc", "iss"


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode(token: str) -> tuple[dict[str, object], dict[str, object], bytes, bytes]:
    head, claims, sig = token.split(".")
    return json.loads(unb64(head)), json.loads(unb64(claims)), f"{head}.{claims}".encode(), \
        unb64(sig)


def test_scopes_parse_with_slashes_and_several_per_parameter() -> None:
    assert parse_scopes(["repository:a/b/c:pull,push registry:catalog:*", "bad", "x::pull"]) \
        == [Scope("repository", "a/b/c", ("pull", "push")), Scope("registry", "catalog", ("*",))]


@pytest.mark.parametrize(("scope", "user", "granted"), [
    ("repository:any/repo:pull,push", "lbuser", ("pull", "push")),
    ("repository:any/repo:*", "lbuser", ("*",)),
    ("registry:catalog:*", "lbuser", ("*",)),
    ("repository:public/x:pull,push", None, ("pull",)),
    ("repository:private/x:pull", None, ()),
    ("repository:publicx:pull", None, ()),
    ("registry:catalog:*", None, ()),
])
def test_policy(scope: str, user: str | None, granted: tuple[str, ...]) -> None:
    assert grant(parse_scopes([scope])[0], user) == granted


def test_tokens_are_es256_signed_by_the_certificate_in_x5c(tmp_path: Path) -> None:
    signer = load_or_make_signer(tmp_path, ISSUER)
    assert oct((tmp_path / "key.pem").stat().st_mode & 0o777) == "0o600"
    assert load_or_make_signer(tmp_path, ISSUER).cert == signer.cert  # kept, not made again
    header, claims, signed, sig = decode(signer.sign({"iss": ISSUER}))
    assert header["alg"] == "ES256" and claims == {"iss": ISSUER}
    x5c = header["x5c"]
    assert isinstance(x5c, list)
    assert base64.b64decode(x5c[0]) == signer.cert.public_bytes(serialization.Encoding.DER)
    public = signer.cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    public.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    kid = header["kid"]
    assert kid == libtrust_key_id(public) and len(str(kid).split(":")) == 12


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    policy = Policy(SERVICE, ISSUER, "lbuser", "secret")
    srv = TokenServer(("127.0.0.1", 0), policy, load_or_make_signer(tmp_path, ISSUER))
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/token"
    srv.shutdown()
    srv.server_close()


def fetch(url: str, user: str | None = None, password: str = "secret",
          form: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    data = "&".join(f"{k}={v}" for k, v in form.items()).encode() if form else None
    req = urllib.request.Request(url, data=data)
    if user is not None:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_get_grants_by_who_asks(server: str) -> None:
    url = f"{server}?service={SERVICE}&scope=repository:public/a:pull,push&scope=repository:b:pull"
    status, body = fetch(url, "lbuser")
    assert status == 200 and body["token"] == body["access_token"] and body["expires_in"] == 300
    _, claims, _, _ = decode(str(body["token"]))
    assert (claims["iss"], claims["aud"], claims["sub"]) == (ISSUER, SERVICE, "lbuser")
    assert claims["access"] == [
        {"type": "repository", "name": "public/a", "actions": ["pull", "push"]},
        {"type": "repository", "name": "b", "actions": ["pull"]}]
    status, body = fetch(url)
    assert status == 200
    assert decode(str(body["token"]))[1]["access"] == [
        {"type": "repository", "name": "public/a", "actions": ["pull"]}]


def test_wrong_credentials_and_unknown_services_are_refused(server: str) -> None:
    assert fetch(f"{server}?service={SERVICE}", "lbuser", "wrong")[0] == 401
    assert fetch(f"{server}?service={SERVICE}", "other")[0] == 401
    assert fetch(f"{server}?service=elsewhere", "lbuser")[0] == 400


def test_post_takes_the_oauth2_password_grant(server: str) -> None:
    form = {"grant_type": "password", "username": "lbuser", "password": "secret",
            "service": SERVICE, "scope": "repository:a:push", "client_id": "test"}
    status, body = fetch(server, form=form)
    assert status == 200
    assert decode(str(body["access_token"]))[1]["access"] == [
        {"type": "repository", "name": "a", "actions": ["push"]}]
    assert fetch(server, form={**form, "password": "wrong"})[0] == 401
    assert fetch(server, form={**form, "grant_type": "refresh_token"})[0] == 400
