"""The OCI distribution client: pull, push, login, on top of one HTTP transport.

`Registry` is a session: its transport pools connections and keeps tokens across the pulls
and pushes of one command (a build's bases, say). Modules: `challenge` and `platforms` (pure),
`hosts` (endpoints, mirrors, TLS policy), `credentials` (Docker's config.json and helpers),
`transport` (HTTP, retries, auth), `client` (one repository's requests), `pull`, `push`.
"""

from __future__ import annotations

from collections.abc import Callable

from layerbuild.events import Events
from layerbuild.image import Image
from layerbuild.reference import Reference
from layerbuild.registry.credentials import Credentials, CredentialStore
from layerbuild.registry.errors import Unauthorized
from layerbuild.registry.hosts import RegistryHosts
from layerbuild.registry.platforms import Platform
from layerbuild.registry.pull import Pulled, Resolved, pull, resolve
from layerbuild.registry.push import Pushed, push
from layerbuild.registry.transport import Transport
from layerbuild.store import Store

__all__ = ["Credentials", "Platform", "Pulled", "Pushed", "Registry", "RegistryHosts"]


class Registry:
    """Pulls, pushes and logins sharing one transport and one set of registry settings."""

    def __init__(self, hosts: RegistryHosts | None = None,
                 credentials: CredentialStore | None = None,
                 notice: Callable[[str], None] | None = None) -> None:
        self.hosts = RegistryHosts.load() if hosts is None else hosts
        self.credentials = credentials or CredentialStore()
        self.transport = Transport(self.credentials, notice=notice)

    def resolve(self, ref: Reference, platform: Platform | None = None) -> Resolved:
        """What `ref` names on its registry now (manifest digest, config), fetching no layer."""
        from layerbuild.registry.client import Repository
        return resolve(Repository(self.transport, self.hosts, ref), ref, platform)

    def pull(self, store: Store, ref: Reference, platform: Platform | None = None,
             events: Events | None = None, names: bool = True) -> Pulled:
        """Pull `ref` into `store` (named by its tag and RepoDigest unless `names` is False)."""
        return pull(store, ref, self.transport, self.hosts, platform, events, names=names)

    def push(self, store: Store, image: Image, ref: Reference, compression: str = "gzip",
             events: Events | None = None) -> Pushed:
        """Push a stored image to `ref`."""
        return push(store, image, ref, self.transport, self.hosts, compression, events)

    def login(self, registry: str, username: str, secret: str) -> str:
        """Check the credentials against the registry, then keep them; returns where."""
        creds = Credentials(username, secret)
        self.transport.use_credentials(registry, creds)
        endpoint = self.hosts.endpoints(registry, pull=False)[-1]
        try:
            self.transport.request(endpoint, "GET", "/v2/", what=registry)
        except Unauthorized as exc:
            raise Unauthorized(f"login failed: {exc}") from None
        return self.credentials.save(registry, creds)

    def logout(self, registry: str) -> bool:
        """Forget the credentials for `registry`; whether there were any."""
        return self.credentials.erase(registry)
