"""COPY inside the sandbox: sources read below a root fd, destinations written after chroot.

Sources are reached only through fds opened below the source root (opened before the chroot):
`..` or a symlink that climbs out of it is refused, absolute symlinks count from it. The
process is chrooted into the step's merged overlay before it writes, so destinations are plain
paths that the kernel resolves inside the image: an image symlink `/app -> /etc` leads to the
image's /etc, never the host's. Copies keep Docker COPY's rules: modes, times, symlinks, hard
links within an item's link group and xattrs (except overlayfs' own) are kept; owners are the
item's.

Directory times never depend on when the copy ran, so the same sources give the same layer: a
directory copied from a source keeps the source's times, one made on the way to a destination
takes the item's source times (or its `made_time`), and an existing directory the copy writes
into keeps the times it had.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from layerbuild.errors import StepFailed
from layerbuild.nsmap import unmapped_text
from layerbuild.sandbox.inroot import MAX_LINKS, resolve

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class Copier:
    """Copies items from a source root fd into the current (chrooted) root."""

    def __init__(self, source_fd: int, follow_symlinks: bool,
                 rootless: dict[str, Any] | None = None) -> None:
        self.source_fd = source_fd
        self.follow = follow_symlinks
        self.rootless = rootless
        """The rootless namespace's `userns.facts()` (read before the chroot), or None."""
        self.dir_times: dict[str, tuple[int, int]] = {}
        """(atime, mtime) in ns that each directory written into or made ends up with."""
        self.links: dict[tuple[int, int, int], str] = {}
        """The first copy of each multiply linked source file, by (link group, device, inode)."""

    def copy_all(self, items: Iterable[dict[str, Any]]) -> None:
        """Copy every item, then give the directories involved their final times."""
        for item in items:
            self.copy(item)
        for dest, times in self.dir_times.items():
            os.utime(dest, ns=times)

    def _writing_into(self, directory: str) -> None:
        """Note a directory's times before its first change (its entries are about to be)."""
        if directory not in self.dir_times:
            st = os.stat(directory)
            self.dir_times[directory] = (st.st_atime_ns, st.st_mtime_ns)

    def makedirs(self, path: str, uid: int, gid: int, times: tuple[int, int],
                 links: int = 0) -> None:
        """`mkdir -p` inside the chroot: new directories 0755, owned by uid:gid, with `times`.

        A dangling image symlink on the way has its target made, inside the image (as BuildKit
        does); the chroot keeps every lookup there.
        """
        current = "/"
        for comp in path.split("/"):
            if comp in ("", "."):
                continue
            parent, current = current, posixpath.join(current, comp)
            if os.path.isdir(current):
                continue
            if os.path.islink(current):
                if links >= MAX_LINKS:
                    raise StepFailed(f"{path}: too many levels of symbolic links")
                self.makedirs(posixpath.join(parent, os.readlink(current)), uid, gid, times,
                              links + 1)
                continue
            if os.path.lexists(current):
                raise StepFailed(f"{current} is not a directory in the image")
            self._writing_into(parent)
            os.mkdir(current, 0o755)
            os.chown(current, uid, gid)
            os.chmod(current, 0o755)
            self.dir_times[current] = times

    def copy(self, item: dict[str, Any]) -> None:
        """Copy one item."""
        source, dest = item["source"], item["dest"]
        with resolve(self.source_fd, source, strict=True, follow_last=self.follow) as res:
            if not res.exists:
                raise StepFailed(f"{source}: no such file or directory in the source")
            parent = res.fds[-2] if len(res.fds) > 1 else self.source_fd
            name = res.names[-1] if res.names else None
            st = os.fstat(res.fd)
            # A followed symlink is copied under its own name, as Docker does.
            shown = posixpath.basename(posixpath.normpath(source))
            try:
                self._copy_top(parent, name, st, dest, item,
                               name if shown in ("", ".", "..", "/") else shown)
            except OSError as exc:
                where = exc.filename or dest
                if exc.errno == errno.EINVAL:  # an owner the (rootless) namespace lacks
                    raise StepFailed(unmapped_text(
                        f"copying {source} to {dest}: {where}", item["uid"] or 0,
                        item["gid"] or 0, **(self.rootless or {"user": "this user",
                                                               "ids": 0}))) from None
                raise StepFailed(f"copying {source} to {dest}: {where}: {exc.strerror}") from None

    def _copy_top(self, parent: int, name: str | None, st: os.stat_result, dest: str,
                  item: dict[str, Any], shown: str | None) -> None:
        uid, gid = item["uid"] or 0, item["gid"] or 0
        times = _item_times(item, st)
        if stat.S_ISDIR(st.st_mode) and item["recursive"]:
            self.makedirs(dest, uid, gid, times)
            fd = self._open(parent, name, _DIR)
            try:
                self._tree(fd, dest, item)
            finally:
                os.close(fd)
            return
        if name is None and not stat.S_ISDIR(st.st_mode):
            raise StepFailed(f"{item['source']}: not a directory")
        if not stat.S_ISDIR(st.st_mode) and (
                dest.endswith("/") or (item["into_existing_dir"] and os.path.isdir(dest))):
            dest = posixpath.join(dest, shown or "")
        self.makedirs(posixpath.dirname(dest.rstrip("/")) or "/", uid, gid, times)
        self._entry(parent, name, st, dest.rstrip("/") or "/", item, recurse=False)

    def _open(self, parent: int, name: str | None, flags: int) -> int:
        if name is None:
            return os.open(".", flags & ~os.O_NOFOLLOW, dir_fd=self.source_fd)
        return os.open(name, flags, dir_fd=parent)

    def _tree(self, dir_fd: int, dest: str, item: dict[str, Any]) -> None:
        for name in sorted(os.listdir(dir_fd)):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            self._entry(dir_fd, name, st, posixpath.join(dest, name), item, recurse=True)

    def _entry(self, parent: int, name: str | None, st: os.stat_result, dest: str,
               item: dict[str, Any], recurse: bool) -> None:
        mode = st.st_mode
        uid = item["uid"] if item["uid"] is not None else st.st_uid
        gid = item["gid"] if item["gid"] is not None else st.st_gid
        perms = item["mode"] if item["mode"] is not None else stat.S_IMODE(mode)
        # Only a change to the parent notes it: one left alone (an existing directory is
        # kept, a socket skipped) is not touched, so the layer does not copy it up.
        if not stat.S_ISSOCK(mode) and not (stat.S_ISDIR(mode) and os.path.isdir(dest)):
            self._writing_into(posixpath.dirname(dest))
        if stat.S_ISDIR(mode):
            self._dir(parent, name, st, dest, item, (uid, gid, perms), recurse)
        elif stat.S_ISREG(mode):
            self._file(parent, name, st, dest, (uid, gid, perms), item["link_group"])
        elif stat.S_ISLNK(mode):
            assert name is not None
            target = os.readlink(name, dir_fd=parent)
            _replace(dest)
            os.symlink(target, dest)
            os.chown(dest, uid, gid, follow_symlinks=False)
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            _replace(dest)
            os.mknod(dest, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            os.chown(dest, uid, gid)
            os.chmod(dest, perms)
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
        # sockets are not copied, as in Docker

    def _dir(self, parent: int, name: str | None, st: os.stat_result, dest: str,
             item: dict[str, Any], owner: tuple[int, int, int], recurse: bool) -> None:
        created = not os.path.isdir(dest)  # an existing one (or a link to one) is kept
        if created:
            _replace(dest)
            os.mkdir(dest, 0o700)
        fd = self._open(parent, name, _DIR)
        try:
            if created:
                out = os.open(dest, _DIR)
                try:
                    _set_meta(fd, out, owner)
                finally:
                    os.close(out)
                top = dest == (item["dest"].rstrip("/") or "/")
                self.dir_times[dest] = _item_times(item, st) if top \
                    else (st.st_atime_ns, st.st_mtime_ns)
            if recurse:
                self._tree(fd, dest, item)
        finally:
            os.close(fd)

    def _file(self, parent: int, name: str | None, st: os.stat_result, dest: str,
              owner: tuple[int, int, int], group: int) -> None:
        key = (group, st.st_dev, st.st_ino)
        first = self.links.get(key) if st.st_nlink > 1 else None
        _replace(dest)
        if first is not None:
            os.link(first, dest, follow_symlinks=False)
            return
        src = self._open(parent, name, _FILE)
        try:
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600)
            try:
                _copy_data(src, out)
                _set_meta(src, out, owner)
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
        finally:
            os.close(src)
        if st.st_nlink > 1:
            self.links[key] = dest


def _item_times(item: dict[str, Any], st: os.stat_result) -> tuple[int, int]:
    """The times of directories an item makes without a source of their own."""
    if item["made_time"] is None:
        return st.st_atime_ns, st.st_mtime_ns
    made = item["made_time"] * 1_000_000_000
    return made, made


def _replace(dest: str) -> None:
    """Make room for a new entry at dest; a directory there is an error, as in Docker."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise StepFailed(f"cannot replace the directory {dest} with a non-directory")
    os.unlink(dest)


def _copy_data(src: int, out: int) -> None:
    try:
        while os.copy_file_range(src, out, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, 1 << 20):
        os.write(out, chunk)


def _set_meta(src: int, out: int, owner: tuple[int, int, int]) -> None:
    uid, gid, perms = owner
    os.fchown(out, uid, gid)  # before xattrs: chown drops security.capability
    for key in _xattr_names(src):
        if not key.startswith(("trusted.overlay.", "user.overlay.")):
            os.setxattr(out, key, os.getxattr(src, key))
    os.fchmod(out, perms)  # after chown, which clears setuid bits


def _xattr_names(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
