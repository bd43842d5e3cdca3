"""The build context: ignore rules, source selection for COPY/ADD, walking and checksums.

The context is untrusted input too: a source that climbs out with `..`, or through a symlink
whose target lies outside, is refused. Symlinks met inside a copied directory are data and
are copied as links, never followed.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import LayerbuildError, UnsafePath

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:  # loaded when used: a build record asks for `ignore_files` alone
    from layerbuild.buildfile.ignore import IgnoreRules

_MAX_LINKS = 40
_WILDCARDS = frozenset("*?[")


class ContextError(LayerbuildError):
    """A COPY/ADD source that cannot be taken from the build context."""


def ignore_files(context: Path, buildfile: Path | None) -> list[Path]:
    """Where ignore rules may come from, the first found winning: `<Buildfile>.dockerignore`
    beside the Buildfile, then the context's `.dockerignore`."""
    candidates = [context / ".dockerignore"]
    if buildfile is not None:
        candidates.insert(0, buildfile.with_name(buildfile.name + ".dockerignore"))
    return candidates


def load_ignore(context: Path, buildfile: Path | None) -> IgnoreRules:
    """The ignore rules of the first of `ignore_files` that exists (none: nothing ignored)."""
    from layerbuild.buildfile.ignore import IgnoreRules

    for path in ignore_files(context, buildfile):
        if path.is_file():
            return IgnoreRules.parse(path.read_text(), str(path))
    return IgnoreRules()


@dataclass(frozen=True)
class Entry:
    """One file, dir, symlink or special file of the context, by relative path."""

    rel: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


class Context:
    """A build context directory and its ignore rules."""

    def __init__(self, root: Path, rules: IgnoreRules | None = None) -> None:
        from layerbuild.buildfile.ignore import IgnoreRules

        self.root = root.resolve()
        self.rules = rules or IgnoreRules()
        self.listed: dict[str, tuple[os.stat_result, int]] = {}
        """Directories listed to match wildcards, by absolute path (what a match depended on),
        with when they were listed."""

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else str(self.root)

    def resolve(self, rel: str, follow_last: bool = True) -> str:
        """A context path with symlinks resolved inside the context; escaping ones refused."""
        parts = list(_clean(rel, rel))
        done: list[str] = []
        hops = 0
        while parts:
            comp = parts.pop(0)
            current = "/".join([*done, comp])
            try:
                st = os.lstat(self._abs(current))
            except (FileNotFoundError, NotADirectoryError):
                raise ContextError(f"{rel}: not found in the build context") from None
            if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
                hops += 1
                if hops > _MAX_LINKS:
                    raise ContextError(f"{rel}: too many levels of symbolic links")
                target = os.readlink(self._abs(current))
                base = "" if target.startswith("/") else "/".join(done)
                joined = posixpath.join(base, target.lstrip("/")) if base else target.lstrip("/")
                if target.startswith("/") or _climbs(joined):
                    raise UnsafePath(f"{rel}: symlink {current} -> {target} leads outside "
                                     "the build context")
                parts = list(_clean(joined, rel)) + parts
                done = []
                continue
            done.append(comp)
        return "/".join(done)

    def match(self, pattern: str) -> list[str]:
        """Context paths a COPY source names (wildcards allowed), in sorted order."""
        parts = _clean(pattern, pattern)
        if not any(_WILDCARDS & set(p) for p in parts):
            rel = self.resolve("/".join(parts))
            if rel and self.rules.excluded(rel):
                raise ContextError(f"{pattern}: excluded by .dockerignore")
            return [rel]
        found = [""]
        for comp in parts:
            nxt: list[str] = []
            for base in found:
                if _WILDCARDS & set(comp):
                    listed = self._abs(self.resolve(base))
                    try:
                        names = sorted(os.listdir(listed))
                        self.listed[listed] = (os.lstat(listed), time.time_ns())
                    except (NotADirectoryError, FileNotFoundError):
                        continue
                    nxt.extend(posixpath.join(base, n) if base else n for n in names
                               if fnmatch.fnmatchcase(n, comp))
                else:
                    candidate = posixpath.join(base, comp) if base else comp
                    if os.path.lexists(self._abs(self.resolve(candidate, follow_last=False))):
                        nxt.append(candidate)
            found = nxt
        return sorted(rel for rel in found if not self.rules.excluded(rel))

    def walk(self, rel: str, exclude: IgnoreRules | None = None) -> Iterator[Entry]:
        """`rel` and, for a directory, everything below it not ignored; parents first."""
        top = self.resolve(rel)
        st = os.lstat(self._abs(top))
        yield Entry(top, st)
        if stat.S_ISDIR(st.st_mode):
            for path, found, _is_dir in self._below(top, exclude, stats=True):
                assert found is not None
                yield Entry(path, found)

    def paths(self, rel: str, exclude: IgnoreRules | None = None) -> Iterator[tuple[str, bool]]:
        """(path, is a directory) of what `walk` gives, in its order, without a stat of each
        entry below `rel` (the directory's listing says which are directories)."""
        top = self.resolve(rel)
        is_dir = stat.S_ISDIR(os.lstat(self._abs(top)).st_mode)
        yield top, is_dir
        if is_dir:
            for path, _st, below_is_dir in self._below(top, exclude, stats=False):
                yield path, below_is_dir

    def _children(self, rel: str, stats: bool) -> list[tuple[str, os.stat_result | None, bool]]:
        found: list[tuple[str, os.stat_result | None, bool]] = []
        with os.scandir(self._abs(rel)) as it:
            for e in it:
                path = f"{rel}/{e.name}" if rel else e.name
                if stats:
                    st = e.stat(follow_symlinks=False)
                    found.append((path, st, stat.S_ISDIR(st.st_mode)))
                else:
                    found.append((path, None, e.is_dir(follow_symlinks=False)))
        found.sort(key=_path_of, reverse=True)  # popped from the end: in name order
        return found

    def _below(self, top: str, exclude: IgnoreRules | None, stats: bool,
               ) -> Iterator[tuple[str, os.stat_result | None, bool]]:
        """Everything below `top`, depth first in name order, without recursion."""
        rules = self.rules if self.rules.patterns else None
        # An excluded dir is still entered when a `!` pattern may re-include a child.
        reinclude = bool(rules and rules.has_exclusions) or bool(
            exclude and exclude.has_exclusions)
        cut = len(top) + 1 if top else 0
        stack = self._children(top, stats)
        while stack:
            found = stack.pop()
            path, is_dir = found[0], found[2]
            excluded = bool(rules and rules.excluded(path)) or bool(
                exclude and exclude.excluded(path[cut:]))
            if not excluded:
                yield found
            if is_dir and (not excluded or reinclude):
                stack.extend(self._children(path, stats))


def _path_of(found: tuple[str, os.stat_result | None, bool]) -> str:
    return found[0]


def _clean(path: str, original: str) -> tuple[str, ...]:
    parts: list[str] = []
    for comp in path.replace("\\", "/").split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise UnsafePath(f"{original}: outside the build context")
            parts.pop()
        else:
            parts.append(comp)
    return tuple(parts)


def _climbs(path: str) -> bool:
    try:
        _clean(path, path)
    except UnsafePath:
        return True
    return False
