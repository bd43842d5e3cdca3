"""A RUN's USER and HOME, and a WORKDIR's owner, come from the image's /etc/passwd and
/etc/group, looked up by the step's own sandbox call (one call per step, no read before it).

Through the fake sandbox, which looks them up as the real one does, from the files the step
sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from enginetools import BASE_FILES, Bench, new_bench

from layerbuild.builder.stepcontext import layer_dirs
from layerbuild.digest import chain_ids
from layerbuild.errors import BuildfileError, LayerbuildError, StepFailed
from layerbuild.sandbox.spec import RunSpec
from layerbuild.users import UnknownUser


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    bench = new_bench(tmp_path)
    bench.base({**BASE_FILES,
                "etc/group": "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"}, tag="base")
    return bench


def _ran(bench: Bench, buildfile: str, **request: object) -> list[RunSpec]:
    """The specs the build's RUN steps ran with (user and HOME looked up)."""
    ran: list[RunSpec] = []

    def record(upper: Path, spec: RunSpec) -> int:
        ran.append(spec)
        return 0

    bench.sandbox.scripts["make"] = record
    assert bench.build(buildfile, **request) is not None
    return ran


def _environ(spec: RunSpec) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in spec.env)


@pytest.mark.parametrize(("user", "ids", "home"), [
    ("", "0:0", "/root"),
    ("USER root\n", "0:0", "/root"),
    ("USER app\n", "1000:1000:50", "/home/app"),
    ("USER 1000\n", "1000:1000:50", "/home/app"),
    ("USER app:staff\n", "1000:50", "/home/app"),
    ("USER 4242\n", "4242:0", "/"),
])
def test_a_run_takes_its_users_ids_and_home(bench: Bench, user: str, ids: str,
                                            home: str) -> None:
    [spec] = _ran(bench, f"FROM base\n{user}RUN make\n")
    assert spec.user == ids
    assert _environ(spec)["HOME"] == home


def test_a_run_makes_one_sandbox_call(bench: Bench) -> None:
    _ran(bench, "FROM base\nUSER app\nRUN make\nWORKDIR /srv/app\n")
    assert [name for name, _ in bench.sandbox.calls] == ["run", "copy_into"]


def test_home_comes_before_the_secrets_and_an_env_home_wins(bench: Bench,
                                                           tmp_path: Path) -> None:
    token = tmp_path / "tok"
    token.write_text("s3cret")
    [spec] = _ran(bench, "FROM base\nENV A=1\nRUN --mount=type=secret,id=t,env=TOK make\n",
                  secrets={"t": token})
    names = [entry.partition("=")[0] for entry in spec.env]
    assert names[-2:] == ["HOME", "TOK"]
    assert names.index("PATH") < names.index("HOME")
    [spec] = _ran(bench, "FROM base\nENV HOME=/elsewhere\nUSER app\nRUN make\n")
    assert _environ(spec)["HOME"] == "/elsewhere"
    [spec] = _ran(bench, "FROM base\nRUN --mount=type=secret,id=t,env=HOME make\n",
                  secrets={"t": token})
    assert [e for e in spec.env if e.startswith("HOME=")] == ["HOME=s3cret"]


def test_a_user_added_by_an_earlier_step_is_found(bench: Bench) -> None:
    def adduser(upper: Path, spec: RunSpec) -> int:
        (upper / "etc").mkdir()
        (upper / "etc/passwd").write_text(BASE_FILES["etc/passwd"]
                                          + "svc:x:2000:2000::/var/svc:/bin/sh\n")
        return 0

    bench.sandbox.scripts["adduser"] = adduser
    [spec] = _ran(bench, "FROM base\nRUN adduser\nUSER svc\nRUN make\n")
    assert (spec.user, _environ(spec)["HOME"]) == ("2000:2000", "/var/svc")


def test_an_unknown_user_names_the_line(bench: Bench) -> None:
    bench.sandbox.scripts["make"] = lambda upper, spec: 0
    with pytest.raises(BuildfileError) as caught:
        bench.build("FROM base\nUSER nobody-here\nRUN make\n")
    assert not isinstance(caught.value, StepFailed)
    assert str(caught.value) == (f"{bench.context / 'Buildfile'}:3: RUN: unable to find user "
                                 "nobody-here: no matching entries in passwd file")
    assert isinstance(caught.value.__cause__, UnknownUser)


def test_an_unknown_group_of_a_workdir_names_the_line(bench: Bench) -> None:
    with pytest.raises(BuildfileError, match=":3: WORKDIR: unable to find group nogroup: "):
        bench.build("FROM base\nUSER app:nogroup\nWORKDIR /w\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are set only as root")
def test_a_workdir_is_made_for_the_user(bench: Bench) -> None:
    image = bench.build("FROM base\nUSER app:staff\nWORKDIR /srv/app\n")
    assert image is not None
    top = layer_dirs(bench.store, chain_ids(image.config.diff_ids)[-1])[0]
    made = (top / "srv/app").stat()
    assert (made.st_uid, made.st_gid) == (1000, 50)
    assert [name for name, _ in bench.sandbox.calls] == ["copy_into"]


def test_a_chown_reads_passwd_and_group_at_once(bench: Bench) -> None:
    bench.write("f", "x\n")
    bench.build("FROM base\nCOPY --chown=app:staff f /f\n")
    assert bench.sandbox.calls_of("read_files") == [["/etc/passwd", "/etc/group"]]
    [(_source, items)] = bench.sandbox.calls_of("copy_into")  # type: ignore[misc]
    assert (items[0].uid, items[0].gid) == (1000, 50)


def test_an_unknown_user_is_reported_before_a_refused_network(bench: Bench) -> None:
    bench.sandbox.scripts["make"] = lambda upper, spec: 0
    with pytest.raises(BuildfileError, match=":3: RUN: unable to find user nobody-here: "):
        bench.build("FROM base\nUSER nobody-here\nRUN --network=host make\n")
    assert bench.sandbox.calls_of("run") == []
    with pytest.raises(LayerbuildError, match=r"needs --allow network\.host"):
        bench.build("FROM base\nUSER app\nRUN --network=host make\n")
