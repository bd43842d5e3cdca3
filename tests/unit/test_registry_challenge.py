"""`WWW-Authenticate` parsing, held to distribution's `registry/client/auth/challenge` parser
(schemes and keys lower-cased, quoted values unescaped, commas inside quotes kept)."""

from __future__ import annotations

from layerbuild.registry import challenge
from layerbuild.registry.challenge import Challenge, Scope, parse


def test_distributions_own_case() -> None:
    # TestAuthChallengeParse
    got = parse('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
                'other=fun,slashed="he\\"\\l\\lo"')
    assert got == [Challenge("bearer", {"realm": "https://auth.example.com/token",
                                        "service": "registry.example.com", "other": "fun",
                                        "slashed": 'he"llo'})]


def test_docker_hub_challenge() -> None:
    got = parse('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                'scope="repository:library/busybox:pull"')
    assert got[0].params == {"realm": "https://auth.docker.io/token",
                             "service": "registry.docker.io",
                             "scope": "repository:library/busybox:pull"}


def test_commas_and_equals_inside_quotes() -> None:
    got = parse('Bearer realm="https://a.example/t?x=1,y=2",scope="repository:a:pull,push",'
                'error="insufficient_scope"')
    assert got[0].params["realm"] == "https://a.example/t?x=1,y=2"
    assert got[0].params["scope"] == "repository:a:pull,push"
    assert got[0].params["error"] == "insufficient_scope"


def test_escapes() -> None:
    got = parse(r'Bearer realm="a\\b", service="q\"uote\"d"')
    assert got[0].params == {"realm": "a\\b", "service": 'q"uote"d'}


def test_case_and_spaces() -> None:
    got = parse('  BEARER   Realm = "https://x.example/token" ,  SERVICE=reg  ')
    assert got == [Challenge("bearer", {"realm": "https://x.example/token", "service": "reg"})]


def test_basic() -> None:
    assert parse('Basic realm="Registry Realm"') == [
        Challenge("basic", {"realm": "Registry Realm"})]
    assert parse("Basic") == [Challenge("basic", {})]


def test_several_challenges_in_one_header() -> None:
    # urllib3 joins repeated WWW-Authenticate headers with ", "
    got = parse('Bearer realm="https://a.example/token",service="a", Basic realm="b"')
    assert [c.scheme for c in got] == ["bearer", "basic"]
    assert got[0].params == {"realm": "https://a.example/token", "service": "a"}
    assert got[1].params == {"realm": "b"}
    got = parse('Basic realm="x", Bearer realm="https://a.example/token"')
    assert [(c.scheme, c.params["realm"]) for c in got] == [
        ("basic", "x"), ("bearer", "https://a.example/token")]


def test_unknown_schemes_are_kept_for_the_caller_to_skip() -> None:
    got = parse('Negotiate, Bearer realm="https://a.example/token"')
    assert [c.scheme for c in got] == ["negotiate", "bearer"]
    got = parse('Digest realm="r", nonce="abc", qop="auth"')
    assert got == [Challenge("digest", {"realm": "r", "nonce": "abc", "qop": "auth"})]


def test_garbage() -> None:
    assert parse("") == []
    assert parse("   ,  ,") == []
    assert parse("@@@") == []
    assert parse('="x"') == []
    # an unterminated quote ends the parameters (distribution drops the value too)
    assert parse('Bearer realm="https://a.example/token') == [Challenge("bearer", {})]
    # what follows a broken parameter is not taken for a scheme
    got = parse('Bearer realm=, service="x"')
    assert got[0].scheme == "bearer" and "realm" not in got[0].params


def test_scopes() -> None:
    assert str(challenge.pull("library/busybox")) == "repository:library/busybox:pull"
    assert str(challenge.push("team/app")) == "repository:team/app:pull,push"
    assert sorted({challenge.push("b"), challenge.pull("a"), challenge.pull("a")}) == [
        Scope("a", ("pull",)), Scope("b", ("pull", "push"))]
