"""Writing files so that a crash leaves the old content or the new, never a part of either.

Every writer of a file that others read (store metadata, cache entries, build records, archives)
goes through here: the bytes go to a temp file beside the target, are fsynced, and one rename
puts them in place; the directory is fsynced so the rename itself survives a power cut.

>>> write_atomic(Path("/tmp/x.json"), b"{}")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def temp_name(path: Path) -> Path:
    """A temp file beside `path`, unique to this process and thread: `.NAME.PID.TID.tmp`.

    Writers in several threads (stages built at once) may write the same target at once.
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (a rename into it, say) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` when the block ends without an error.

    On an error the temp file is removed and `path` is left as it was. With `durable`, the file
    and the rename are fsynced; without, only the rename is atomic (for throwaway outputs).
    """
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as out:
            yield out
            out.flush()
            if durable:
                os.fsync(out.fileno())
        tmp.rename(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` in one step (see `atomic_file`)."""
    with atomic_file(path, durable=durable) as out:
        out.write(data)


def is_temp(name: str) -> bool:
    """Whether a file name is one of `temp_name`'s (debris if its writer is gone)."""
    return name.startswith(".") and name.endswith(".tmp")


def temp_writer(name: str) -> int | None:
    """The process ID of the writer of a temp file name, or None for any other name.

    Knows `temp_name`'s `.NAME.PID.TID.tmp` and the forms older versions wrote:
    `.NAME.PID.TID` and `.NAME.PID`.

    >>> temp_writer(".k.json.41.7.tmp"), temp_writer(".k.json.41.7"), temp_writer(".k.41")
    (41, 41, 41)
    """
    if not name.startswith("."):
        return None
    parts = name[1:].removesuffix(".tmp").split(".")
    numbers = 0
    while numbers < min(2, len(parts) - 1) and parts[-1 - numbers].isdigit():
        numbers += 1
    if numbers == 0 or (numbers == 1 and name.endswith(".tmp")):
        return None
    return int(parts[-numbers])
