"""Files opened for reading without writing their access time.

A read can update a file's atime (with `relatime`, the first read after each change does), and
that update is an inode write the filesystem journals: reading every file of a big tree, to
hash a context or write a layer's tar, would write as many inodes as it reads. `O_NOATIME`
leaves the atime alone; the kernel allows it to the file's owner and to a process with
CAP_FOWNER over it, and to anyone else the file is opened as usual.
"""

from __future__ import annotations

import os

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_quietly(path: str | bytes, dir_fd: int | None = None, flags: int = _READ) -> int:
    """os.open(path, flags | O_NOATIME, dir_fd=dir_fd), or without O_NOATIME where it is not
    allowed (a file of another owner); by default read-only, not following a final symlink."""
    try:
        return os.open(path, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:  # EPERM: not the owner; a real EACCES comes again below
        return os.open(path, flags, dir_fd=dir_fd)
