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

Given the step's upper dir, the copy writes what goes below a directory it made straight into
the upper dir, not through overlayfs. Nothing of the lower layers can be below a directory that
did not exist, so overlayfs would only pass such writes on (it copies up and marks nothing
there), at about twice the cost; paths through the merged view that lead there are never looked
up meanwhile. Given a `Reuse`, an unchanged file is hard-linked from the step's previous layer
instead of copied (see `Reuse`).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from layerbuild.epoch import clamped_ns
from layerbuild.errors import StepFailed
from layerbuild.nsmap import unmapped_text
from layerbuild.reading import open_quietly
from layerbuild.sandbox import libc
from layerbuild.sandbox.inroot import MAX_LINKS, Resolved, resolve

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CANNOT_LINK = (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOSPC)


class Reuse:
    """The step's previous layer, whose files stand in for sources unchanged since it was made.

    `changed` are the source paths whose content differs from what went into that layer (or
    that are new). A regular file of any other source path is hard-linked from the layer, not
    copied, when the layer holds a regular file at the same path with what a copy would give
    it: size, mtime (as clamped), permission bits and owner (the content is the same, its
    digest says). A file with more than one link in the source is copied, and so is a second
    file the same inode would stand in for: the layer's hard links are the copy's own. The
    layer is reached through real directories only (see `libc.open_beneath`), never through a
    symlink. Layers are never changed once stored, so a file may belong to both.
    """

    def __init__(self, layer_fd: int, changed: set[str], epoch: int | None = None) -> None:
        self.layer_fd = layer_fd
        self.changed = changed
        self.epoch = epoch
        """The SOURCE_DATE_EPOCH the layer's mtimes were clamped to (`epoch.clamped_ns`)."""
        self.inodes: set[int] = set()
        """The layer's inodes linked so far."""
        self._dir: tuple[str | None, int] = (None, -1)
        """The layer's directory last looked in, with its fd (-1: not there)."""

    def dir_fd(self, path: str) -> int:
        """An fd of the layer's directory `path` (relative), -1 if it has none there."""
        if self._dir[0] == path:
            return self._dir[1]
        self.close()
        try:
            fd = libc.open_beneath(self.layer_fd, path or ".", _PATH_DIR)
        except OSError:
            fd = -1
        self._dir = (path, fd)
        return fd

    def close(self) -> None:
        """Close the directory fd kept open."""
        if self._dir[1] != -1:
            os.close(self._dir[1])
        self._dir = (None, -1)


class Copier:
    """Copies items from a source root fd into the current (chrooted) root.

    With `upper_fd` (the step's upper dir), what goes below a directory made by this copy is
    written there directly (see the module); `reuse` links unchanged files from the step's
    previous layer.
    """

    def __init__(self, source_fd: int, follow_symlinks: bool,
                 rootless: dict[str, Any] | None = None, upper_fd: int | None = None,
                 reuse: Reuse | None = None) -> None:
        self.source_fd = source_fd
        self.follow = follow_symlinks
        self.rootless = rootless
        """The rootless namespace's `userns.facts()` (read before the chroot), or None."""
        self.dir_times: dict[str, tuple[int, int]] = {}
        """(atime, mtime) in ns that each directory written into or made ends up with."""
        self.links: dict[tuple[int, int, int], str] = {}
        """The first copy of each multiply linked source file, by (link group, device, inode)."""
        self.upper = upper_fd
        self.made: dict[str, str] = {}
        """Each directory this copy made, by its path in the image as the copy named it: its
        path in the upper dir (relative, through real directories only)."""
        self.reuse = reuse if upper_fd is not None else None
        self._looked: tuple[str, tuple[int | None, str, os.stat_result | None]] | None = None
        """The upper dir's entry `_isdir` looked at last, until `_replace` takes it (nothing
        is written between the two)."""
        self._open_source: tuple[str, Resolved] | None = None
        """The source directory of the entry copied last, resolved (see `_source_dir`)."""

    def copy_all(self, items: Iterable[dict[str, Any]]) -> None:
        """Copy every item, then give the directories involved their final times."""
        try:
            for item in items:
                self.copy(item)
            for dest, times in self.dir_times.items():
                made = self.made.get(dest)
                if made is None:
                    os.utime(dest, ns=times)
                else:
                    os.utime(made or ".", ns=times, dir_fd=self.upper)
        finally:
            self._close_dir()
            if self.reuse is not None:
                self.reuse.close()

    def _at(self, dest: str) -> tuple[int | None, str]:
        """Where a write to `dest` goes: (None, dest) through the merged view, or (upper dir
        fd, its path there) when dest's parent is a directory this copy made."""
        if self.upper is None:
            return None, dest
        parent, name = posixpath.split(dest)
        made = self.made.get(parent)
        if made is None or name in ("", ".", ".."):
            return None, dest
        return self.upper, posixpath.join(made, name)

    def _lstat(self, dest: str) -> tuple[int | None, str, os.stat_result | None]:
        """`_at(dest)` and what is there now, not following a symlink (None: nothing)."""
        fd, path = self._at(dest)
        try:
            return fd, path, os.stat(path, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return fd, path, None

    def _isdir(self, dest: str) -> bool:
        """os.path.isdir in the image: a symlink to a directory counts (one made in the upper
        dir is followed through the merged view, where its target counts inside the image)."""
        if self.upper is None or self._at(dest)[0] is None:
            return os.path.isdir(dest)
        found = self._lstat(dest)
        self._looked = (dest, found)  # for `_replace`, which often comes next
        st = found[2]
        if st is not None and stat.S_ISLNK(st.st_mode):
            return os.path.isdir(dest)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def _made(self, dest: str, fd: int | None, path: str) -> None:
        """Note a directory this copy made at `dest` (written at `path` below `fd`)."""
        if self.upper is not None:
            self.made[dest] = path if fd is not None else self._in_upper(dest)

    def _writing_into(self, directory: str) -> None:
        """Note a directory's times before its first change (its entries are about to be)."""
        if directory not in self.dir_times:
            # Through the merged view unless this copy made it: a symlink the copy wrote in
            # the upper dir leads somewhere in the image, never to the host's own path.
            made = self.made.get(directory)
            st = os.stat(made or ".", dir_fd=self.upper) if made is not None \
                else os.stat(directory)
            self.dir_times[directory] = (st.st_atime_ns, st.st_mtime_ns)

    def makedirs(self, path: str, uid: int, gid: int, times: tuple[int, int],
                 links: int = 0) -> None:
        """`mkdir -p` inside the chroot: new directories 0755, owned by uid:gid, with `times`.

        A dangling image symlink on the way has its target made, inside the image (as BuildKit
        does); the chroot keeps every lookup there.
        """
        if path in self.made:
            return
        current = "/"
        for comp in path.split("/"):
            if comp in ("", "."):
                continue
            parent, current = current, posixpath.join(current, comp)
            if current in self.made or self._isdir(current):
                continue
            fd, at, st = self._lstat(current)
            if st is not None and stat.S_ISLNK(st.st_mode):
                if links >= MAX_LINKS:
                    raise StepFailed(f"{path}: too many levels of symbolic links")
                self.makedirs(posixpath.join(parent, os.readlink(at, dir_fd=fd)), uid, gid,
                              times, links + 1)
                continue
            if st is not None:
                raise StepFailed(f"{current} is not a directory in the image")
            self._writing_into(parent)
            os.mkdir(at, 0o755, dir_fd=fd)
            self._looked = None
            os.chown(at, uid, gid, dir_fd=fd, follow_symlinks=False)
            os.chmod(at, 0o755, dir_fd=fd)
            self._made(current, fd, at)
            self.dir_times[current] = times

    def copy(self, item: dict[str, Any]) -> None:
        """Copy one item."""
        source = item["source"]
        head, leaf = posixpath.split(source)
        if not self.follow and not item["recursive"] and leaf not in ("", ".", ".."):
            # One of many entries of a directory, most likely after its sibling: the
            # directory stays resolved, the entry is looked at in it.
            parent = self._source_dir(head, source)
            try:
                st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise StepFailed(f"{source}: no such file or directory in the source") from None
            self._copy_named(parent, leaf, st, item, leaf)
            return
        with resolve(self.source_fd, source, strict=True, follow_last=self.follow) as res:
            if not res.exists:
                raise StepFailed(f"{source}: no such file or directory in the source")
            parent = res.fds[-2] if len(res.fds) > 1 else self.source_fd
            name = res.names[-1] if res.names else None
            st = os.fstat(res.fd)
            # A followed symlink is copied under its own name, as Docker does.
            shown = posixpath.basename(posixpath.normpath(source))
            self._copy_named(parent, name, st, item,
                             name if shown in ("", ".", "..", "/") else shown)

    def _source_dir(self, path: str, source: str) -> int:
        """An fd of the source directory `path` (resolved as any source is), kept for the
        next entry of the same directory."""
        if not path:
            return self.source_fd
        if self._open_source is not None and self._open_source[0] == path:
            return self._open_source[1].fd
        self._close_dir()
        res = resolve(self.source_fd, path, strict=True)
        if not res.exists or not res.is_dir():
            res.close()
            raise StepFailed(f"{source}: no such file or directory in the source")
        self._open_source = (path, res)
        return res.fd

    def _close_dir(self) -> None:
        if self._open_source is not None:
            self._open_source[1].close()
            self._open_source = None

    def _copy_named(self, parent: int, name: str | None, st: os.stat_result,
                    item: dict[str, Any], shown: str | None) -> None:
        """Copy the source entry `name` in `parent` (the source root itself for None)."""
        source, dest = item["source"], item["dest"]
        try:
            self._copy_top(parent, name, st, dest, item, shown)
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
                dest.endswith("/") or (item["into_existing_dir"] and self._isdir(dest))):
            dest = posixpath.join(dest, shown or "")
        self.makedirs(posixpath.dirname(dest.rstrip("/")) or "/", uid, gid, times)
        self._entry(parent, name, st, dest.rstrip("/") or "/", item, recurse=False)

    def _open(self, parent: int, name: str | None, flags: int) -> int:
        if name is None:
            return os.open(".", flags & ~os.O_NOFOLLOW, dir_fd=self.source_fd)
        if flags == _FILE:  # read without writing the source's access time
            return open_quietly(name, parent, flags)
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
        if not stat.S_ISSOCK(mode) and not (stat.S_ISDIR(mode) and self._isdir(dest)):
            self._writing_into(posixpath.dirname(dest))
        try:
            if stat.S_ISDIR(mode):
                self._dir(parent, name, st, dest, item, (uid, gid, perms), recurse)
            elif stat.S_ISREG(mode):
                self._file(parent, name, st, dest, (uid, gid, perms), item["link_group"],
                           None if recurse else item["source"])
            elif stat.S_ISLNK(mode):
                assert name is not None
                target = os.readlink(name, dir_fd=parent)
                fd, at = self._replace(dest)
                os.symlink(target, at, dir_fd=fd)
                os.chown(at, uid, gid, dir_fd=fd, follow_symlinks=False)
                os.utime(at, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd,
                         follow_symlinks=False)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                fd, at = self._replace(dest)
                os.mknod(at, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=fd)
                os.chown(at, uid, gid, dir_fd=fd, follow_symlinks=False)
                os.chmod(at, perms, dir_fd=fd)
                os.utime(at, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd)
            # sockets are not copied, as in Docker
        except OSError as exc:
            if exc.filename is not None and not str(exc.filename).startswith("/"):
                exc.filename = dest  # named as in the image, not as in the upper dir
            raise

    def _dir(self, parent: int, name: str | None, st: os.stat_result, dest: str,
             item: dict[str, Any], owner: tuple[int, int, int], recurse: bool) -> None:
        created = not self._isdir(dest)  # an existing one (or a link to one) is kept
        if created:
            at_fd, at = self._replace(dest)
            os.mkdir(at, 0o700, dir_fd=at_fd)
            self._made(dest, at_fd, at)
        fd = self._open(parent, name, _DIR)
        try:
            if created:
                out = os.open(at, _DIR, dir_fd=at_fd)
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
              owner: tuple[int, int, int], group: int, source: str | None) -> None:
        key = (group, st.st_dev, st.st_ino)
        first = self.links.get(key) if st.st_nlink > 1 else None
        if first is None and self.reuse is not None:
            fd, at = self._at(dest)
            if fd is not None and self._reused(source, st, at, owner, dest):
                return
        fd, at = self._replace(dest)
        if first is not None:
            self._link(first, dest)
            return
        src = self._open(parent, name, _FILE)
        try:
            out = os.open(at, _NEW, 0o600, dir_fd=fd)
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

    def _link(self, first: str, dest: str) -> None:
        """Make dest another name of the file this copy wrote at `first`."""
        src_fd, src = self._at(first)
        dst_fd, dst = self._at(dest)
        if src_fd is None and dst_fd is None:
            os.link(first, dest, follow_symlinks=False)
            return
        # Both in the upper dir, where the copy wrote them (not every name of the merged
        # view can see what was written there directly).
        os.link(src if src_fd is not None else self._in_upper(first),
                dst if dst_fd is not None else self._in_upper(dest),
                src_dir_fd=self.upper, dst_dir_fd=self.upper, follow_symlinks=False)

    def _in_upper(self, path: str) -> str:
        """The upper dir's path of an entry this copy wrote through the merged view."""
        parent, name = posixpath.split(path)
        return posixpath.join(os.path.realpath(parent).lstrip("/"), name)

    def _reused(self, source: str | None, st: os.stat_result, at: str,
                owner: tuple[int, int, int], dest: str) -> bool:
        """Whether the file for `source` was linked at `at` (in the upper dir, for `dest`)
        from the previous layer (see `Reuse`); what was at `at` is replaced only then (most
        often nothing is: the link is tried first)."""
        reuse = self.reuse
        if reuse is None or source is None or st.st_nlink > 1 or source in reuse.changed:
            return False
        where, name = posixpath.split(at)
        layer_dir = reuse.dir_fd(where)
        if layer_dir == -1:
            return False
        try:
            was = os.stat(name, dir_fd=layer_dir, follow_symlinks=False)
        except OSError:
            return False
        uid, gid, perms = owner
        if not stat.S_ISREG(was.st_mode) or was.st_ino in reuse.inodes \
                or (was.st_size, was.st_mtime_ns, stat.S_IMODE(was.st_mode), was.st_uid,
                    was.st_gid) != (st.st_size, clamped_ns(st.st_mtime_ns, reuse.epoch), perms,
                                    uid, gid):
            return False
        try:
            try:
                os.link(name, at, src_dir_fd=layer_dir, dst_dir_fd=self.upper,
                        follow_symlinks=False)
            except FileExistsError:  # an earlier item wrote this dest: the later one wins
                self._looked = None
                self._replace(dest)
                os.link(name, at, src_dir_fd=layer_dir, dst_dir_fd=self.upper,
                        follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _CANNOT_LINK:
                raise
            if exc.errno != errno.EMLINK:  # the layer cannot be linked from at all
                reuse.close()
                self.reuse = None
            return False
        self._looked = None  # what `_isdir` saw at dest is gone
        reuse.inodes.add(was.st_ino)
        return True

    def _replace(self, dest: str) -> tuple[int | None, str]:
        """Make room for a new entry at dest (`_at(dest)`, which it returns); a directory
        there is an error, as in Docker."""
        looked, self._looked = self._looked, None
        fd, at, st = looked[1] if looked is not None and looked[0] == dest \
            else self._lstat(dest)
        if st is None:
            return fd, at
        if stat.S_ISDIR(st.st_mode):
            raise StepFailed(f"cannot replace the directory {dest} with a non-directory")
        os.unlink(at, dir_fd=fd)
        return fd, at


def _item_times(item: dict[str, Any], st: os.stat_result) -> tuple[int, int]:
    """The times of directories an item makes without a source of their own."""
    if item["made_time"] is None:
        return st.st_atime_ns, st.st_mtime_ns
    made = item["made_time"] * 1_000_000_000
    return made, made


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
