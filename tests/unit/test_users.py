"""USER and --chown resolution from passwd and group text, as Docker and BuildKit resolve them."""

from __future__ import annotations

import pytest

from layerbuild.users import UnknownUser, home_dir, resolve_chown, resolve_user, step_ids

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "# a comment:x:5:5::/c:/bin/sh\n"
          "app:x:1000:1000::/home/app:/bin/sh\n"
          "nohome:x:1001:1001:::/bin/sh\n"
          "short:x:1002\n")
GROUP = "root:x:0:\nstaff:x:50:app,other\ndev:x:60:app\napp:x:1000:\n"


@pytest.mark.parametrize(("spec", "ids"), [
    ("app", (1000, 1000, (50, 60))),
    ("1000", (1000, 1000, (50, 60))),
    ("app:staff", (1000, 50, ())),
    ("app:70", (1000, 70, ())),
    ("4242", (4242, 0, ())),
    ("4242:4343", (4242, 4343, ())),
    ("root", (0, 0, ())),
])
def test_a_user_resolves_to_its_ids_and_groups(spec: str, ids: tuple[int, int, tuple[int, ...]]
                                               ) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == ids


@pytest.mark.parametrize("spec", ["", "0", "root", "0:0"])
def test_root_needs_no_lookup(spec: str) -> None:
    assert step_ids(spec, None, None) == (0, 0, ())


@pytest.mark.parametrize(("spec", "said"), [
    ("nobody", "unable to find user nobody: no matching entries in passwd file"),
    ("short", "unable to find user short: no matching entries in passwd file"),
    ("app:nogroup", "unable to find group nogroup: no matching entries in group file"),
])
def test_an_unknown_name_says_which_file_lacks_it(spec: str, said: str) -> None:
    with pytest.raises(UnknownUser) as caught:
        step_ids(spec, PASSWD, GROUP)
    assert str(caught.value) == said


def test_the_home_is_the_uids_else_the_root_dir() -> None:
    assert [home_dir(uid, PASSWD) for uid in (0, 1000, 1001, 1002, 5)] == [
        "/root", "/home/app", "/", "/", "/"]
    assert home_dir(0, None) == "/"


def test_chown_takes_a_numbers_gid_from_itself_and_a_names_from_passwd() -> None:
    assert resolve_chown("1000", PASSWD, GROUP) == (1000, 1000)
    assert resolve_chown("4242", None, None) == (4242, 4242)
    assert resolve_chown("app", PASSWD, GROUP) == (1000, 1000)
    assert resolve_chown("app:dev", PASSWD, GROUP) == (1000, 60)
    assert resolve_chown("7:8", None, None) == (7, 8)
