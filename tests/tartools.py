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
