"""Builds through the fake sandbox: a store, a base image made from a directory, a context."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fakesandbox import FakeSandbox

from layerbuild.builder.engine import build
from layerbuild.builder.stepcontext import layer_dirs
from layerbuild.digest import chain_ids
from layerbuild.events import Event, RecordingEvents
from layerbuild.image import History, Image, empty_config, rfc3339
from layerbuild.ingest import ingest_dir
from layerbuild.reference import Reference
from layerbuild.request import BuildRequest
from layerbuild.store import Store

BASE_FILES = {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
              "etc/group": "root:x:0:\napp:x:1000:\n", "etc/os-release": "ID=test\n"}


@dataclass
class Bench:
    """A store with a base image, a build context and a fake sandbox."""

    root: Path
    store: Store
    sandbox: FakeSandbox = field(default_factory=FakeSandbox)
    events: RecordingEvents = field(default_factory=RecordingEvents)

    @property
    def context(self) -> Path:
        return self.root / "context"

    def base(self, files: dict[str, str] | None = None, tag: str = "base",
             epoch: int = 1000) -> Image:
        """Store a base image of `files` (every entry at `epoch`) under `tag`, as an import
        does, but from a directory: extracting a tar would need root for its owners."""
        created = rfc3339(epoch)
        with self.store.staging() as stage:
            diff = stage / "diff"
            for name, text in (files or BASE_FILES).items():
                (diff / name).parent.mkdir(parents=True, exist_ok=True)
                (diff / name).write_text(text)
            for path in (*diff.rglob("*"), diff):
                os.utime(path, (epoch, epoch))
            got = ingest_dir(self.store, None, diff, stage, epoch, lease=stage)
            history = History(created=created, created_by=f"layerbuild import {tag}")
            image = Image.from_config(empty_config(created).with_layer(got.record.diff_id,
                                                                       history))
            self.store.put_image(image, [Reference.parse(tag)])
        return image

    def write(self, name: str, text: str, mtime: int | None = None) -> Path:
        """A file of the context (its mtime in seconds, when given)."""
        path = self.context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def build(self, buildfile: str, tag: str = "out", **request: object) -> Image | None:
        """Build `buildfile` in the context; the events of this build only are kept."""
        self.write("Buildfile", buildfile)
        self.events = RecordingEvents()
        self.sandbox.calls.clear()
        req = BuildRequest(self.context, self.context / "Buildfile",
                           tags=(Reference.parse(tag),), **request)  # type: ignore[arg-type]
        return build(self.store, req, self.events, self.sandbox)

    def of(self, kind: type[Event]) -> list[Event]:
        """This build's events of one kind."""
        return self.events.of(kind)

    def read(self, image: Image, path: str) -> str | None:
        """A file of a stored image (its top layer that has it)."""
        chains = chain_ids(image.config.diff_ids)
        for layer in layer_dirs(self.store, chains[-1] if chains else None):
            found = layer / path.lstrip("/")
            if found.is_file():
                return found.read_text()
        return None


def new_bench(tmp_path: Path) -> Bench:
    """A bench in tmp_path with the base image `base` stored."""
    bench = Bench(tmp_path, Store(tmp_path / "store"))
    bench.context.mkdir()
    bench.base()
    return bench
