"""A sandbox that runs no process and needs no root, for engine tests.

It builds real layers: copies are plain Python writes into the step's upper dir (owners set
only when running as root), reads look in the upper dir and then the lowers, top first, and a
RUN is a function the test scripts for its command text. A RUN's USER and HOME, and a copy's
`as_user`, are looked up in the image's /etc/passwd and /etc/group as the real sandbox does
(the same `layerbuild.users` rules on the files the step sees). Every call is recorded in
`calls`, with the spec as the builder gave it.
Whiteouts and symlinks inside the image are not emulated; hard links are kept within an
item's link group, as the real copy keeps them.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from layerbuild.nsmap import in_user_namespace
from layerbuild.sandbox.spec import CopyItem, PreviousLayer, RunSpec, StepRoot, parse_user
from layerbuild.users import Ids, home_dir, step_ids

Script = Callable[[Path, RunSpec], int]
"""A scripted RUN: writes into the upper dir it is given, returns the exit code. Its spec is
the one the step runs with: `user` numeric and HOME in `env`, as looked up in the image."""


def writes(files: dict[str, str], code: int = 0) -> Script:
    """A scripted RUN that writes `files` (in-image path: text) and exits with `code`."""

    def run(upper: Path, spec: RunSpec) -> int:
        for path, text in files.items():
            target = upper / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return code

    return run


@dataclass
class FakeSandbox:
    """Runs RUN steps from `scripts` (keyed by the command text) and copies with plain Python."""

    scripts: dict[str, Script] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)
    previous: list[PreviousLayer | None] = field(default_factory=list)
    """The `previous` of each copy_into call, in order."""
    settled: int = 0
    prepared: list[tuple[str, str, int]] = field(default_factory=list)
    """Each `prepare` hint, (kind, network, count), in order; not in `calls`, since it runs
    nothing."""

    def calls_of(self, op: str) -> list[object]:
        """The arguments of every call of one operation, in order."""
        return [args for name, args in self.calls if name == op]

    def run(self, root: StepRoot, spec: RunSpec, on_output: Callable[[bytes], None]) -> int:
        """Run the script for the command (its last argv word: `sh -c TEXT`)."""
        self.calls.append(("run", spec))
        script = self.scripts.get(spec.argv[-1])
        if script is None:
            on_output(f"no script for {spec.argv[-1]!r}\n".encode())
            return 127
        return script(root.upper, _as_run(root, spec))

    def copy_into(self, root: StepRoot, source: Path | Sequence[Path],
                  items: Sequence[CopyItem], follow_source_symlinks: bool = False,
                  as_user: str | None = None, previous: PreviousLayer | None = None) -> None:
        """Copy items as the real copy does for plain files and directories (every file
        copied: `previous`, an offer the real copy may take, is only noted)."""
        self.calls.append(("copy_into", (source, list(items))))
        self.previous.append(previous)
        if as_user is not None:
            (uid, gid, _groups), _home = _lookup(root, as_user, (0, 0, ()))
            items = [replace(item, uid=uid, gid=gid) for item in items]
        if isinstance(source, Path | str):
            _Copier(root, Path(source), follow_source_symlinks).copy_all(items)
            return
        with tempfile.TemporaryDirectory(dir=root.upper.parent) as merged:
            _merge(list(source), Path(merged))
            _Copier(root, Path(merged), follow_source_symlinks).copy_all(items)

    def read_files(self, root: StepRoot, paths: Sequence[str]) -> list[bytes | None]:
        """Each file from the upper dir, else the first lower that has it."""
        self.calls.append(("read_files", list(paths)))
        return [_read(root, path) for path in paths]

    def glob(self, root: StepRoot, patterns: Sequence[str]) -> list[list[str]]:
        """The merged tree's paths matching each pattern, sorted."""
        self.calls.append(("glob", list(patterns)))
        names = set()
        for layer in (root.upper, *root.lowers):
            for dirpath, dirs, files in os.walk(layer):
                rel = "/" + os.path.relpath(dirpath, layer).lstrip(".")
                names.update(posixpath.join(rel, n) for n in (*dirs, *files))
        return [sorted(n for n in names if fnmatch.fnmatchcase(n, p)) for p in patterns]

    def export(self, lowers: Sequence[Path], dest: Path) -> None:
        """The layers merged into dest (upper layers win)."""
        self.calls.append(("export", list(lowers)))
        _merge(list(lowers), dest)

    def prepare(self, kind: str, network: str = "none", count: int = 1) -> None:
        """Nothing to start: the hint is noted in `prepared`."""
        self.prepared.append((kind, network, count))

    def stop(self) -> None:
        """Nothing runs, so nothing to stop."""
        self.calls.append(("stop", None))

    def settle(self) -> None:
        """Nothing is left running; counted in `settled`, not in `calls` (it runs nothing)."""
        self.settled += 1


def _read(root: StepRoot, path: str) -> bytes | None:
    found = _find(root, path)
    return found.read_bytes() if found is not None and found.is_file() else None


def _lookup(root: StepRoot, user: str | None, ids: Ids) -> tuple[Ids, str]:
    """As the real sandbox's `identity.lookup`: the ids of USER `user` (`ids` for None) in
    the image, and their uid's home there."""
    passwd, group = (None if data is None else data.decode("utf-8", "replace")
                     for data in (_read(root, "/etc/passwd"), _read(root, "/etc/group")))
    if user is not None:
        ids = step_ids(user, passwd, group)
    return ids, home_dir(ids[0], passwd)


def _as_run(root: StepRoot, spec: RunSpec) -> RunSpec:
    """The spec with its USER and HOME looked up in the image, as the step runs it."""
    if spec.image_user is None and spec.home_at is None:
        return spec
    (uid, gid, groups), home = _lookup(root, spec.image_user, parse_user(spec.user))
    env = spec.env
    if spec.home_at is not None:
        env = (*env[:spec.home_at], f"HOME={home}", *env[spec.home_at:])
    user = f"{uid}:{gid}" + (":" + ",".join(map(str, groups)) if groups else "")
    return replace(spec, user=user, env=env, image_user=None, home_at=None)


def _find(root: StepRoot, path: str) -> Path | None:
    for layer in (root.upper, *root.lowers):
        candidate = layer / path.lstrip("/")
        if os.path.lexists(candidate):
            return candidate
    return None


def _merge(layers: list[Path], dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    for layer in reversed(layers):  # bottom first, so upper layers overwrite
        shutil.copytree(layer, dest, symlinks=True, dirs_exist_ok=True)


class _Copier:
    """The real copy's rules on plain files: modes, times; owners only as root."""

    def __init__(self, root: StepRoot, source: Path, follow: bool) -> None:
        self.root, self.source, self.follow = root, source, follow
        self.dir_times: dict[Path, tuple[int, int]] = {}
        self.links: dict[tuple[int, int, int], Path] = {}

    def copy_all(self, items: Sequence[CopyItem]) -> None:
        for each in items:
            for item in each.each():
                self.copy(item)
        for path, times in self.dir_times.items():
            os.utime(path, ns=times, follow_symlinks=False)

    def _upper(self, dest: str) -> Path:
        return self.root.upper / dest.lstrip("/")

    def _isdir(self, dest: str) -> bool:
        found = _find(self.root, dest) if dest.strip("/") else self.root.upper
        return found is not None and found.is_dir()

    def _writing_into(self, dest: str) -> None:
        """Copy a directory up from the lowers (as overlayfs does), noting its times."""
        target = self._upper(dest)
        if target in self.dir_times:
            return
        if not target.is_dir():
            found = _find(self.root, dest)
            assert found is not None and found.is_dir(), dest
            self._writing_into(posixpath.dirname(dest.rstrip("/")) or "/")
            st = found.stat()
            target.mkdir()
            _owner(target, st.st_uid, st.st_gid)
            os.chmod(target, stat.S_IMODE(st.st_mode))
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        st = target.stat()
        self.dir_times[target] = (st.st_atime_ns, st.st_mtime_ns)

    def makedirs(self, dest: str, uid: int, gid: int, times: tuple[int, int]) -> None:
        current = "/"
        for comp in dest.split("/"):
            if comp in ("", "."):
                continue
            parent, current = current, posixpath.join(current, comp)
            if self._isdir(current):
                continue
            self._writing_into(parent)
            path = self._upper(current)
            path.mkdir(0o755)
            _owner(path, uid, gid)
            os.chmod(path, 0o755)
            self.dir_times[path] = times

    def copy(self, item: CopyItem) -> None:
        path = self.source / item.source
        st = os.stat(path) if self.follow else os.lstat(path)
        uid, gid = item.uid or 0, item.gid or 0
        times = _item_times(item, st)
        dest = item.dest
        if stat.S_ISDIR(st.st_mode) and item.recursive:
            self.makedirs(dest, uid, gid, times)
            self._tree(path, dest, item)
            return
        shown = posixpath.basename(posixpath.normpath(item.source))
        if not stat.S_ISDIR(st.st_mode) and (
                dest.endswith("/") or (item.into_existing_dir and self._isdir(dest))):
            dest = posixpath.join(dest, shown)
        self.makedirs(posixpath.dirname(dest.rstrip("/")) or "/", uid, gid, times)
        self._entry(path, st, dest.rstrip("/") or "/", item, recurse=False)

    def _tree(self, path: Path, dest: str, item: CopyItem) -> None:
        for name in sorted(os.listdir(path)):
            self._entry(path / name, os.lstat(path / name), posixpath.join(dest, name), item,
                        recurse=True)

    def _entry(self, path: Path, st: os.stat_result, dest: str, item: CopyItem,
               recurse: bool) -> None:
        uid = item.uid if item.uid is not None else st.st_uid
        gid = item.gid if item.gid is not None else st.st_gid
        perms = item.mode if item.mode is not None else stat.S_IMODE(st.st_mode)
        if not (stat.S_ISDIR(st.st_mode) and self._isdir(dest)):  # an existing dir is kept
            self._writing_into(posixpath.dirname(dest) or "/")
        target = self._upper(dest)
        if stat.S_ISDIR(st.st_mode):
            if not self._isdir(dest):
                target.mkdir(0o700)
                _owner(target, uid, gid)
                os.chmod(target, perms)
                top = dest == (item.dest.rstrip("/") or "/")
                self.dir_times[target] = _item_times(item, st) if top \
                    else (st.st_atime_ns, st.st_mtime_ns)
            if recurse:
                self._tree(path, dest, item)
        elif stat.S_ISLNK(st.st_mode):
            target.unlink(missing_ok=True)
            os.symlink(os.readlink(path), target)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        elif stat.S_ISREG(st.st_mode):
            target.unlink(missing_ok=True)
            key = (item.link_group, st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                os.link(self.links[key], target)
                return
            if st.st_nlink > 1:
                self.links[key] = target
            shutil.copyfile(path, target)
            _owner(target, uid, gid)
            os.chmod(target, perms)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def _item_times(item: CopyItem, st: os.stat_result) -> tuple[int, int]:
    if item.made_time is None:
        return st.st_atime_ns, st.st_mtime_ns
    made = item.made_time * 1_000_000_000
    return made, made


def _owner(path: Path, uid: int, gid: int) -> None:
    # An unprivileged user can only keep its own; one that builds in a user namespace of its
    # own (root there, with only its own id mapped) can give no other either.
    if os.geteuid() == 0 and not in_user_namespace():
        os.chown(path, uid, gid, follow_symlinks=False)
