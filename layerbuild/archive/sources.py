"""Reading files out of an image archive: a tar file or a directory, both untrusted.

Names are resolved inside the archive only: `..` and absolute paths are refused, and symlinks
(docker save of Docker 20.10 links duplicate layers) are followed within the archive.
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO, Protocol

from layerbuild.errors import FormatError, UnsafePath

_MAX_LINKS = 16


def clean_name(name: str) -> str:
    """A member name normalised and checked to stay inside the archive."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"archive entry {name!r} points outside the archive")
    if not parts:
        raise UnsafePath(f"archive entry name {name!r} is empty")
    return "/".join(parts)


class Source(Protocol):
    """Files of an archive, by name."""

    def exists(self, name: str) -> bool:
        """Whether a regular file of that name is in the archive."""
        ...

    def open(self, name: str) -> BinaryIO:
        """A stream of that file's bytes."""
        ...

    def close(self) -> None:
        """Release the archive."""
        ...


class TarSource:
    """An archive held in a (seekable, uncompressed) tar file."""

    def __init__(self, path: Path) -> None:
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - kept open for reads
            members = self._tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FormatError(f"{path}: not a readable tar archive ({exc})") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        for member in members:
            self._members[clean_name(member.name)] = member

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        name = clean_name(name)
        for _ in range(_MAX_LINKS):
            member = self._members.get(name)
            if member is None or member.isreg():
                return member
            if member.issym():
                target = member.linkname
                joined = target if target.startswith("/") else posixpath.join(
                    posixpath.dirname(name), target)
                name = clean_name(joined)
            elif member.islnk():
                name = clean_name(member.linkname)
            else:
                return None
        raise UnsafePath(f"archive entry {name!r}: too many levels of links")

    def exists(self, name: str) -> bool:
        return self._resolve(name) is not None

    def open(self, name: str) -> BinaryIO:
        member = self._resolve(name)
        if member is None:
            raise FormatError(f"archive has no file {name!r}")
        stream = self._tar.extractfile(member)
        if stream is None:
            raise FormatError(f"archive entry {name!r} is not a file")
        return stream  # type: ignore[return-value]

    def close(self) -> None:
        self._tar.close()


class DirSource:
    """An archive unpacked into a directory (an OCI image layout, say)."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    def _path(self, name: str) -> Path:
        path = (self._root / clean_name(name)).resolve()
        if path != self._root and self._root not in path.parents:
            raise UnsafePath(f"{name!r} leads outside {self._root}")
        return path

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise FormatError(f"{self._root} has no file {name!r}") from None

    def close(self) -> None:
        pass
