"""The one-block path of `tarheader.encode` gives the bytes of the general path."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from layerbuild.layer import tarheader as th

_names = st.binary(min_size=1, max_size=120).filter(lambda b: b"\0" not in b)


@given(name=_names, kind=st.sampled_from([th.REGULAR, th.DIRECTORY, th.SYMLINK, th.HARDLINK,
                                          th.CHARDEV, th.FIFO]),
       mode=st.integers(0, 0o7777), uid=st.integers(0, 8 ** 8), gid=st.integers(0, 8 ** 8),
       size=st.integers(0, 8 ** 12), mtime=st.integers(0, 8 ** 12), linkname=_names,
       major=st.integers(0, 4095), minor=st.integers(0, 1 << 20))
def test_encode_is_the_general_encoding(name: bytes, kind: bytes, mode: int, uid: int,
                                        gid: int, size: int, mtime: int, linkname: bytes,
                                        major: int, minor: int) -> None:
    header = th.Header(name, kind, mode, uid, gid, size, mtime, linkname, major, minor)
    assert th.encode(header) == th.encode_general(header)


def test_a_plain_file_is_one_block() -> None:
    block = th.encode(th.Header(b"app/f.txt", th.REGULAR, 0o644, 0, 0, 5, 1_700_000_000))
    assert len(block) == th.BLOCK and block[257:265] == b"ustar\x0000"
