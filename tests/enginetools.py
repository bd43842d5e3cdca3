"""Builds through the fake sandbox: a store, a base image made from a small tar, a context."""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from fakesandbox import FakeSandbox

from layerbuild.archive import import_rootfs
from layerbuild.builder.engine import build
from layerbuild.builder.events import Event, RecordingEvents
from layerbuild.builder.request import BuildRequest
from layerbuild.builder.stepcontext import layer_dirs
from layerbuild.digest import chain_ids
from layerbuild.image import Image
from layerbuild.reference import Reference
from layerbuild.store import Store

BASE_FILES = {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
              "etc/group": "root:x:0:\napp:x:1000:\n", "etc/os-release": "ID=test\n"}


def rootfs_tar(path: Path, files: dict[str, str], mtime: int = 1000) -> Path:
    """A tar of files (and their parent dirs), every entry owned by root, at `mtime`."""
    with tarfile.open(path, "w") as tar:
        dirs = sorted({str(Path(name).parent) for name in files} - {"."})
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tar.addfile(info, io.BytesIO(data))
    return path


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
        """Store a base image from a tar of `files` under `tag`."""
        tar = rootfs_tar(self.root / f"{tag}-{os.urandom(4).hex()}.tar",
                         files or BASE_FILES, epoch)
        return import_rootfs(self.store, str(tar), Reference.parse(tag), source_date_epoch=epoch)

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
