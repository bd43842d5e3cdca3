"""Where a build's image goes besides the store: `-o type=docker|oci|local|tar,dest=…`."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from layerbuild.archive.save import plan_archive, save
from layerbuild.errors import LayerbuildError
from layerbuild.events import Events
from layerbuild.fsutil import atomic_file, write_atomic
from layerbuild.image import Image
from layerbuild.reference import InvalidReference, Reference
from layerbuild.store import Store

TYPES = ("docker", "oci", "local", "tar", "image", "registry")


@dataclass(frozen=True)
class Output:
    """One `-o` request: a file or dir (`dest`), or names in the store and registries."""

    type: str
    dest: str = ""
    names: tuple[str, ...] = ()
    push: bool = False


def parse_output(text: str) -> Output:
    """Parse `type=T,dest=D` (or a bare path, meaning type=local as BuildKit does), and
    `type=image,name=REF[,push=true]` / `type=registry,name=REF` (names: the `-t` tags when
    none is given; several as `"name=a,b"`, as BuildKit reads them)."""
    if "=" not in text:
        return Output("local", text)
    fields = _fields(text)
    kind = fields.get("type", "local")
    if kind not in TYPES:
        raise LayerbuildError(f"-o {text}: unknown type {kind!r} (one of {', '.join(TYPES)})")
    if kind in ("image", "registry"):
        names = tuple(n.strip() for n in fields.get("name", "").split(",") if n.strip())
        for name in names:
            try:
                Reference.parse(name)
            except InvalidReference as exc:
                raise LayerbuildError(f"-o {text}: {exc}") from None
        push = kind == "registry" or fields.get("push", "false").lower() in ("true", "1")
        return Output(kind, "", names, push)
    dest = fields.get("dest")
    if not dest:
        raise LayerbuildError(f"-o {text}: dest= is required")
    return Output(kind, dest)


def _fields(text: str) -> dict[str, str]:
    """`k=v,k2="a,b"` as a dict (CSV, as BuildKit's flags)."""
    import csv

    try:
        parts = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise LayerbuildError(f"-o {text}: cannot read the fields") from None
    return dict(part.partition("=")[::2] for part in parts)


def write_output(store: Store, image: Image, output: Output, tags: list[str],
                 events: Events | None = None) -> None:
    """Write the built image as the output asks."""
    refs = tags or [str(image.id)]
    if output.type in ("image", "registry"):
        _image_output(store, image, output, tags, events)
        return
    if output.type in ("docker", "tar"):  # one file: its directory must be there, as for -o
        _check_parent(output)
    if output.type == "docker":
        save(store, refs, output.dest)
    elif output.type == "oci":
        _write_layout(store, refs, Path(output.dest))
    elif output.type == "local":
        export_rootfs(store, image, Path(output.dest))
    else:
        export_rootfs_tar(store, image, Path(output.dest))


def _check_parent(output: Output) -> None:
    parent = Path(output.dest).parent
    if not parent.is_dir():
        raise LayerbuildError(f"-o type={output.type},dest={output.dest}: the directory "
                              f"{parent} does not exist")


def _write_layout(store: Store, refs: list[str], dest: Path) -> None:
    plan = plan_archive(store, refs)
    (dest / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    for digest, (_size, opener) in plan.blobs.items():
        target = dest / "blobs/sha256" / digest.hex
        if target.exists():
            continue
        with opener() as src, atomic_file(target, durable=False) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    for name, data in plan.files.items():
        write_atomic(dest / name, data, durable=False)


def export_rootfs(store: Store, image: Image, dest: Path) -> None:
    """The image's root filesystem as a plain directory (layers applied, whiteouts honoured)."""
    from layerbuild.sandbox import export_merged

    dirs = tuple(layer.diff_dir for layer in reversed(store.image_layers(image)))
    dest.mkdir(parents=True, exist_ok=True)
    export_merged(dirs, dest)


def export_rootfs_tar(store: Store, image: Image, dest: Path) -> None:
    """The image's root filesystem as one tar file."""
    with store.staging() as stage:
        export_rootfs(store, image, stage / "rootfs")
        with atomic_file(dest, durable=False) as out:
            done = subprocess.run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C",
                                   str(stage / "rootfs"), "-cf", "-", "."], stdout=out,
                                  stderr=subprocess.PIPE, check=False)
            if done.returncode:
                said = done.stderr.decode(errors="replace").strip().splitlines()
                raise LayerbuildError(f"writing {dest}: tar failed: "
                                      f"{said[-1] if said else f'exit {done.returncode}'}")


def _image_output(store: Store, image: Image, output: Output, tags: list[str],
                  events: Events | None) -> None:
    names = list(output.names) or tags
    if not names:
        raise LayerbuildError(f"-o type={output.type}: give name=REF (or -t NAME)")
    refs = [Reference.parse(n) for n in names]
    store.put_image(image, refs)
    if output.push:
        from layerbuild.registry import Registry

        session = Registry(notice=events.note if events else None)
        for ref in refs:
            session.push(store, image, ref, events=events)
