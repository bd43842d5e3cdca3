"""Where a registry is reached: its endpoints, mirrors and TLS policy, from the config files.

`/etc/layerbuild/registries.toml` and `$XDG_CONFIG_HOME/layerbuild/registries.toml` (the
user's entries win; `LAYERBUILD_REGISTRIES_CONFIG` names one file instead of both):

    [registry."docker.io"]
    mirrors = ["https://mirror.example.com", "http://127.0.0.1:5000"]

    [registry."registry.internal:5000"]
    insecure = true          # HTTPS without verification, or plain HTTP

As Docker's `registry-mirrors`, mirrors serve pulls only, are tried in order, and the registry
itself is tried after them. `localhost` and 127.0.0.0/8 are insecure by default, as in Docker.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbuild.errors import LayerbuildError
from layerbuild.reference import DOCKER_HUB

SYSTEM_CONFIG = Path("/etc/layerbuild/registries.toml")
HUB_ENDPOINT = "registry-1.docker.io"


class ConfigError(LayerbuildError):
    """A registries.toml that cannot be read."""


@dataclass(frozen=True)
class Endpoint:
    """One place to send a registry's requests."""

    base: str
    """`https://host[:port]` or `http://host[:port]`, no trailing slash."""
    registry: str
    """The registry's name as references spell it (credentials are looked up by it)."""
    mirror: bool = False
    verify: bool = True
    """Whether TLS certificates are checked."""
    plain_fallback: bool = False
    """Whether plain HTTP is tried when HTTPS cannot be spoken (insecure registries)."""

    @property
    def host(self) -> str:
        """`host[:port]` of the base URL."""
        return self.base.split("://", 1)[1]


@dataclass(frozen=True)
class RegistryHosts:
    """The registry settings in force: per registry, its mirrors and whether it is insecure."""

    mirrors: Mapping[str, tuple[str, ...]]
    insecure: frozenset[str]

    @classmethod
    def parse(cls, documents: Sequence[tuple[str, Mapping[str, Any]]]) -> RegistryHosts:
        """Settings from parsed TOML documents (later ones win), each named for errors."""
        mirrors: dict[str, tuple[str, ...]] = {}
        insecure: set[str] = set()
        for where, doc in documents:
            if set(doc) - {"registry"}:
                raise ConfigError(f"{where}: unknown key {sorted(set(doc) - {'registry'})[0]!r}")
            section = doc.get("registry", {})
            if not isinstance(section, dict):
                raise ConfigError(f"{where}: [registry] must be a table")
            for name, entry in section.items():
                if not isinstance(entry, dict):
                    raise ConfigError(f"{where}: registry {name!r} must be a table")
                unknown = set(entry) - {"mirrors", "insecure"}
                if unknown:
                    raise ConfigError(f"{where}: registry {name!r}: unknown key "
                                      f"{sorted(unknown)[0]!r}")
                key = _canonical(name)
                if "mirrors" in entry:
                    urls = entry["mirrors"]
                    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                        raise ConfigError(f"{where}: {name}.mirrors must be a list of URLs")
                    mirrors[key] = tuple(_mirror_url(u, where) for u in urls)
                if not isinstance(entry.get("insecure", False), bool):
                    raise ConfigError(f"{where}: {name}.insecure must be true or false")
                if entry.get("insecure") is True:
                    insecure.add(key)
                elif entry.get("insecure") is False:
                    insecure.discard(key)
        return cls(mirrors, frozenset(insecure))

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> RegistryHosts:
        """Settings from the config files in force (none is fine)."""
        env = os.environ if env is None else env
        if env.get("LAYERBUILD_REGISTRIES_CONFIG"):
            paths = [Path(env["LAYERBUILD_REGISTRIES_CONFIG"])]
        else:
            home = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "/root"),
                                                              ".config")
            paths = [SYSTEM_CONFIG, Path(home) / "layerbuild" / "registries.toml"]
        docs = []
        for path in paths:
            try:
                docs.append((str(path), tomllib.loads(path.read_text())))
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{path}: {exc}") from None
        return cls.parse(docs)

    def is_insecure(self, registry: str) -> bool:
        """Whether the registry may be reached without verified TLS."""
        return _canonical(registry) in self.insecure or _is_local(registry)

    def endpoints(self, registry: str, pull: bool = True) -> list[Endpoint]:
        """Where to send requests for `registry`, in order (mirrors first, for pulls)."""
        registry = _canonical(registry)
        out = []
        if pull:
            for url in self.mirrors.get(registry, ()):
                host = url.split("://", 1)[1]
                local = self.is_insecure(host)
                out.append(Endpoint(url, registry, mirror=True, verify=not local,
                                    plain_fallback=False))
        host = HUB_ENDPOINT if registry == DOCKER_HUB else registry
        insecure = self.is_insecure(registry)
        out.append(Endpoint(f"https://{host}", registry, verify=not insecure,
                            plain_fallback=insecure))
        return out


def _canonical(name: str) -> str:
    name = name.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    return DOCKER_HUB if name in ("index.docker.io", "registry-1.docker.io") else name


def _mirror_url(url: str, where: str) -> str:
    url = url.strip().rstrip("/")
    host = url.split("://", 1)[-1]
    if "@" in host:
        raise ConfigError(f"{where}: a mirror URL cannot hold credentials")
    if not url.startswith(("https://", "http://")) or not host or any(c in host for c in "/?#"):
        raise ConfigError(f"{where}: mirror {url!r} must be http(s)://host[:port]")
    return url


def _is_local(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
