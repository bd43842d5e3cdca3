"""The index of cached step results in the store's `buildcache/` directory.

Files: `<key>.json` (an entry: the step's history and the layer it produced, named in `layers`
so that the store keeps that layer), `slots/<digest>.json` (what went into the last build of
each step, to explain the next miss: lines of JSON, its files a few thousand a line),
`stat/<digest>.db` (a `StatCache` per build context, an SQLite file) and `records/` (build
records, see `records`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from layerbuild.cache.keys import StepInputs, miss_report, why_missed
from layerbuild.cache.stat import StatCache
from layerbuild.digest import Digest
from layerbuild.fsutil import write_atomic, write_json_lines
from layerbuild.image import History


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
        self.slots = directory / "slots"  # made by the first write: a failed build leaves none

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
            with open(self.slots / _name(slot), "rb") as lines:
                data = json.loads(lines.readline())
                files = dict(data.get("files", {}))
                for line in lines:
                    files.update(json.loads(line))
            return StepInputs.from_json({**data, "files": files})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def why_missed(self, slot: str, now: StepInputs) -> str:
        """What differs from the last build of this slot (see `keys.why_missed`), its files
        read a line at a time."""
        try:
            with self._slot(slot) as (_head, before, files):
                return why_missed(before, now, files)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return why_missed(None, now)

    def remember(self, slot: str, inputs: StepInputs, key: str) -> None:
        """Keep a slot's inputs (and their `key`) for the next explanation: the rest of
        `StepInputs.to_json`, then the files in sorted order, a few thousand a line
        (`why_missed` reads them so)."""
        path = self.slots / _name(slot)
        path.parent.mkdir(parents=True, exist_ok=True)
        files = inputs.files
        write_json_lines(path, {**inputs.to_json(files=False), "key": key},
                         ((name, files[name]) for name in sorted(files)), durable=False)

    def previous(self, slot: str, now: StepInputs) -> tuple[CachedStep, list[str]] | None:
        """The last build of this slot, when it differs from `now` in files only: its cached
        result and the paths of `now`'s files that are new or changed since (see
        `keys.changed_files`); None otherwise, or when its result is not cached."""
        return self.missed(slot, now)[1]

    def missed(self, slot: str, now: StepInputs,
               ) -> tuple[str, tuple[CachedStep, list[str]] | None]:
        """`why_missed` and `previous` of one reading of the slot."""
        try:
            with self._slot(slot) as (head, before, files):
                reason, changed = miss_report(before, files, now)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return why_missed(None, now), None
        step = self.get(str(head.get("key"))) if changed is not None else None
        return reason, None if step is None or changed is None else (step, changed)

    @contextlib.contextmanager
    def _slot(self, slot: str) -> Iterator[tuple[dict[str, Any], StepInputs,
                                                 Iterator[tuple[str, str]]]]:
        """A slot's first line (as read, and as inputs), and its files as (path, digest) in
        sorted order, read a line at a time while the slot is open."""
        with open(self.slots / _name(slot), "rb") as lines:
            head = json.loads(lines.readline())
            before = StepInputs.from_json(head)
            later = (pair for line in lines for pair in json.loads(line).items())
            yield head, before, chain(sorted(before.files.items()), later)

    def stat_cache(self, context: Path) -> StatCache:
        """The content-hash cache of one build context directory."""
        name = _name(str(context.resolve()))
        return StatCache(self.dir / "stat" / name.replace(".json", ".db"))


def _name(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest() + ".json"


def _write(path: Path, data: object) -> None:
    # Atomic, but not fsynced: a lost or torn entry is a miss, never a wrong hit (`get` parses
    # it, and the layer it names was made durable when it was committed), while two fsyncs per
    # step doubled the time of builds made of many metadata steps.
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, separators=(",", ":")).encode(), durable=False)
