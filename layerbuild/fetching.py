"""Layers brought into the store from elsewhere (a registry, a cache folder): fetched side by
side, committed in order.

Up to `jobs` blobs are read at once, each streamed through its digest check into a staging dir
of its own (`ingest.stage_blob`); the calling thread commits them bottom up, so a layer staged
before its parent is committed waits in its staging dir while the worker goes on to the next.
Nothing is visible before it is whole and verified; the first failure stops the others at
their next read, and is the one raised.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbuild.digest import Digest
from layerbuild.errors import LayerbuildError
from layerbuild.events import Events, Transfer
from layerbuild.image import Descriptor
from layerbuild.ingest import Staged, commit_staged, stage_blob
from layerbuild.store import Store

JOBS = 3
"""Layers fetched at once (Docker's max-concurrent-downloads)."""
PROGRESS_STEP = 1 << 20
"""Bytes between two "Downloading" reports of a layer."""


class Cancelled(LayerbuildError):
    """Another layer of the same fetch failed; this one stopped."""


@dataclass(frozen=True)
class Fetch:
    """One layer to bring in: on the stored stack `parent`, from `blob`, opened by `open`."""

    parent: Digest | None
    diff_id: Digest
    blob: Descriptor
    open: Callable[[], contextlib.AbstractContextManager[Any]]
    """Opens a reader of the blob (a context manager)."""
    what: str


def fetch_layers(store: Store, layers: Sequence[Fetch], lease: Path, events: Events,
                 added: set[Digest], jobs: int = JOBS,
                 failed_at: Callable[[int], None] | None = None) -> None:
    """Bring `layers` (bottom up: each one's parent is stored or comes before it) into the
    store, leased to `lease`; the chain IDs of the ones that were not stored go to `added`.
    On a failure, `failed_at` learns which layer it was."""
    if not layers:
        return
    failed = threading.Event()
    lock = threading.Lock()

    def stage(i: int, into: Path) -> Staged:
        item = layers[i]
        short = item.blob.digest.short
        try:
            if failed.is_set():
                raise Cancelled("cancelled")
            with item.open() as reader:
                counted = _Counting(reader, lambda n: events.emit(
                    Transfer(short, "Downloading", n, item.blob.size)), failed)
                staged = stage_blob(into, counted, item.diff_id, item.blob.digest,  # type: ignore
                                    item.blob.size, item.what)
        except BaseException:
            failed.set()  # the other layers stop at their next read
            raise
        events.emit(Transfer(short, "Download complete", item.blob.size, item.blob.size))
        return staged

    with contextlib.ExitStack() as stages, ThreadPoolExecutor(
            max_workers=max(1, jobs), thread_name_prefix="fetch") as pool:
        futures: list[Future[Staged]] = [
            pool.submit(stage, i, stages.enter_context(store.staging()))
            for i in range(len(layers))]
        error: BaseException | None = None
        for i, item in enumerate(layers):
            try:
                staged = futures[i].result()
                if error is None:
                    got = commit_staged(store, item.parent, staged, lease)
                    if not got.existed:
                        with lock:
                            added.add(got.record.chain_id)
                    events.emit(Transfer(item.blob.digest.short, "Pull complete",
                                         item.blob.size, item.blob.size))
            except BaseException as exc:  # the first failure is the one to report
                failed.set()
                if error is None or isinstance(error, Cancelled):
                    if failed_at is not None and not isinstance(exc, Cancelled):
                        failed_at(i)
                    error = exc
        if error is not None:
            raise error


class _Counting:
    """A reader that reports how many bytes went through it (every `every` bytes, and at the
    end), and stops when told to."""

    def __init__(self, raw: object, report: Callable[[int], None],
                 stop: threading.Event, every: int = PROGRESS_STEP) -> None:
        self._raw = raw
        self._report = report
        self._stop = stop
        self._every = every
        self._told = 0
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if self._stop.is_set():
            raise Cancelled("cancelled")
        data: bytes = self._raw.read(n)  # type: ignore[attr-defined]
        self.count += len(data)
        if self.count - self._told >= self._every or (not data and self.count > self._told):
            self._told = self.count
            self._report(self.count)
        return data
