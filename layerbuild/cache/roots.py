"""What the build cache holds on to in the store: the one reader of cache entries for gc.

The store's garbage collection asks `roots` which layers cache entries keep, and prunes with
`drop_entries`; this module loads nothing but digests, so the store stays light to import.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from layerbuild.digest import Digest
from layerbuild.errors import FormatError

RECORDS = "records"
"""The folder of build records inside the cache directory (see `cache.records`)."""
FILTERS = "seccomp"
"""The folder of the compiled seccomp filter of RUN steps (see `sandbox.seccomp.program`)."""


def roots(directory: Path) -> set[Digest]:
    """The chain IDs that the cache entries in `directory` hold on to."""
    refs: set[Digest] = set()
    for entry in directory.glob("*.json"):
        layers = _layers(entry)
        if layers is not None:
            refs.update(layers)
    return refs


def drop_entries(directory: Path, keep_layer: Callable[[Digest], bool] | None) -> None:
    """Remove the cache entries one of whose layers `keep_layer` does not keep (or that cannot
    be read); with None, every entry and every build record, so the next build runs every step.
    """
    for entry in directory.glob("*.json"):
        if keep_layer is None or not _whole(entry, keep_layer):
            entry.unlink()
    if keep_layer is None:
        for record in directory.glob(f"{RECORDS}/*.json"):
            record.unlink()


def _whole(entry: Path, keep_layer: Callable[[Digest], bool]) -> bool:
    layers = _layers(entry)
    return layers is not None and all(keep_layer(c) for c in layers)


def _layers(entry: Path) -> list[Digest] | None:
    """The chain IDs an entry names, or None if it cannot be read."""
    try:
        return [Digest.parse(c) for c in json.loads(entry.read_bytes())["layers"]]
    except (OSError, ValueError, KeyError, TypeError, FormatError):
        return None
