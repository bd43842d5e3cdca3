"""The token server of the test registry that uses token auth (scripts/registries starts it).

It answers `GET /token?service=S&scope=repository:NAME:ACTIONS…` (Basic auth optional) and the
OAuth2 password grant `POST /token`, as the distribution token spec describes. Policy: the test
user gets every action it asks for on every repository (and the catalog); an anonymous client
gets only `pull`, and only on repositories under `public/`; wrong credentials get 401.

Tokens are ES256 JWTs signed by a self-signed certificate made at first start. The registry
trusts that certificate as its `rootcertbundle`; the certificate rides in the `x5c` header,
which distribution 2.8 verifies against the bundle (the `kid`, a libtrust key ID, is there too).

Run: `python3 tests/registry_tokenserver.py --listen 127.0.0.1:5003 --state DIR --service S
--issuer I --user lbuser --password-file FILE`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

LIFETIME = 300  # seconds a token is good for
USER_ACTIONS = {"repository": {"pull", "push", "delete", "*"}, "registry": {"*"}}
ANONYMOUS_ACTIONS = {"pull"}
PUBLIC_PREFIX = "public/"


@dataclass(frozen=True)
class Scope:
    """One requested `type:name:actions` scope."""

    type: str
    name: str
    actions: tuple[str, ...]


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """The scopes of `scope` parameters; each may hold several, space-separated (OAuth2).

    >>> parse_scopes(["repository:a/b:pull,push"])
    [Scope(type='repository', name='a/b', actions=('pull', 'push'))]
    """
    out = []
    for value in values:
        for text in value.split():
            kind, _, rest = text.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name:
                out.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return out


def grant(scope: Scope, user: str | None) -> tuple[str, ...]:
    """The actions of `scope` this server grants to `user` (None: anonymous)."""
    if user is not None:
        allowed = USER_ACTIONS.get(scope.type, set())
    elif scope.type == "repository" and scope.name.startswith(PUBLIC_PREFIX):
        allowed = ANONYMOUS_ACTIONS
    else:
        allowed = set()
    return tuple(a for a in scope.actions if a in allowed)


def access_claim(scopes: list[Scope], user: str | None) -> list[dict[str, object]]:
    """The JWT `access` claim: one entry per scope with anything granted."""
    out: list[dict[str, object]] = []
    for scope in scopes:
        actions = grant(scope, user)
        if actions:
            out.append({"type": scope.type, "name": scope.name, "actions": list(actions)})
    return out


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key ID libtrust (and so distribution 2.8) gives a public key: SHA-256 of its DER
    SubjectPublicKeyInfo, the first 240 bits in base32, in groups of four joined by colons."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(text[i:i + 4] for i in range(0, len(text), 4))


@dataclass(frozen=True)
class Signer:
    """The issuer's key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def sign(self, claims: dict[str, object]) -> str:
        """A compact ES256 JWS of `claims`, with the certificate in `x5c`."""
        cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "kid": libtrust_key_id(self.key.public_key()),
                  "x5c": [base64.b64encode(cert_der).decode()]}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + b64url(json.dumps(claims, separators=(",", ":")).encode()))
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(),
                                                  ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def make_signer(issuer: str) -> Signer:
    """A new P-256 key and a ten-year self-signed CA certificate for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return Signer(key, cert)


def load_or_make_signer(state: Path, issuer: str) -> Signer:
    """The signer kept in `state` (key.pem 0600, cert.pem), made there at first start."""
    key_path, cert_path = state / "key.pem", state / "cert.pem"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return Signer(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))
    signer = make_signer(issuer)
    state.mkdir(parents=True, exist_ok=True)
    key_pem = signer.key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, signer.cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return signer


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Policy:
    """Who may log in, and what a token says about whom."""

    service: str
    issuer: str
    user: str
    password: str

    def check(self, username: str | None, password: str | None) -> str | None:
        """The user these credentials name (None: anonymous); PermissionError if wrong."""
        if username is None and password is None:
            return None
        if (hmac.compare_digest((username or "").encode(), self.user.encode())
                and hmac.compare_digest((password or "").encode(), self.password.encode())):
            return self.user
        raise PermissionError("wrong credentials")

    def claims(self, service: str, scopes: list[Scope], user: str | None,
               now: int) -> dict[str, object]:
        return {"iss": self.issuer, "sub": user or "", "aud": service, "exp": now + LIFETIME,
                "nbf": now - 1, "iat": now, "jti": secrets.token_hex(16),
                "access": access_claim(scopes, user)}


def basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    """The user and password of an `Authorization: Basic` header, or (None, None)."""
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""  # present but unreadable: wrong credentials
    return user, password


def token_response(token: str, now: int) -> dict[str, object]:
    issued = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return {"token": token, "access_token": token, "expires_in": LIFETIME,
            "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ")}


class TokenHandler(BaseHTTPRequestHandler):
    """GET and POST /token; nothing else."""

    server: TokenServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            return self._send(404, {"error": "not found"})
        query = parse_qs(url.query)
        try:
            user = self.server.policy.check(*basic_credentials(self.headers["Authorization"]))
        except PermissionError:
            return self._unauthorized()
        self._issue(query.get("service", [""])[0], parse_scopes(query.get("scope", [])), user)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode(errors="replace"))
        if urlsplit(self.path).path != "/token":
            return self._send(404, {"error": "not found"})
        if form.get("grant_type", [""])[0] != "password":
            return self._send(400, {"error": "unsupported_grant_type"})
        try:
            user = self.server.policy.check(form.get("username", [""])[0],
                                            form.get("password", [""])[0])
        except PermissionError:
            return self._send(401, {"error": "invalid_grant"})
        self._issue(form.get("service", [""])[0], parse_scopes(form.get("scope", [])), user)

    def _issue(self, service: str, scopes: list[Scope], user: str | None) -> None:
        if service != self.server.policy.service:
            return self._send(400, {"error": f"unknown service {service!r}"})
        now = int(time.time())
        token = self.server.signer.sign(self.server.policy.claims(service, scopes, user, now))
        self._send(200, token_response(token, now))

    def _unauthorized(self) -> None:
        self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong credentials"}]},
                   {"WWW-Authenticate": 'Basic realm="layerbuild test token server"'})

    def _send(self, status: int, body: dict[str, object],
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line only: credentials travel in headers and bodies, never logged.
        sys.stderr.write(f"{self.log_date_time_string()} {self.command} {self.path} {code}\n")


class TokenServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], policy: Policy, signer: Signer) -> None:
        super().__init__(address, TokenHandler)
        self.policy = policy
        self.signer = signer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:5003")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    policy = Policy(args.service, args.issuer, args.user,
                    args.password_file.read_text().strip())
    server = TokenServer((host, int(port)), policy, load_or_make_signer(args.state, args.issuer))
    sys.stderr.write(f"token server listening on {args.listen}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
