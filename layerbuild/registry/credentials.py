"""Registry credentials where Docker keeps them: `$DOCKER_CONFIG/config.json`.

Read as Docker reads it: `credHelpers[registry]`, else `credsStore`, else `auths[registry]`
(base64 `user:password` in `auth`, or `username`/`password`; `identitytoken` for an OAuth2
refresh token). Docker Hub is keyed `https://index.docker.io/v1/`. `login` and `logout`
write the same file (0600, atomically, keeping every other key) or go through the helper.
This file is the only place layerbuild writes a secret.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbuild.errors import LayerbuildError
from layerbuild.fsutil import write_atomic
from layerbuild.reference import DOCKER_HUB

HUB_KEY = "https://index.docker.io/v1/"
_HELPER_TIMEOUT = 60


class CredentialsError(LayerbuildError):
    """The credentials file or a credential helper failed."""


@dataclass(frozen=True)
class Credentials:
    """A user name and secret for one registry (an identity token when `username` is
    `<token>`, as Docker's helpers return it)."""

    username: str
    secret: str

    @property
    def identity_token(self) -> str | None:
        """The OAuth2 refresh token, for credentials that are one."""
        return self.secret if self.username == "<token>" else None

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(username={self.username!r}, secret=<hidden>)"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$DOCKER_CONFIG`, else `~/.docker`."""
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".docker"


def key_for(registry: str) -> str:
    """The key a registry's entry has in config.json."""
    return HUB_KEY if registry in (DOCKER_HUB, "index.docker.io") else registry


class CredentialStore:
    """The credentials of one Docker config directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = config_dir() if directory is None else directory
        self.path = self.directory / "config.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CredentialsError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"{self.path}: expected a JSON object")
        return data

    def _helper(self, config: dict[str, Any], registry: str) -> str | None:
        helpers = config.get("credHelpers") or {}
        name = helpers.get(key_for(registry)) or helpers.get(registry) or config.get(
            "credsStore")
        return str(name) if name else None

    def get(self, registry: str) -> Credentials | None:
        """The credentials for `registry`, or None (anonymous)."""
        config = self._read()
        key = key_for(registry)
        helper = self._helper(config, registry)
        if helper:
            return _helper_get(helper, key)
        auths = config.get("auths") or {}
        entry = auths.get(key) or auths.get(registry) or _by_host(auths, registry)
        if not isinstance(entry, dict):
            return None
        if entry.get("identitytoken"):
            return Credentials("<token>", str(entry["identitytoken"]))
        if entry.get("auth"):
            try:
                user, sep, secret = base64.b64decode(str(entry["auth"])).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise CredentialsError(f"{self.path}: the entry for {key} is not "
                                       "base64 user:password") from None
            if not sep:
                raise CredentialsError(f"{self.path}: the entry for {key} has no password")
            return Credentials(user, secret)
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
        return None

    def save(self, registry: str, creds: Credentials) -> str:
        """Keep `creds` for `registry`; returns where (the file, or the helper's name)."""
        config = self._read()
        key = key_for(registry)
        helper = self._helper(config, registry)
        if helper:
            _helper_run(helper, "store", json.dumps(
                {"ServerURL": key, "Username": creds.username, "Secret": creds.secret}))
            return f"docker-credential-{helper}"
        auths = config.setdefault("auths", {})
        token = base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()
        auths[key] = {"auth": token}
        self._write(config)
        return str(self.path)

    def erase(self, registry: str) -> bool:
        """Forget the credentials for `registry`; whether there were any."""
        config = self._read()
        key = key_for(registry)
        helper = self._helper(config, registry)
        if helper:
            _helper_run(helper, "erase", key)
            return True
        auths = config.get("auths") or {}
        gone = [name for name in auths if name == key or _host(name) == registry]  # as `get`
        for name in gone:
            del auths[name]
        if gone:
            self._write(config)
        return bool(gone)

    def _write(self, config: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps(config, indent="\t").encode() + b"\n"
        write_atomic(self.path, data, mode=0o600)


def _host(key: str) -> str:
    return key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]


def _by_host(auths: Mapping[str, Any], registry: str) -> Any:
    for key, entry in auths.items():
        if _host(key) == registry:
            return entry
    return None


def _helper_program(helper: str) -> str:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise CredentialsError(f"credential helper docker-credential-{helper} is not "
                               "installed (named in the Docker config)")
    return program


def _helper_run(helper: str, action: str, stdin: str) -> str:
    program = _helper_program(helper)
    try:
        done = subprocess.run([program, action], input=stdin.encode(), capture_output=True,
                              timeout=_HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialsError(f"docker-credential-{helper} {action} failed: {exc}") from None
    out = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        if action == "get" and "credentials not found" in out.lower():
            return ""
        said = (out or done.stderr.decode("utf-8", "replace")).strip().splitlines()
        raise CredentialsError(f"docker-credential-{helper} {action} failed: "
                               f"{said[-1] if said else f'exit {done.returncode}'}")
    return out


def _helper_get(helper: str, key: str) -> Credentials | None:
    out = _helper_run(helper, "get", key)
    if not out:
        return None
    try:
        data = json.loads(out)
        return Credentials(str(data["Username"]), str(data["Secret"]))
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"docker-credential-{helper} get: unreadable answer") from None
