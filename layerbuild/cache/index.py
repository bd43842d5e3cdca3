"""The index of cached step results in the store's `buildcache/` directory.

Files: `<key>.json` (an entry: the step's history and the layer it produced, named in `layers`
so that the store keeps that layer), `slots/<digest>.json` (what went into the last build of
each step, to explain the next miss), `stat/<digest>.db` (a `StatCache` per build context, an
SQLite file) and `records/` (build records, see `records`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from layerbuild.cache.keys import StepInputs
from layerbuild.cache.stat import StatCache
from layerbuild.digest import Digest
from layerbuild.fsutil import write_atomic, write_json
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
            return StepInputs.from_json(json.loads((self.slots / _name(slot)).read_bytes()))
        except (OSError, ValueError, KeyError):
            return None

    def remember(self, slot: str, inputs: StepInputs) -> None:
        """Keep a slot's inputs for the next explanation (as `StepInputs.to_json` gives them;
        the files, which may be many, written a few at a time)."""
        head = inputs.to_json(files=False)
        path = self.slots / _name(slot)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, head, durable=False, large=("files", inputs.files.items()))

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
