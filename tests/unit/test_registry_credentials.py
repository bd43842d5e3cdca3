"""Docker's config.json as Docker reads and writes it, and credential helpers (a fake
`docker-credential-test` on PATH), without leaking a secret to a listing, a log or `repr`."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerbuild.registry.credentials import (
    HUB_KEY,
    Credentials,
    CredentialsError,
    CredentialStore,
    config_dir,
    key_for,
)


def _auth(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


def _store(tmp_path: Path, config: dict[str, Any] | None = None) -> CredentialStore:
    directory = tmp_path / "docker"
    if config is not None:
        directory.mkdir(exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config))
    return CredentialStore(directory)


def _read(store: CredentialStore) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(store.path.read_text())
    return data


def test_auth_base64(tmp_path: Path) -> None:
    store = _store(tmp_path, {"auths": {"ghcr.io": {"auth": _auth("me", "p:a:ss")}}})
    assert store.get("ghcr.io") == Credentials("me", "p:a:ss")  # the first colon splits
    assert store.get("quay.io") is None


def test_username_and_password(tmp_path: Path) -> None:
    store = _store(tmp_path, {"auths": {"r.example": {"username": "u", "password": "pw"}}})
    assert store.get("r.example") == Credentials("u", "pw")


def test_identity_token(tmp_path: Path) -> None:
    store = _store(tmp_path, {"auths": {"r.example": {"auth": _auth("u", ""),
                                                      "identitytoken": "refresh-me"}}})
    creds = store.get("r.example")
    assert creds == Credentials("<token>", "refresh-me")
    assert creds is not None and creds.identity_token == "refresh-me"
    assert Credentials("u", "pw").identity_token is None


def test_docker_hub_key(tmp_path: Path) -> None:
    store = _store(tmp_path, {"auths": {HUB_KEY: {"auth": _auth("hubby", "s")}}})
    assert store.get("docker.io") == Credentials("hubby", "s")
    assert store.get("index.docker.io") == Credentials("hubby", "s")
    assert key_for("docker.io") == key_for("index.docker.io") == "https://index.docker.io/v1/"
    assert key_for("localhost:5000") == "localhost:5000"


@pytest.mark.parametrize("key", ["https://r.example", "http://r.example",
                                 "https://r.example/v1/", "r.example/v2/"])
def test_keys_written_as_urls(tmp_path: Path, key: str) -> None:
    store = _store(tmp_path, {"auths": {key: {"auth": _auth("u", "s")}}})
    assert store.get("r.example") == Credentials("u", "s")
    assert store.get("r.example:5000") is None


def test_entries_without_a_secret_are_anonymous(tmp_path: Path) -> None:
    store = _store(tmp_path, {"auths": {"a.example": {}, "b.example": {"username": "u"},
                                        "c.example": "not a table"}})
    assert [store.get(r) for r in ("a.example", "b.example", "c.example")] == [None] * 3


@pytest.mark.parametrize("auth", ["!!!not base64", _auth("no", "")[:-4] + "====",
                                  base64.b64encode(b"nocolon").decode(),
                                  base64.b64encode(b"\xff\xfe:x").decode()])
def test_broken_auth_is_one_line(tmp_path: Path, auth: str) -> None:
    store = _store(tmp_path, {"auths": {"r.example": {"auth": auth}}})
    with pytest.raises(CredentialsError) as info:
        store.get("r.example")
    assert "\n" not in str(info.value) and str(store.path) in str(info.value)


@pytest.mark.parametrize("text", ["{", "[]", "\"x\""])
def test_broken_file_is_one_line(tmp_path: Path, text: str) -> None:
    store = _store(tmp_path)
    store.directory.mkdir()
    store.path.write_text(text)
    with pytest.raises(CredentialsError) as info:
        store.get("r.example")
    assert "\n" not in str(info.value)


def test_no_file_is_anonymous(tmp_path: Path) -> None:
    assert _store(tmp_path).get("ghcr.io") is None


def test_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_dir({"DOCKER_CONFIG": "/x/y"}) == Path("/x/y")
    assert config_dir({"HOME": "/home/u"}) == Path("/home/u/.docker")
    _store(tmp_path, {"auths": {"ghcr.io": {"auth": _auth("env", "s")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    store = CredentialStore()
    assert store.path == tmp_path / "docker" / "config.json"
    assert store.get("ghcr.io") == Credentials("env", "s")


def test_save_keeps_other_keys(tmp_path: Path) -> None:
    config = {"auths": {"quay.io": {"auth": _auth("q", "1")},
                        "ghcr.io": {"auth": _auth("old", "0"), "identitytoken": "stale"}},
              "psFormat": "table {{.ID}}", "proxies": {"default": {"httpProxy": "x"}}}
    store = _store(tmp_path, config)
    assert store.save("ghcr.io", Credentials("new", "2")) == str(store.path)
    assert store.save("docker.io", Credentials("hub", "3")) == str(store.path)
    got = _read(store)
    assert got["psFormat"] == config["psFormat"] and got["proxies"] == config["proxies"]
    assert got["auths"] == {"quay.io": {"auth": _auth("q", "1")},
                            "ghcr.io": {"auth": _auth("new", "2")},
                            HUB_KEY: {"auth": _auth("hub", "3")}}
    assert store.get("ghcr.io") == Credentials("new", "2")  # the stale token went with it


def test_erase_keeps_other_keys(tmp_path: Path) -> None:
    store = _store(tmp_path, {"auths": {"quay.io": {"auth": _auth("q", "1")},
                                        "ghcr.io": {"auth": _auth("g", "2")},
                                        "https://ghcr.io": {"auth": _auth("g", "3")},
                                        HUB_KEY: {"auth": _auth("h", "4")}},
                              "credsStore": ""})
    assert store.erase("ghcr.io") is True
    assert store.get("ghcr.io") is None  # no older spelling of its key is left behind
    assert store.erase("ghcr.io") is False
    assert store.erase("docker.io") is True
    assert _read(store) == {"auths": {"quay.io": {"auth": _auth("q", "1")}}, "credsStore": ""}
    assert store.erase("never.example") is False


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_file_is_private_from_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       umask0: None) -> None:
    store = _store(tmp_path)
    created: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        fd = real_open(path, flags, mode, **kw)
        if flags & os.O_CREAT and str(path).startswith(str(store.directory)):
            created.append((os.path.basename(path), stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    monkeypatch.setattr(os, "open", spy)
    store.save("ghcr.io", Credentials("me", "s3cret"))
    monkeypatch.undo()
    assert created and all(mode == 0o600 for _, mode in created)
    assert all(name.endswith(".tmp") for name, _ in created)  # written aside, then renamed
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert [p.name for p in store.directory.iterdir()] == ["config.json"]
    # an existing file readable by others is replaced by a private one
    store.path.chmod(0o644)
    store.save("quay.io", Credentials("me", "again"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_repr_hides_the_secret() -> None:
    creds = Credentials("me", "hunter2")
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)
    assert "me" in repr(creds)
    assert "hunter2" not in repr([creds, {"c": creds}])


# --- credential helpers -----------------------------------------------------------------

HELPER = '''\
import json, os, sys
action = sys.argv[1]
data = sys.stdin.read()
db_path = os.environ["FAKE_HELPER_DB"]
with open(db_path + ".log", "a") as log:
    log.write(json.dumps([action, data]) + "\\n")
db = json.load(open(db_path)) if os.path.exists(db_path) else {}
if action == "get":
    if data not in db:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({"ServerURL": data, "Username": db[data][0], "Secret": db[data][1]}))
elif action == "store":
    entry = json.loads(data)
    db[entry["ServerURL"]] = [entry["Username"], entry["Secret"]]
    json.dump(db, open(db_path, "w"))
elif action == "erase":
    if data not in db:
        print("credentials not found in native keychain")
        sys.exit(1)
    del db[data]
    json.dump(db, open(db_path, "w"))
'''
BROKEN = '''\
import sys
sys.stderr.write("error: the keyring is locked\\nsee the log for more\\nkeyring unavailable\\n")
sys.exit(3)
'''


def _script(directory: Path, name: str, body: str) -> None:
    path = directory / f"docker-credential-{name}"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `test` helper (keeping its secrets in a JSON file) and a `broken` one on PATH;
    returns the file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir, "test", HELPER)
    _script(bin_dir, "broken", BROKEN)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    db = tmp_path / "helper.json"
    monkeypatch.setenv("FAKE_HELPER_DB", str(db))
    return db


def _calls(db: Path) -> list[list[str]]:
    if not db.with_name(db.name + ".log").exists():
        return []
    return [json.loads(line) for line in db.with_name(db.name + ".log").read_text().splitlines()]


def test_creds_store_get_store_erase(tmp_path: Path, helpers: Path) -> None:
    store = _store(tmp_path, {"credsStore": "test", "auths": {"ghcr.io": {}}})
    assert store.get("ghcr.io") is None  # "credentials not found": anonymous
    assert store.save("ghcr.io", Credentials("me", "s3cret")) == "docker-credential-test"
    assert store.get("ghcr.io") == Credentials("me", "s3cret")
    assert store.save("docker.io", Credentials("hub", "h")) == "docker-credential-test"
    assert json.loads(helpers.read_text()) == {"ghcr.io": ["me", "s3cret"],
                                               HUB_KEY: ["hub", "h"]}
    assert store.erase("ghcr.io") is True
    assert store.get("ghcr.io") is None
    assert _read(store) == {"credsStore": "test", "auths": {"ghcr.io": {}}}  # untouched
    assert "s3cret" not in store.path.read_text()
    assert [c[0] for c in _calls(helpers)] == ["get", "store", "get", "store", "erase", "get"]
    assert _calls(helpers)[1] == ["store", json.dumps(
        {"ServerURL": "ghcr.io", "Username": "me", "Secret": "s3cret"})]


def test_cred_helpers_per_registry(tmp_path: Path, helpers: Path) -> None:
    helpers.write_text(json.dumps({"localhost:5000": ["u", "from-helper"],
                                   HUB_KEY: ["hub", "from-helper"]}))
    store = _store(tmp_path, {"credHelpers": {"localhost:5000": "test", HUB_KEY: "test"},
                              "credsStore": "broken",
                              "auths": {"quay.io": {"auth": _auth("q", "file")}}})
    assert store.get("localhost:5000") == Credentials("u", "from-helper")
    assert store.get("docker.io") == Credentials("hub", "from-helper")
    assert [c for c in _calls(helpers)] == [["get", "localhost:5000"], ["get", HUB_KEY]]
    with pytest.raises(CredentialsError):  # any other registry: the credsStore
        store.get("quay.io")


def test_cred_helper_named_by_registry_for_docker_hub(tmp_path: Path, helpers: Path) -> None:
    helpers.write_text(json.dumps({HUB_KEY: ["hub", "x"]}))
    store = _store(tmp_path, {"credHelpers": {"docker.io": "test"}})
    assert store.get("docker.io") == Credentials("hub", "x")


def test_failing_helper_is_one_line(tmp_path: Path, helpers: Path) -> None:
    store = _store(tmp_path, {"credsStore": "broken"})
    for call in (lambda: store.get("r.example"),
                 lambda: store.save("r.example", Credentials("u", "s3cret")),
                 lambda: store.erase("r.example")):
        with pytest.raises(CredentialsError) as info:
            call()
        message = str(info.value)
        assert message.startswith("docker-credential-broken ")
        assert message.endswith("failed: keyring unavailable")
        assert "\n" not in message and "s3cret" not in message


def test_missing_helper(tmp_path: Path, helpers: Path) -> None:
    store = _store(tmp_path, {"credsStore": "absent-helper"})
    with pytest.raises(CredentialsError, match="docker-credential-absent-helper is not "
                                               "installed"):
        store.get("r.example")


def test_unreadable_helper_answer(tmp_path: Path, helpers: Path) -> None:
    bin_dir = tmp_path / "bin"
    _script(bin_dir, "garbled", 'print("{not json")\n')
    store = _store(tmp_path, {"credsStore": "garbled"})
    with pytest.raises(CredentialsError, match="unreadable answer"):
        store.get("r.example")
