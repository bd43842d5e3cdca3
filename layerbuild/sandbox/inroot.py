"""Image paths resolved as if chrooted: symlinks followed inside the root, `..` stopping at `/`.

Every lookup is one `openat(O_PATH|O_NOFOLLOW)` of one component below a directory fd; a
symlink is read and its target walked again from the image root (absolute) or from where it
sits (relative). The kernel never follows an image symlink for us, so a link such as
`/etc/resolv.conf -> /root/.ssh/x` or `/proc -> ../../..` can only ever name a place inside
the image. The result holds an O_PATH fd of what was found, which a mount can then target
through `/proc/self/fd/N` without a second lookup (the approach runc takes against races).
"""

from __future__ import annotations

import os
import stat

from layerbuild.errors import StepFailed, UnsafePath
from layerbuild.sandbox import libc

MAX_LINKS = 40
_OPEN = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Resolved:
    """A path resolved in an image: its canonical components and fds of those that exist."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.names: list[str] = []
        self.fds: list[int] = []

    @property
    def exists(self) -> bool:
        """Whether every component exists."""
        return len(self.fds) == len(self.names)

    @property
    def fd(self) -> int:
        """An O_PATH fd of the path itself (it must exist)."""
        assert self.exists
        return self.fds[-1] if self.fds else self.root_fd

    @property
    def path(self) -> str:
        """The canonical path inside the image, symlinks resolved."""
        return "/" + "/".join(self.names)

    def is_dir(self) -> bool:
        """Whether the existing path is a directory."""
        return stat.S_ISDIR(os.fstat(self.fd).st_mode)

    def close(self) -> None:
        """Close the fds this resolution holds (never the root's)."""
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def __enter__(self) -> Resolved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parts(path: str) -> list[str]:
    """Components still to walk, last first (a stack)."""
    return [p for p in reversed(path.split("/")) if p not in ("", ".")]


def resolve(root_fd: int, path: str, *, strict: bool = False, follow_last: bool = True
            ) -> Resolved:
    """Resolve `path` below `root_fd` as the kernel would after chroot, never leaving the root.

    Missing components are kept (not created); `..` inside them just drops the last one.
    `strict`: a `..` above the root is an error (UnsafePath) instead of staying at the root.
    `follow_last=False`: a final symlink is the result itself, as with lstat.
    """
    if "\0" in path:
        raise StepFailed(f"{path!r}: NUL byte in path")
    res = Resolved(root_fd)
    todo = _parts(path)
    links = 0
    try:
        while todo:
            comp = todo.pop()
            if comp == "..":
                if strict and not res.names:
                    raise UnsafePath(f"{path}: leads out of its root")
                if res.names:
                    if res.exists:
                        os.close(res.fds.pop())
                    res.names.pop()
                continue
            if not res.exists:
                res.names.append(comp)
                continue
            try:
                fd = os.open(comp, _OPEN, dir_fd=res.fd)
            except FileNotFoundError:
                res.names.append(comp)
                continue
            except NotADirectoryError:
                raise StepFailed(f"{path}: {res.path} is not a directory") from None
            if not stat.S_ISLNK(os.fstat(fd).st_mode) or (not todo and not follow_last):
                res.names.append(comp)
                res.fds.append(fd)
                continue
            os.close(fd)
            links += 1
            if links > MAX_LINKS:
                raise StepFailed(f"{path}: too many levels of symbolic links")
            target = os.readlink(comp, dir_fd=res.fd)
            if target.startswith("/"):
                res.close()
                res.names.clear()
            todo.extend(_parts(target))
    except BaseException:
        res.close()
        raise
    return res


def ensure(root_fd: int, path: str, kind: str, mode: int = 0o755, uid: int = 0,
           gid: int = 0) -> Resolved:
    """Resolve `path` and create what is missing: directories, then a `kind` ("dir"/"file")."""
    res = resolve(root_fd, path)
    try:
        if res.exists:
            if kind == "dir" and not res.is_dir():
                raise StepFailed(f"{path} is not a directory in the image ({res.path})")
            if kind == "file" and res.is_dir():
                raise StepFailed(f"{path} is a directory in the image ({res.path}), "
                                 "a file is needed")
            return res
        for i in range(len(res.fds), len(res.names)):
            name, parent = res.names[i], res.fds[-1] if res.fds else root_fd
            if i == len(res.names) - 1 and kind == "file":
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644, dir_fd=parent))
                file_mode = 0o644
            else:
                os.mkdir(name, mode, dir_fd=parent)
                file_mode = mode
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(name, file_mode, dir_fd=parent)  # just made: not a symlink
            res.fds.append(os.open(name, _OPEN, dir_fd=parent))
    except OSError as exc:
        res.close()
        raise StepFailed(f"cannot create {path} in the image: {exc.strerror}") from None
    except BaseException:
        res.close()
        raise
    return res


def read_file(root_fd: int, path: str, limit: int) -> bytes | None:
    """The bytes of an image's regular file, `path` resolved by the kernel as after chroot
    into `root_fd`; None when it does not exist. StepFailed when it is not a regular file, is
    larger than `limit` bytes or cannot be opened."""
    try:
        fd = libc.open_in_root(root_fd, path, _READ)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StepFailed(f"{path} in the image: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StepFailed(f"{path} in the image is not a regular file")
        data = bytearray()
        while len(data) <= limit and (chunk := os.read(fd, 1 << 16)):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise StepFailed(f"{path} in the image is larger than {limit} bytes")
    return bytes(data)
