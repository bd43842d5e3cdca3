"""What the builder calls: run a step, copy into a step, read the image a step sees."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from layerbuild.nsmap import in_user_namespace
from layerbuild.sandbox import fuse, seccomp
from layerbuild.sandbox.launch import call, prepare
from layerbuild.sandbox.spec import (
    CopyItem,
    PreviousLayer,
    RunSpec,
    StepRoot,
    encode_items,
    encode_root,
    encode_run,
)

_RUN_NAMESPACES = ("--uts", "--ipc", "--pid")


def run_step(root: StepRoot, spec: RunSpec, on_output: Callable[[bytes], None],
             filters: Path | None = None) -> int:
    """Mount the overlay in a private namespace, run argv there, stream output, return the code.

    The process is PID 1 of new PID, mount, UTS, IPC and network namespaces (the network
    namespace has `lo` and, for `network="private"` (root's "default"), a `tap0` served by
    slirp4netns; with `network="host"`, and for "default" when rootless, the step shares the
    host's network namespace instead), pivoted into the merged overlay, with a fresh /proc, a
    minimal /dev, a read-only /sys and the host's resolv.conf (its nameserver the stack's,
    with slirp4netns) and hosts; none of their mount
    points reaches the upper dir. Raises StepFailed when the sandbox cannot be set up or the
    timeout passes (every process of the step is killed); the command's own failure is just
    its non-zero exit code (128+N when killed by signal N). Unless `spec.seccomp` is False,
    the step's system calls are filtered by Docker's default seccomp profile (its compiled
    program kept in `filters`, see `seccomp.program`).
    """
    spec = replace(spec, network=_network(spec.network))
    request = {"op": "run", "root": encode_root(root), "run": encode_run(spec),
               "seccomp": seccomp.program(filters) if spec.seccomp else None}
    reply = call(request, _run_namespaces(spec.network), on_output, spec.timeout,
                 spec.network == "private")
    _settle(root)
    return int(reply["exit"])


def _network(network: str) -> str:
    # Rootless, the default is the host's network, as Buildah's: a private one needs
    # /dev/net/tun open to the user, which many hosts do not give.
    if network == "default":
        return "host" if in_user_namespace() else "private"
    return network


def _run_namespaces(network: str) -> tuple[str, ...]:
    return _RUN_NAMESPACES + (("--net",) if network != "host" else ())


def prepare_run(network: str, count: int = 1, filters: Path | None = None) -> None:
    """Start the children of RUN steps on `network` before the steps (`launch.prepare`), and
    compile their seccomp filter meanwhile (or read it from `filters`), on a thread
    (libseccomp's calls free the GIL)."""
    network = _network(network)
    prepare(_run_namespaces(network), network == "private", count)
    if not seccomp.compiled():
        threading.Thread(target=seccomp.warm, args=(filters,), name="seccomp",
                         daemon=True).start()


def prepare_copy(count: int = 1) -> None:
    """Start the children of COPY, WORKDIR or image reads before them (`launch.prepare`)."""
    prepare((), count=count)


def _settle(root: StepRoot) -> None:
    if fuse.driver().kind == "fuse":
        fuse.settle(Path(root.upper), root.lowers)


def copy_into(root: StepRoot, source_root: Path | Sequence[Path], items: Sequence[CopyItem],
              follow_source_symlinks: bool = False, as_user: str | None = None,
              previous: PreviousLayer | None = None) -> None:
    """Write files into the step's upper dir through the merged view, destinations in-image.

    `source_root` is a directory, or a stack of layer dirs (top first) read as one merged,
    read-only tree (for COPY --from). A source path may not leave its root (`..` or a symlink
    out of it raises UnsafePath); absolute symlinks in sources count from the source root.
    The top-level source symlink is copied as a link unless `follow_source_symlinks`.
    With `as_user`, a USER value, every item is owned by the ids a step under that USER runs
    with, looked up in the image's /etc/passwd and /etc/group before anything is written
    (UnknownUser for a name it lacks). With `previous`, files of sources not named changed
    there may be hard links of that layer's files (see `spec.PreviousLayer`).
    """
    source: dict[str, str | list[str] | None]
    if isinstance(source_root, Path | str):
        source = {"dir": str(source_root), "layers": None}
    else:
        source = {"dir": None, "layers": [str(p) for p in source_root]}
    request = {"op": "copy", "root": encode_root(root), "source": source,
               "items": encode_items(list(items)), "follow_symlinks": follow_source_symlinks,
               "as_user": as_user, "reuse": None if previous is None else
               {"layer": str(previous.layer), "changed": previous.changed,
                "epoch": previous.epoch}}
    call(request, ())
    _settle(root)


def export_merged(lowers: Sequence[Path], dest: Path) -> None:
    """Copy the tree that layer dirs `lowers` (top first) make together into the directory dest.

    Whiteouts and opaque directories are applied by overlayfs itself (a read-only mount in a
    private namespace); owners, modes, times, links and xattrs are kept. The copy runs
    chrooted into `dest`, so no symlink of the image can lead a write out of it.
    """
    call({"op": "export", "lowers": [str(p) for p in lowers], "dest": str(dest)}, ())


def read_image_files(root: StepRoot, paths: Sequence[str], limit: int = 1 << 20
                     ) -> list[bytes | None]:
    """Several files of the image at once (one sandbox start), as `read_image_file` reads one."""
    request = {"op": "read", "root": encode_root(root), "paths": list(paths), "limit": limit}
    files = call(request, ())["files"]
    return [base64.b64decode(f) if f is not None else None for f in files]


def read_image_file(root: StepRoot, path: str, limit: int = 1 << 20) -> bytes | None:
    """Read a file of the image (e.g. /etc/passwd), every symlink resolved inside the image.

    The image is the step's upper dir over its lowers, mounted read-only in a private
    namespace and read after chroot into it. None when the path does not exist; StepFailed
    when it is not a regular file or is larger than `limit` bytes.
    """
    return read_image_files(root, [path], limit)[0]


def glob_in_image(root: StepRoot, patterns: Sequence[str]) -> list[list[str]]:
    """For each absolute wildcard pattern (`*`, `?`, `[…]`), the image's matching paths, sorted;
    `*` matches dot files too, as in Docker's COPY. Symlinks resolve inside the image."""
    request = {"op": "glob", "root": encode_root(root), "patterns": list(patterns)}
    matches: list[list[str]] = call(request, ())["matches"]
    return matches


def resolve_in_image(root: StepRoot, path: str) -> str | None:
    """The canonical path of `path` inside the image (symlinks resolved there), None if missing."""
    request = {"op": "resolve", "root": encode_root(root), "paths": [path]}
    found: str | None = call(request, ())["paths"][0]
    return found
