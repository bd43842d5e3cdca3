from __future__ import annotations

import hashlib
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layerbuild.digest import (
    EMPTY_LAYER_DIFF_ID,
    Digest,
    HashingReader,
    HashingWriter,
    chain_id,
    chain_ids,
    digest_stream,
    verify,
)
from layerbuild.errors import DigestMismatch, FormatError


def test_parse_and_print() -> None:
    text = "sha256:" + "a" * 64
    assert str(Digest.parse(text)) == text
    assert Digest.parse(text).short == "a" * 12


@pytest.mark.parametrize("bad", ["sha512:" + "a" * 128, "a" * 64, "sha256:xyz",
                                 "sha256:" + "A" * 64, ""])
def test_bad_digests_are_refused(bad: str) -> None:
    with pytest.raises(FormatError):
        Digest.parse(bad)


def test_empty_layer_constant_is_two_zero_blocks() -> None:
    assert Digest.of(b"\0" * 1024) == EMPTY_LAYER_DIFF_ID


def test_chain_ids_follow_the_spec() -> None:
    a, b, c = (Digest.of(x) for x in (b"a", b"b", b"c"))
    ab = Digest(hashlib.sha256(f"{a} {b}".encode()).hexdigest())
    abc = Digest(hashlib.sha256(f"{ab} {c}".encode()).hexdigest())
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_id(None, a) == a
    assert chain_ids([]) == []


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_hashing_reader_and_writer_agree_with_hashlib(data: bytes, chunk: int) -> None:
    reader = HashingReader(io.BytesIO(data))
    sink = io.BytesIO()
    writer = HashingWriter(sink)
    while piece := reader.read(chunk):
        writer.write(piece)
    expected = Digest(hashlib.sha256(data).hexdigest())
    assert reader.digest == writer.digest == expected
    assert reader.size == writer.size == len(data)
    assert sink.getvalue() == data
    assert digest_stream(io.BytesIO(data)) == (expected, len(data))


def test_verify_names_what_differs() -> None:
    with pytest.raises(DigestMismatch, match="layer blob"):
        verify(Digest.of(b"a"), Digest.of(b"b"), "layer blob")
