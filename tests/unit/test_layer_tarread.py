"""The tar header reader yields what tarfile reads, and refuses damaged archives."""

from __future__ import annotations

import io
import tarfile

import pytest

from layerbuild.errors import FormatError
from layerbuild.layer.tarread import MAX_EXTENDED, TarReader

FIELDS = ("name", "linkname", "type", "mode", "uid", "gid", "size", "mtime", "uname", "gname",
          "devmajor", "devminor", "pax_headers")
LONG = "d" * 120 + "/" + "n" * 150 + "/f" + "é" * 40
ODD = "bad-\udcff-name"  # undecodable byte, kept by surrogateescape


def member(name: str, type_: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object
           ) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size = type_, len(data)
    for key, value in kw.items():
        setattr(info, key, value)
    return info, data


def members(fmt: int) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = [member("dir/", tarfile.DIRTYPE, mode=0o755, mtime=1_700_000_000),
           member("dir/empty"), member("dir/odd", data=b"x" * 1000, mode=0o4755),
           member("dir/block", data=b"y" * 512),
           member("hard", tarfile.LNKTYPE, linkname="dir/odd"),
           member("sym", tarfile.SYMTYPE, linkname="../" + "t" * 90),
           member("null", tarfile.CHRTYPE, devmajor=1, devminor=3),
           member("sda", tarfile.BLKTYPE, devmajor=8, devminor=0, uname="root", gname="disk"),
           member("fifo", tarfile.FIFOTYPE), member("p" * 90 + "/" + "q" * 90, data=b"z")]
    if fmt != tarfile.USTAR_FORMAT:
        out += [member(LONG, data=b"long"), member("longlink", tarfile.SYMTYPE, linkname=LONG),
                member(ODD, data=b"o"), member("big-ids", uid=3_000_000_000, gid=2**40)]
    if fmt == tarfile.PAX_FORMAT:
        out += [member("frac", mtime=1_700_000_000.25),
                member("xattrs", data=b"c", pax_headers={
                    "SCHILY.xattr.user.a": "1", "SCHILY.xattr.security.capability": "\x01\x02"})]
    return out


def archive(fmt: int, entries: list[tuple[tarfile.TarInfo, bytes]] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for info, data in entries if entries is not None else members(fmt):
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ours(data: bytes, read: bool = True) -> list[tuple[tuple[object, ...], bytes]]:
    reader = TarReader(io.BytesIO(data))
    out = []
    view = memoryview(bytearray(7))  # a small buffer: data crosses many reads
    for e in reader:
        chunks = b""
        while read and (n := reader.readinto(view)):
            chunks += view[:n]
        out.append((tuple(getattr(e, f) for f in FIELDS), chunks))
    return out


def theirs(data: bytes) -> list[tuple[tuple[object, ...], bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding="utf-8",
                      errors="surrogateescape") as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isreg() else None
            out.append((tuple(getattr(m, k) for k in FIELDS), f.read() if f else b""))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar", "gnu", "pax"])
def test_entries_and_data_match_tarfile(fmt: int) -> None:
    data = archive(fmt)
    assert ours(data) == theirs(data)
    skipped = ours(data, read=False)  # unread data is skipped
    assert [h for h, _ in skipped] == [h for h, _ in theirs(data)]


def test_pax_global_headers_apply_to_later_members() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "hi", "uname": "g"}) as tf:
        for info, data in members(tarfile.PAX_FORMAT):
            tf.addfile(info, io.BytesIO(data))
    assert ours(buf.getvalue()) == theirs(buf.getvalue())


def test_spaces_in_octal_fields_and_signed_checksums() -> None:
    data = bytearray(archive(tarfile.USTAR_FORMAT, [member("a", data=b"1")]))
    data[100:108] = b" 000644 "  # spaces around the number
    data[300] = 0xF0  # past gname's NUL: only a signed sum counts it as negative
    data[148:156] = b"        "
    signed = 256 + sum(b - 256 if b > 127 else b for b in data[:148] + data[156:512])
    data[148:156] = b"%06o\0 " % signed
    [(head, body)] = ours(bytes(data))
    assert head == theirs(bytes(data))[0][0] and body == b"1"


def test_end_of_archive_forms() -> None:
    one = archive(tarfile.USTAR_FORMAT, [member("a", data=b"1")])
    assert len(ours(one[:1536])) == 1  # one zero block, then the end of the stream
    assert ours(bytes(1024)) == []
    with pytest.raises(FormatError, match="end-of-archive"):
        ours(one[:1024])


@pytest.mark.parametrize(("cut", "message"), [
    (300, "truncated in a header"), (700, "end of data"), (1536, "end-of-archive")])
def test_truncation_is_an_error(cut: int, message: str) -> None:
    data = archive(tarfile.USTAR_FORMAT, [member("a", data=b"x" * 600), member("b")])
    with pytest.raises(FormatError, match=message):
        ours(data[:cut])


def test_bad_checksum_and_bad_numbers_are_errors() -> None:
    data = bytearray(archive(tarfile.USTAR_FORMAT, [member("a"), member("b")]))
    data[512 + 148 : 512 + 156] = b"0000000\0"
    with pytest.raises(FormatError, match="corrupt header after 'a': bad checksum"):
        ours(bytes(data))
    data = bytearray(archive(tarfile.USTAR_FORMAT, [member("a")]))
    data[124:136] = b"99999999999\0"  # not octal
    data[148:156] = b"        "
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(FormatError, match="invalid header"):
        ours(bytes(data))


def test_negative_size_is_an_error() -> None:
    data = bytearray(archive(tarfile.USTAR_FORMAT, [member("a", data=b"x")]))
    data[124:136] = b"\xff" * 12
    data[148:156] = b"        "
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(FormatError, match="negative size"):
        ours(bytes(data))


def test_giant_extended_headers_are_refused_before_reading() -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, MAX_EXTENDED + 1
    head = info.tobuf(tarfile.USTAR_FORMAT)
    with pytest.raises(FormatError, match="extended header"):
        ours(head + bytes(1024))  # far less data than it claims: the size alone refuses it
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, 8 << 40
    with pytest.raises(FormatError, match="extended header"):
        ours(info.tobuf(tarfile.GNU_FORMAT) + bytes(1024))


@pytest.mark.parametrize("record", [b"5 a=b", b"x a=b\n", b"99 a=b\n", b"6 ab\n\n", b"0 a=\n"])
def test_malformed_pax_records_are_errors(record: bytes) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(record)
    body = info.tobuf(tarfile.USTAR_FORMAT) + record + bytes(-len(record) % 512)
    with pytest.raises(FormatError, match="PAX record"):
        ours(body + archive(tarfile.USTAR_FORMAT, [member("a")]))


def test_extended_header_without_its_member_is_an_error() -> None:
    data = archive(tarfile.PAX_FORMAT, [member(LONG)])
    with pytest.raises(FormatError, match=r"end of file header|end-of-archive"):
        ours(data[:1024] + bytes(1024))
