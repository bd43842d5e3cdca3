"""`-o` values as buildx reads them, and the checks made before anything is built.

BuildKit's `docker` and `oci` exporters write a tar unless `tar=false` (then a directory);
`dest=-` streams to stdout, as does a bare `-o -` (type=tar); `oci` and `tar` without `dest`
go to stdout (buildx); `local` never does, and only one output may use stdout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.builder.outputs import Output, check_outputs, parse_output
from layerbuild.errors import LayerbuildError


@pytest.mark.parametrize(("text", "expected"), [
    ("-", Output("tar", "-")),
    ("out/dir", Output("local", "out/dir")),
    ("type=tar,dest=-", Output("tar", "-")),
    ("type=tar", Output("tar", "-")),
    ("type=oci", Output("oci", "-")),
    ("type=oci,dest=x.tar", Output("oci", "x.tar")),
    ("type=oci,dest=-", Output("oci", "-")),
    ("type=oci,dest=layout,tar=false", Output("oci", "layout", tar=False)),
    ("type=docker,dest=x.tar,tar=true", Output("docker", "x.tar")),
    ("type=docker,dest=-", Output("docker", "-")),
    ("type=docker,dest=d,tar=false", Output("docker", "d", tar=False)),
    ("type=local,dest=rootfs", Output("local", "rootfs")),
])
def test_outputs_parse_as_buildx_reads_them(text: str, expected: Output) -> None:
    assert parse_output(text) == expected


def test_which_outputs_stream_to_stdout() -> None:
    assert [parse_output(t).to_stdout for t in ("-", "type=oci", "type=oci,dest=x.tar",
                                                "type=docker,dest=-", "rootfs")] == [
        True, True, False, True, False]


@pytest.mark.parametrize(("text", "said"), [
    ("type=local,dest=-", "a directory cannot go to stdout"),
    ("type=oci,dest=-,tar=false", "a directory cannot go to stdout"),
    ("type=oci,tar=false", "dest= is required"),
    ("type=docker", "dest= is required"),
    ("type=local", "dest= is required"),
    ("type=oci,dest=x,tar=maybe", "tar= must be true or false"),
])
def test_outputs_that_cannot_be_written_are_refused(text: str, said: str) -> None:
    with pytest.raises(LayerbuildError, match=said):
        parse_output(text)


def test_only_one_output_may_use_stdout() -> None:
    check_outputs([parse_output("-"), parse_output("type=oci,dest=x.tar")])
    with pytest.raises(LayerbuildError, match="only one output can go to stdout"):
        check_outputs([parse_output("-"), parse_output("type=docker,dest=-")])


def test_a_file_output_is_checked_before_the_build(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    check_outputs([parse_output(f"type=oci,dest={tmp_path}/x.tar"),
                   parse_output(f"type=oci,dest={tmp_path}/dir,tar=false"),
                   parse_output(f"type=local,dest={tmp_path}/missing/rootfs")])
    with pytest.raises(LayerbuildError, match=r"is a directory \(tar=false writes a directory\)"):
        check_outputs([parse_output(f"type=oci,dest={tmp_path}/dir")])
    with pytest.raises(LayerbuildError, match="is a directory"):
        check_outputs([parse_output(f"type=tar,dest={tmp_path}/dir")])
    with pytest.raises(LayerbuildError, match=f"the directory {tmp_path}/missing does not"):
        check_outputs([parse_output(f"type=docker,dest={tmp_path}/missing/x.tar")])
