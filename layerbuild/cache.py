"""The build cache: step keys (pure) and the index of cached step results in the store.

A step's key covers its parent's key (for the first step of a stage: the base image's ID),
the instruction as written minus its line numbers, the variables it can see, and for COPY/ADD
a checksum of every selected source (paths, types, modes, owners, link targets, xattrs,
content; never mtimes). A hit gives back the step's history entry and layer exactly.

Besides the key, each step records what went into it under a stable "slot" (Buildfile, stage,
step number), so that the first miss of a stage can say why: which file, which build arg, or
that the instruction changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbuild.builder.record import settled, signature
from layerbuild.buildfile import IgnoreRules, Instruction, to_dict
from layerbuild.context import Context
from layerbuild.digest import Digest
from layerbuild.image import History

# --- pure: keys and explanations -------------------------------------------------------------


@dataclass(frozen=True)
class StepInputs:
    """Everything a step's result depends on, in a form that can be compared and hashed."""

    parent: str
    instruction: Mapping[str, Any]
    variables: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)

    def key(self) -> str:
        """The cache key: a sha256 over the canonical JSON of the inputs."""
        data = json.dumps({"parent": self.parent, "instruction": self.instruction,
                           "variables": dict(sorted(self.variables.items())),
                           "files": dict(sorted(self.files.items())),
                           "extra": dict(sorted(self.extra.items()))},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"parent": self.parent, "instruction": dict(self.instruction),
                "variables": dict(self.variables), "files": dict(self.files),
                "extra": dict(self.extra)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepInputs:
        return cls(data["parent"], data["instruction"], data.get("variables", {}),
                   data.get("files", {}), data.get("extra", {}))


def instruction_form(instr: Instruction) -> dict[str, Any]:
    """The instruction as a key sees it: every field but its line numbers."""
    form = to_dict(instr)
    form.pop("line", None)
    form.pop("end_line", None)
    return form


def why_missed(before: StepInputs | None, now: StepInputs) -> str:
    """One line saying what differs from the last build of the same step."""
    if before is None:
        return "not built before"
    if before.instruction != now.instruction:
        return "the instruction changed"
    changed = sorted(set(before.files) ^ set(now.files)
                     | {p for p in now.files if before.files.get(p) != now.files[p]})
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        verb = "was removed" if changed[0] not in now.files else (
            "is new" if changed[0] not in before.files else "changed")
        return f"file {changed[0]} {verb}{more}"
    args = sorted(k for k in set(before.variables) | set(now.variables)
                  if before.variables.get(k) != now.variables.get(k))
    if args:
        return f"build arg or variable {', '.join(args)} changed"
    if before.extra != now.extra:
        keys = sorted(k for k in set(before.extra) | set(now.extra)
                      if before.extra.get(k) != now.extra.get(k))
        return f"{', '.join(keys)} changed"
    if before.parent != now.parent:
        return "an earlier step or the base image changed"
    return "the cached result is gone (pruned)"


# --- effects: the index in the store ---------------------------------------------------------


@dataclass(frozen=True)
class CachedStep:
    """A cached step result: its history entry and, for filesystem steps, its layer."""

    history: History
    chain_id: Digest | None = None
    diff_id: Digest | None = None


class CacheIndex:
    """Cache entries under the store's `buildcache/`: `<key>.json`, plus slots and stat caches.

    An entry names the layer it produced in `layers`, which the store reads to keep it.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.slots = directory / "slots"
        self.slots.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> CachedStep | None:
        """The cached result for a key, or None."""
        try:
            data = json.loads((self.dir / f"{key}.json").read_bytes())
            return CachedStep(History.from_dict(data["history"]),
                              Digest.parse(data["chain_id"]) if data.get("chain_id") else None,
                              Digest.parse(data["diff_id"]) if data.get("diff_id") else None)
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, step: CachedStep) -> None:
        """Record a step's result (atomically)."""
        data = {"history": step.history.to_dict(),
                "layers": [str(step.chain_id)] if step.chain_id else []}
        if step.chain_id is not None:
            data["chain_id"] = str(step.chain_id)
            data["diff_id"] = str(step.diff_id)
        _write(self.dir / f"{key}.json", data)

    def last_inputs(self, slot: str) -> StepInputs | None:
        """What went into the last build of this slot."""
        try:
            return StepInputs.from_json(json.loads((self.slots / _name(slot)).read_bytes()))
        except (OSError, ValueError, KeyError):
            return None

    def remember(self, slot: str, inputs: StepInputs) -> None:
        """Keep a slot's inputs for the next explanation."""
        _write(self.slots / _name(slot), inputs.to_json())

    def stat_cache(self, context: Path) -> StatCache:
        """The content-hash cache of one build context directory."""
        return StatCache(self.dir / "stat" / _name(str(context.resolve())))


class StatCache:
    """(path, size, mtime, ctime, inode, mode) -> entry digest: unchanged files are not re-read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dirty = False
        try:
            self._entries: dict[str, list[Any]] = json.loads(path.read_bytes())
        except (OSError, ValueError):
            self._entries = {}
        self.seen: dict[str, list[int]] = {}
        """The signature of every entry digested in this build, by absolute path."""
        self.settled = True
        """Whether every entry was `settled` when it was read."""

    def entry_digest(self, full: str, st: os.stat_result) -> str:
        """The digest of an entry's header and content, worked out only when its stat changed.

        ctime moves on every change of content, mode, owner or xattrs, so an entry whose
        (size, mtime, ctime, inode, mode) is unchanged is unchanged.
        """
        sig = self.seen[full] = signature(st)
        known = self._entries.get(full)
        if known is not None and known[:5] == sig:
            return str(known[5])
        value = _entry_header(full, st)
        if settled(sig):  # else it might change again without its stat changing
            self._entries[full] = [*sig, value]
            self._dirty = True
        else:
            self.settled = False
        return value

    def save(self) -> None:
        """Write the cache back if it learnt anything."""
        if self._dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write(self.path, self._entries)
            self._dirty = False


def source_digests(context: Context, rels: list[str], exclude: IgnoreRules | None,
                   stats: StatCache) -> dict[str, str]:
    """Per selected context entry, a digest of its type, mode, owner, link target, xattrs and
    content (never its mtime); the keys are the entries' context paths."""
    out: dict[str, str] = {}
    for rel in rels:
        for entry in context.walk(rel, exclude):
            full = os.path.join(context.root, entry.rel) if entry.rel else str(context.root)
            out[entry.rel or "."] = stats.entry_digest(full, entry.st)
    return out


def _entry_header(full: str, st: os.stat_result) -> str:
    if stat.S_ISREG(st.st_mode):
        with open(full, "rb") as f:
            content = hashlib.file_digest(f, "sha256").hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(full)
    else:
        content = ""
    try:
        names = sorted(os.listxattr(full, follow_symlinks=False))
        xattrs = [[n, os.getxattr(full, n, follow_symlinks=False).hex()] for n in names]
    except OSError:
        xattrs = []
    header = json.dumps([stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                         st.st_gid, content, xattrs])
    return hashlib.sha256(header.encode()).hexdigest()


def _name(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest() + ".json"


def _write(path: Path, data: Any) -> None:
    # Stages built at once may write one entry at the same time: a name per thread.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    tmp.rename(path)
