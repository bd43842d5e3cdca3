"""Where a build's image goes besides the store: `-o type=docker|oci|local|tar,dest=…`."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from layerbuild.archive.save import plan_archive, save
from layerbuild.digest import chain_ids
from layerbuild.errors import LayerbuildError
from layerbuild.image import Image
from layerbuild.store import Store

TYPES = ("docker", "oci", "local", "tar")


@dataclass(frozen=True)
class Output:
    """One `-o` request."""

    type: str
    dest: str


def parse_output(text: str) -> Output:
    """Parse `type=T,dest=D` (or a bare path, meaning type=local as BuildKit does)."""
    if "=" not in text:
        return Output("local", text)
    fields = dict(part.partition("=")[::2] for part in text.split(","))
    kind = fields.get("type", "local")
    dest = fields.get("dest")
    if kind not in TYPES:
        raise LayerbuildError(f"-o {text}: unknown type {kind!r} (one of {', '.join(TYPES)})")
    if not dest:
        raise LayerbuildError(f"-o {text}: dest= is required")
    return Output(kind, dest)


def write_output(store: Store, image: Image, output: Output, tags: list[str]) -> None:
    """Write the built image as the output asks."""
    refs = tags or [str(image.id)]
    if output.type == "docker":
        save(store, refs, output.dest)
    elif output.type == "oci":
        _write_layout(store, refs, Path(output.dest))
    elif output.type == "local":
        export_rootfs(store, image, Path(output.dest))
    else:
        export_rootfs_tar(store, image, Path(output.dest))


def _write_layout(store: Store, refs: list[str], dest: Path) -> None:
    plan = plan_archive(store, refs)
    (dest / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    for digest, (_size, opener) in plan.blobs.items():
        target = dest / "blobs/sha256" / digest.hex
        if target.exists():
            continue
        tmp = target.with_name(f".{digest.hex}.tmp")
        with opener() as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        tmp.rename(target)
    for name, data in plan.files.items():
        (dest / name).write_bytes(data)


def export_rootfs(store: Store, image: Image, dest: Path) -> None:
    """The image's root filesystem as a plain directory (layers applied, whiteouts honoured)."""
    from layerbuild.sandbox import export_merged

    dirs = []
    for chain in chain_ids(image.config.diff_ids):
        record = store.layer(chain)
        if record is None:
            raise LayerbuildError(f"layer {chain} is missing from the store")
        dirs.append(store.diff_dir(record))
    dest.mkdir(parents=True, exist_ok=True)
    export_merged(tuple(reversed(dirs)), dest)


def export_rootfs_tar(store: Store, image: Image, dest: Path) -> None:
    """The image's root filesystem as one tar file."""
    with store.staging() as stage:
        export_rootfs(store, image, stage / "rootfs")
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C",
                        str(stage / "rootfs"), "-cf", str(tmp), "."], check=True)
        tmp.rename(dest)
