"""Test helpers: archives built entry by entry, in memory."""

from __future__ import annotations

import io
import os
import tarfile

T0 = 1_600_000_000


def build(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """A PAX tar of the given entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def entry(name: str, type: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object
          ) -> tuple[tarfile.TarInfo, bytes]:
    """One archive entry; keyword arguments set TarInfo fields."""
    info = tarfile.TarInfo(name)
    info.type = type
    info.size = len(data)
    info.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    info.mtime = T0
    info.uid, info.gid = os.getuid(), os.getgid()  # so that most cases run without root too
    for key, value in kw.items():
        setattr(info, key, value)
    return info, data


def unpack_plain(archive: os.PathLike[str] | str, dest: os.PathLike[str] | str) -> None:
    """Unpack an archive of plain files and directories (an image layout layerbuild saved)
    into `dest`; anything else, or a name leading out of `dest`, fails the test.

    The extraction filters of Python's tarfile came in 3.11.4, and Debian 12
    has 3.11.2: this works on every Python the project supports.
    """
    root = os.path.realpath(dest)
    os.makedirs(root, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar:
            path = os.path.realpath(os.path.join(root, member.name))
            assert path == root or path.startswith(root + os.sep), member.name
            if member.isdir():
                os.makedirs(path, exist_ok=True)
                continue
            assert member.isreg(), f"{member.name}: not a plain file"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with source, open(path, "xb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
