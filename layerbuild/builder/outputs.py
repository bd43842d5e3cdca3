"""Where a build's image goes besides the store: `-o type=docker|oci|local|tar,dest=…`.

As BuildKit's exporters: `docker` and `oci` write one tar (an OCI layout plus
`manifest.json`), or the layout as a directory with `tar=false`; `tar` writes the root
filesystem as one tar, `local` as a directory. `dest=-` streams a tar to stdout (at most one
output may), as does a bare `-o -`; `oci` and `tar` without `dest` do too, as with buildx.
The archive code is loaded by the outputs that write one only: most builds have none.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerbuild.errors import LayerbuildError
from layerbuild.events import Events
from layerbuild.fsutil import atomic_file, write_atomic
from layerbuild.image import Image
from layerbuild.reference import InvalidReference, Reference
from layerbuild.request import flag_fields
from layerbuild.store import Store

TYPES = ("docker", "oci", "local", "tar", "image", "registry")


@dataclass(frozen=True)
class Output:
    """One `-o` request: a file or dir (`dest`), or names in the store and registries."""

    type: str
    dest: str = ""
    names: tuple[str, ...] = ()
    push: bool = False
    tar: bool = True
    """For docker and oci: one tar file (the default), else a directory."""

    @property
    def to_stdout(self) -> bool:
        """Whether the output streams to stdout (`dest=-`)."""
        return self.dest == STDOUT


STDOUT = "-"


def parse_output(text: str) -> Output:
    """Parse `type=T,dest=D[,tar=false]` (a bare path means type=local, a bare `-` type=tar
    to stdout, as buildx reads them), and `type=image,name=REF[,push=true]` /
    `type=registry,name=REF` (names: the `-t` tags when none is given; several as
    `"name=a,b"`, as BuildKit reads them)."""
    if "=" not in text:
        return Output("tar", STDOUT) if text == STDOUT else Output("local", text)
    fields = flag_fields(text, "-o")
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
    tar = _flag(text, fields, "tar") if kind in ("docker", "oci") else True
    dest = fields.get("dest") or (STDOUT if kind in ("oci", "tar") and tar else "")
    if not dest:
        raise LayerbuildError(f"-o {text}: dest= is required")
    if dest == STDOUT and (kind == "local" or not tar):
        raise LayerbuildError(f"-o {text}: a directory cannot go to stdout (dest=-); "
                              "give dest=DIR, or a tar output")
    return Output(kind, dest, tar=tar)


def _flag(text: str, fields: dict[str, str], name: str) -> bool:
    value = fields.get(name, "true").lower()
    if value not in ("true", "false", "1", "0"):
        raise LayerbuildError(f"-o {text}: {name}= must be true or false")
    return value in ("true", "1")


def check_outputs(outputs: Sequence[Output]) -> None:
    """Refuse, before anything is built, outputs that cannot be written: two of them to
    stdout, a file whose directory is missing or whose name is a directory."""
    if sum(o.to_stdout for o in outputs) > 1:
        raise LayerbuildError("-o: only one output can go to stdout (dest=-)")
    for output in outputs:
        if output.type in ("tar", "docker", "oci") and output.tar:
            _check_file(output)


def write_output(store: Store, image: Image, output: Output, tags: list[str],
                 events: Events | None = None) -> None:
    """Write the built image as the output asks."""
    refs = tags or [str(image.id)]
    if output.type in ("image", "registry"):
        _image_output(store, image, output, tags, events)
        return
    if output.type == "local" or not output.tar:
        if output.type == "local":
            export_rootfs(store, image, Path(output.dest))
        else:
            _write_layout(store, refs, Path(output.dest))
        return
    _check_file(output)
    with _sink(output.dest) as out:
        if output.type == "tar":
            _rootfs_tar(store, image, out, output.dest)
        else:
            _write_archive(store, refs, out)


def _write_archive(store: Store, refs: list[str], out: BinaryIO) -> None:
    from layerbuild.archive.save import plan_archive, write_archive

    write_archive(plan_archive(store, refs), out)


def _check_file(output: Output) -> None:
    """A file output's directory must be there and its name no directory, as for buildx."""
    if output.to_stdout:
        return
    dest = Path(output.dest)
    if dest.is_dir():
        raise LayerbuildError(f"-o type={output.type},dest={output.dest}: is a directory"
                              + (" (tar=false writes a directory)"
                                 if output.type in ("docker", "oci") else ""))
    if not dest.parent.is_dir():
        raise LayerbuildError(f"-o type={output.type},dest={output.dest}: the directory "
                              f"{dest.parent} does not exist")


@contextlib.contextmanager
def _sink(dest: str) -> Iterator[BinaryIO]:
    """Where a one-file output is written: stdout for `-`, else a file that appears only
    once it is whole."""
    if dest == STDOUT:
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_file(Path(dest), durable=False) as out:
        yield out


def _write_layout(store: Store, refs: list[str], dest: Path) -> None:
    from layerbuild.archive.save import plan_archive

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


def _rootfs_tar(store: Store, image: Image, out: BinaryIO, dest: str) -> None:
    """The image's root filesystem as one tar, written to `out` (a real file or pipe)."""
    import subprocess

    with store.staging() as stage:
        export_rootfs(store, image, stage / "rootfs")
        done = subprocess.run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C",
                               str(stage / "rootfs"), "-cf", "-", "."], stdout=out,
                              stderr=subprocess.PIPE, check=False)
        if done.returncode == -signal.SIGPIPE:  # the reader went away, as for our own writes
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        if done.returncode:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            where = "stdout" if dest == STDOUT else dest
            raise LayerbuildError(f"writing {where}: tar failed: "
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
