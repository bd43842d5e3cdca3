"""registries.toml: mirrors and insecure registries, which file wins, and the endpoints a
registry's requests go to (mirrors first for pulls only, Docker Hub's real host, loopback
registries insecure with a plain-HTTP fallback, as in Docker)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from layerbuild.registry import hosts as hosts_module
from layerbuild.registry.hosts import ConfigError, Endpoint, RegistryHosts


def _parse(text: str, where: str = "test.toml") -> RegistryHosts:
    return RegistryHosts.parse([(where, tomllib.loads(text))])


NONE = RegistryHosts({}, frozenset())


def test_mirrors_and_insecure() -> None:
    got = _parse('''
[registry."docker.io"]
mirrors = ["https://mirror.example.com/", "http://127.0.0.1:5000"]

[registry."registry.internal:5000"]
insecure = true
''')
    assert got.mirrors == {"docker.io": ("https://mirror.example.com", "http://127.0.0.1:5000")}
    assert got.insecure == {"registry.internal:5000"}
    assert got.is_insecure("registry.internal:5000")
    assert not got.is_insecure("registry.internal")


def test_names_are_canonical() -> None:
    got = _parse('''
[registry."index.docker.io"]
mirrors = ["https://m.example"]
[registry."https://Registry.Example.com/"]
insecure = true
''')
    assert got.mirrors == {"docker.io": ("https://m.example",)}
    assert got.is_insecure("registry.example.com")
    assert got.endpoints("registry-1.docker.io")[0].base == "https://m.example"


@pytest.mark.parametrize(("text", "message"), [
    ('registry = 1', r"\[registry\] must be a table"),
    ('[registry]\n"docker.io" = "x"', "registry 'docker.io' must be a table"),
    ('[registry."docker.io"]\nmirror = ["https://m.example"]', "unknown key 'mirror'"),
    ('[registry."docker.io"]\nmirrors = "https://m.example"', "must be a list of URLs"),
    ('[registry."docker.io"]\nmirrors = [1]', "must be a list of URLs"),
    ('[registry."docker.io"]\nmirrors = ["m.example"]', "http\\(s\\)://host"),
    ('[registry."docker.io"]\nmirrors = ["ftp://m.example"]', "http\\(s\\)://host"),
    ('[registry."docker.io"]\nmirrors = ["https://m.example/v2/"]', "http\\(s\\)://host"),
    ('[registry."docker.io"]\nmirrors = ["https://"]', "http\\(s\\)://host"),
    ('[registry."docker.io"]\nmirrors = ["https://user:pw@m.example"]', "cannot hold credentials"),
    ('[registry."docker.io"]\nmirrors = ["https://m.example?x=1"]', "http\\(s\\)://host"),
    ('[registry."r.example"]\ninsecure = "yes"', "insecure must be true or false"),
    ('[registry."r.example"]\ninsecure = 1', "insecure must be true or false"),
    ('[registries."r.example"]\ninsecure = true', "unknown key 'registries'"),
])
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _parse(text, "/etc/layerbuild/registries.toml")
    assert str(info.value).startswith("/etc/layerbuild/registries.toml: ")
    assert "\n" not in str(info.value)
    assert "pw@" not in str(info.value)


def test_later_documents_win() -> None:
    system = tomllib.loads('''
[registry."docker.io"]
mirrors = ["https://system.example"]
[registry."a.example"]
insecure = true
[registry."b.example"]
insecure = true
''')
    user = tomllib.loads('''
[registry."docker.io"]
mirrors = ["https://user.example"]
[registry."a.example"]
insecure = false
''')
    got = RegistryHosts.parse([("system", system), ("user", user)])
    assert got.mirrors["docker.io"] == ("https://user.example",)
    assert got.insecure == {"b.example"}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_load_reads_system_then_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = _write(tmp_path / "etc/registries.toml",
                    '[registry."docker.io"]\nmirrors = ["https://system.example"]\n'
                    '[registry."s.example"]\ninsecure = true\n')
    monkeypatch.setattr(hosts_module, "SYSTEM_CONFIG", system)
    xdg = tmp_path / "xdg"
    assert RegistryHosts.load({"XDG_CONFIG_HOME": str(xdg)}).mirrors == {
        "docker.io": ("https://system.example",)}
    _write(xdg / "layerbuild/registries.toml",
           '[registry."docker.io"]\nmirrors = ["https://user.example"]\n')
    got = RegistryHosts.load({"XDG_CONFIG_HOME": str(xdg)})
    assert got.mirrors == {"docker.io": ("https://user.example",)}
    assert got.insecure == {"s.example"}
    home = tmp_path / "home"
    _write(home / ".config/layerbuild/registries.toml", '[registry."h.example"]\ninsecure = true\n')
    assert RegistryHosts.load({"HOME": str(home)}).insecure == {"s.example", "h.example"}


def test_env_names_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = _write(tmp_path / "etc/registries.toml", '[registry."s.example"]\ninsecure = true\n')
    monkeypatch.setattr(hosts_module, "SYSTEM_CONFIG", system)
    only = _write(tmp_path / "only.toml", '[registry."o.example"]\ninsecure = true\n')
    xdg = tmp_path / "xdg"
    _write(xdg / "layerbuild/registries.toml", '[registry."u.example"]\ninsecure = true\n')
    env = {"LAYERBUILD_REGISTRIES_CONFIG": str(only), "XDG_CONFIG_HOME": str(xdg)}
    assert RegistryHosts.load(env).insecure == {"o.example"}
    monkeypatch.setenv("LAYERBUILD_REGISTRIES_CONFIG", str(only))
    assert RegistryHosts.load().insecure == {"o.example"}  # the process environment


def test_load_without_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosts_module, "SYSTEM_CONFIG", tmp_path / "absent.toml")
    got = RegistryHosts.load({"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert (dict(got.mirrors), got.insecure) == ({}, frozenset())


def test_load_bad_toml_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _write(tmp_path / "bad.toml", '[registry."docker.io"\nmirrors = [\n')
    with pytest.raises(ConfigError) as info:
        RegistryHosts.load({"LAYERBUILD_REGISTRIES_CONFIG": str(bad)})
    assert str(info.value).startswith(f"{bad}: ")
    assert "\n" not in str(info.value)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=str(bad)):
        RegistryHosts.load({"LAYERBUILD_REGISTRIES_CONFIG": str(bad)})


def test_endpoints_for_docker_hub() -> None:
    assert NONE.endpoints("docker.io") == [
        Endpoint("https://registry-1.docker.io", "docker.io")]
    assert NONE.endpoints("index.docker.io") == NONE.endpoints("docker.io")


def test_mirrors_first_for_pulls_only() -> None:
    hosts = _parse('''
[registry."docker.io"]
mirrors = ["https://m1.example", "http://127.0.0.1:5000", "https://localhost:5001"]
''')
    pulls = hosts.endpoints("docker.io")
    assert [(e.base, e.mirror) for e in pulls] == [
        ("https://m1.example", True), ("http://127.0.0.1:5000", True),
        ("https://localhost:5001", True), ("https://registry-1.docker.io", False)]
    assert all(e.registry == "docker.io" for e in pulls)
    assert pulls[0].verify and not pulls[2].verify  # a loopback mirror is not verified
    assert not any(e.plain_fallback for e in pulls)  # a mirror's URL says its scheme
    assert pulls[1].host == "127.0.0.1:5000"
    assert hosts.endpoints("docker.io", pull=False) == [
        Endpoint("https://registry-1.docker.io", "docker.io")]
    assert hosts.endpoints("ghcr.io") == [Endpoint("https://ghcr.io", "ghcr.io")]


@pytest.mark.parametrize("registry", ["localhost", "localhost:5000", "127.0.0.1:5000",
                                      "127.1.2.3", "[::1]:5000", "[::1]"])
def test_loopback_is_insecure(registry: str) -> None:
    assert NONE.is_insecure(registry)
    (only,) = NONE.endpoints(registry)
    assert only == Endpoint(f"https://{registry}", registry, verify=False, plain_fallback=True)


@pytest.mark.parametrize("registry", ["ghcr.io", "10.0.0.1:5000", "localhost.example:5000",
                                      "[2001:db8::1]:5000", "128.0.0.1"])
def test_others_are_secure(registry: str) -> None:
    assert not NONE.is_insecure(registry)
    (only,) = NONE.endpoints(registry)
    assert (only.verify, only.plain_fallback) == (True, False)


def test_insecure_from_config() -> None:
    hosts = _parse('[registry."r.internal:5000"]\ninsecure = true\n')
    (only,) = hosts.endpoints("r.internal:5000", pull=False)
    assert only == Endpoint("https://r.internal:5000", "r.internal:5000", verify=False,
                            plain_fallback=True)


def test_empty_documents() -> None:
    empty: dict[str, Any] = {}
    assert RegistryHosts.parse([("a", empty), ("b", {"registry": {}})]) == NONE
