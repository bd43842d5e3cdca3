"""Importing a plain root filesystem tarball as a one-layer image (like `docker import`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from layerbuild.errors import FormatError
from layerbuild.image import History, Image, empty_config, rfc3339
from layerbuild.ingest import ingest_dir
from layerbuild.layer import extract_layer, open_decompressed
from layerbuild.reference import Reference
from layerbuild.store import Store


def import_rootfs(store: Store, path: str, tag: Reference | None,
                  source_date_epoch: int | None = None, message: str | None = None) -> Image:
    """Store the rootfs tarball at `path` ("-" for stdin; gzip/zstd/xz/bzip2 or plain)."""
    created = rfc3339(source_date_epoch)
    with store.staging() as stage:
        try:
            raw = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise FormatError(f"cannot read {path}: {exc.strerror}") from None
        with raw:
            try:
                extract_layer(open_decompressed(raw), stage / "diff", whiteouts=False)
            except (EOFError, ValueError) as exc:
                raise FormatError(f"{path}: truncated or corrupt tarball ({exc})") from None
        got = ingest_dir(store, None, stage / "diff", stage, source_date_epoch, lease=stage)
        source = "-" if path == "-" else os.path.basename(Path(path))
        history = History(created=created, created_by=f"layerbuild import {source}",
                          comment=message or f"Imported from {source}")
        config = empty_config(created).with_layer(got.record.diff_id, history)
        image = Image.from_config(config)
        store.put_image(image, [tag] if tag else [], stage)
    return image
