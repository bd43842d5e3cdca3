"""Archive names resolved as if chrooted: lexical cleaning and an O_NOFOLLOW directory walk."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from layerbuild.errors import FormatError, UnsafePath

_SPECIAL = frozenset({"", ".", ".."})
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
    comps = name.strip("/").split("/")
    if not _SPECIAL.intersection(comps):  # the usual name: no per-component work
        return tuple(comps)
    parts: list[str] = []
    for comp in comps:
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
    """Opens directories below a root fd one component at a time, never through a symlink.

    The last directory resolved is kept open, so an archive's next entry in the same or a
    deeper directory starts from there: resolving stays linear in the name's length however
    deep the tree. `forget()` drops it whenever an entry replaces anything.
    """

    def __init__(self, root_fd: int, made: Callable[[os.stat_result], None] = lambda st: None,
                 ) -> None:
        self.fd = root_fd
        self._made = made
        """Called with the stat of each directory made on the way."""
        self._last: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        """Close the root fd."""
        self.forget()
        os.close(self.fd)

    def forget(self) -> None:
        """Resolve the next name from the root: the tree may have changed on the way to it."""
        if self._last is not None:
            os.close(self._last[1])
            self._last = None

    def parent(self, parts: tuple[str, ...], name: str, *,
               create: bool) -> AbstractContextManager[int]:
        """An O_PATH fd of the directory that holds the last component of `parts`."""
        return self.directory(parts[:-1], name, create=create)

    @contextmanager
    def directory(self, parts: tuple[str, ...], name: str, *, create: bool = True
                  ) -> Iterator[int]:
        """An O_PATH fd of the directory `parts`; missing ones are made (0755) when `create`.

        `name` is the archive member being applied, for error messages.
        """
        if self._last is not None and parts == self._last[0]:  # the last entry's dir again
            fd = os.dup(self._last[1])
            try:
                yield fd
            finally:
                os.close(fd)
            return
        start, fd = 0, self.fd
        if self._last is not None and parts[: len(self._last[0])] == self._last[0]:
            start, fd = len(self._last[0]), self._last[1]
        fd = os.dup(fd)
        try:
            for i in range(start, len(parts)):
                child = self._step(fd, parts, i, name, create)
                os.close(fd)
                fd = child
            self.forget()
            self._last = (parts, os.dup(fd))
            yield fd
        finally:
            os.close(fd)

    def _step(self, fd: int, parts: tuple[str, ...], i: int, name: str, create: bool) -> int:
        comp = parts[i]
        try:
            return os.open(comp, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise FormatError(f"{name!r}: {_join(parts, i)!r} does not exist") from None
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            path = _join(parts, i)
            if stat.S_ISLNK(os.stat(comp, dir_fd=fd, follow_symlinks=False).st_mode):
                raise UnsafePath(f"{name!r}: would write through the symlink {path!r}") from None
            raise FormatError(f"{name!r}: {path!r} is not a directory") from None
        os.mkdir(comp, 0o755, dir_fd=fd)
        os.chmod(comp, 0o755, dir_fd=fd)  # whatever the umask
        made = os.open(comp, _DIR_FLAGS, dir_fd=fd)
        self._made(os.fstat(made))
        return made


def _join(parts: tuple[str, ...], i: int) -> str:
    return "/".join(parts[: i + 1])
