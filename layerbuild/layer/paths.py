"""Archive names resolved as if chrooted: lexical cleaning and an O_NOFOLLOW directory walk."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from layerbuild.errors import FormatError, UnsafePath

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def clean(name: str) -> tuple[str, ...]:
    """The components of an archive name, rooted at the archive's root.

    A leading `/` or `./` is dropped (the name is rooted, as Docker does), `.` and empty
    components vanish, `..` removes the previous component and may not climb above the root.

    >>> clean("/usr/./bin//../lib/x")
    ('usr', 'lib', 'x')
    """
    if "\0" in name:
        raise FormatError(f"{name!r}: NUL byte in name")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise UnsafePath(f"{name!r}: climbs out of the root")
            parts.pop()
        else:
            parts.append(comp)
    return tuple(parts)


class Resolver:
    """Opens directories below a root fd one component at a time, never through a symlink."""

    def __init__(self, root_fd: int) -> None:
        self.fd = root_fd
        self.made: list[tuple[str, ...]] = []
        """The directories made on the way, in the order they were made."""

    def close(self) -> None:
        """Close the root fd."""
        os.close(self.fd)

    @contextmanager
    def parent(self, parts: tuple[str, ...], name: str, *, create: bool) -> Iterator[int]:
        """An O_PATH fd of the directory that holds the last component of `parts`."""
        with self.directory(parts[:-1], name, create=create) as fd:
            yield fd

    @contextmanager
    def directory(self, parts: tuple[str, ...], name: str, *, create: bool = True
                  ) -> Iterator[int]:
        """An O_PATH fd of the directory `parts`; missing ones are made (0755) when `create`.

        `name` is the archive member being applied, for error messages.
        """
        fd = os.dup(self.fd)
        try:
            for i, comp in enumerate(parts):
                child = self._step(fd, comp, name, parts[: i + 1], create)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _step(self, fd: int, comp: str, name: str, parts: tuple[str, ...], create: bool,
              ) -> int:
        path = "/".join(parts)
        try:
            return os.open(comp, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise FormatError(f"{name!r}: {path!r} does not exist") from None
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if stat.S_ISLNK(os.stat(comp, dir_fd=fd, follow_symlinks=False).st_mode):
                raise UnsafePath(f"{name!r}: would write through the symlink {path!r}") from None
            raise FormatError(f"{name!r}: {path!r} is not a directory") from None
        os.mkdir(comp, 0o755, dir_fd=fd)
        os.chmod(comp, 0o755, dir_fd=fd)  # whatever the umask
        self.made.append(parts)
        return os.open(comp, _DIR_FLAGS, dir_fd=fd)
