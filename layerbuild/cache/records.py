"""Build records: a rebuild with nothing changed is answered without parsing or keying anything.

A finished build leaves a record in the store (`buildcache/records/<fingerprint>.json`, lines of
JSON: what the build made, then the paths it looked at a few thousand a line), named
by a fingerprint of what was asked: the Buildfile's bytes, the ignore files, the build args, the
target, SOURCE_DATE_EPOCH, the platform and this version of layerbuild. It lists what the build
looked at: the stat signature (size, mtime, ctime, inode, mode) of every context entry it
digested and every directory it listed, and the ID of every stored image it named. When all of
them are as recorded, every step's cache key is as before, so every step would be CACHED and
the image would be the recorded one: the rebuild reports the steps CACHED and tags the image.
Anything else takes the full path, which alone decides misses; a record only ever confirms.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild import __version__
from layerbuild.cache.roots import RECORDS
from layerbuild.cache.stat import signature
from layerbuild.context import ignore_files
from layerbuild.digest import Digest
from layerbuild.errors import LayerbuildError
from layerbuild.events import Events, StepFinished, StepStarted
from layerbuild.fsutil import write_json_lines
from layerbuild.request import BuildRequest

if TYPE_CHECKING:  # types only: the caller has the store loaded already
    from layerbuild.image import Image
    from layerbuild.store import Store

"""The subdirectory of the store's `buildcache/` that holds build records."""



def fingerprint(request: BuildRequest) -> str | None:
    """What a build was asked, as one digest; None for builds that are never answered from
    a record (templates, which may include other files, --no-cache, dry runs, cache exports
    (the export is the point), and a
    Buildfile that is neither a regular file nor a stream read up front).

    A streamed Buildfile (stdin) counts by its bytes, as read once for the build."""
    if request.template or request.buildfile.name.endswith(".j2") or request.no_cache \
            or request.no_cache_filter or request.dry_run or request.cache_to:
        return None
    buildfile: str | None
    if request.buildfile_data is not None:
        name, buildfile = "-", hashlib.sha256(request.buildfile_data).hexdigest()
        ignores = ignore_files(request.context, None)
    elif request.buildfile.is_file():
        name, buildfile = str(request.buildfile.resolve()), _content(request.buildfile)
        ignores = ignore_files(request.context, request.buildfile)
    else:
        return None
    asked = {"version": __version__, "machine": os.uname().machine,
             "buildfile": name, "context": str(request.context.resolve()),
             "files": [buildfile, *(_content(p) for p in ignores)],
             "build_args": dict(sorted(request.build_args.items())),
             "target": request.target, "epoch": request.source_date_epoch}
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _content(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def write_record(store: Store, key: str, image: Image,
                 steps: Sequence[tuple[str, bool, str, int, int]],
                 images: Mapping[str, str], paths: Iterable[tuple[str, list[int]]],
                 warnings: list[str]) -> None:
    """Keep what a finished build looked at; `steps` are (progress text, is a FROM, stage
    name, number, total), and `warnings` what it said before them (said again when it is
    replayed).

    Only for builds whose entries were all `settled` when they were read: a stat taken within
    a clock tick of a change cannot vouch for what the entry holds later.
    """
    directory = store.buildcache / RECORDS
    directory.mkdir(exist_ok=True)
    data = {"image": str(image.id), "steps": steps, "images": dict(images),
            "warnings": warnings}
    # One line of JSON, then the paths (one per context entry, so possibly many) as objects
    # of a few thousand, a line each: written, and read back, a line at a time. Not synced:
    # a record lost or torn by a crash is no record (`replay` reads it as none), and the
    # image it names is checked before it is used.
    write_json_lines(directory / f"{key}.json", data, paths, durable=False)


def replay(store: Store, request: BuildRequest, events: Events) -> Image | None:
    """The recorded image of a build whose inputs are all unchanged, reported step by step as
    a fully cached build reports them and tagged as asked; None if anything differs."""
    key = fingerprint(request)
    if key is None:
        return None
    try:
        with open(store.buildcache / RECORDS / f"{key}.json", "rb") as lines:
            data = json.loads(lines.readline())
            image_id = Digest.parse(data["image"])
            if not store.has_image(image_id) or not _unchanged(store, data, lines):
                return None
    except (OSError, ValueError, KeyError, AttributeError, LayerbuildError):
        return None
    steps: list[Any] = data["steps"]
    if not all(isinstance(step, list) and len(step) == 5 for step in steps):
        return None  # a record of an older layerbuild, which numbered steps otherwise
    image = store.get_image(str(image_id))
    for warning in data.get("warnings", []):
        events.note(warning)
    for text, is_from, stage, number, total in steps:
        events.emit(StepStarted(number, total, text, 0, is_from, stage))
        events.emit(StepFinished(0.0, not is_from, text, 0))
    store.put_image(image, list(request.tags))
    return image


def _unchanged(store: Store, data: Mapping[str, Any], lines: Iterable[bytes]) -> bool:
    """Whether the images and paths of a record are as they were; the paths are its further
    `lines` (a record of an older layerbuild has them all in `data`)."""
    for ref, image_id in data["images"].items():
        try:
            now = str(store.resolve(ref))
        except LayerbuildError:
            now = ""  # not stored, as it may have been then
        if now != image_id:
            return False
    for paths in itertools.chain([data.get("paths", {})], map(json.loads, lines)):
        for path, sig in paths.items():
            try:
                if signature(os.lstat(path)) != sig:
                    return False
            except OSError:
                return False
    return True
