"""The sandbox's init: started by `unshare` in new namespaces, it does one operation and exits.

Protocol: one JSON request line on stdin, which then stays open as a lifeline (EOF means the
builder is gone: kill the step). Replies are JSON lines on the control fd named in the request;
the last one carries `status`. stdout is the step's output pipe; stderr is for diagnostics.
Its mounts live only in its private mount namespace and vanish with it, even on SIGKILL.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import stat
import sys

from layerbuild.errors import LayerbuildError, StepFailed, UnsafePath
from layerbuild.sandbox import libc, step
from layerbuild.sandbox.copy import Copier
from layerbuild.sandbox.inroot import resolve
from layerbuild.sandbox.layers import (
    enter_staging,
    mount_overlay,
    open_dir,
    stop_fuse,
    sync,
    use_fuse,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_RO = libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


class Control:
    """The reply channel to the builder."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, message: dict[str, Any]) -> None:
        """Write one JSON line, all of it."""
        data = memoryview(json.dumps(message).encode() + b"\n")
        while data:
            data = data[os.write(self.fd, data):]


def _request() -> dict[str, Any]:
    raw = bytearray()
    while not raw.endswith(b"\n"):
        chunk = os.read(0, 1 << 16)
        if not chunk:
            raise SystemExit("no request on stdin")
        raw += chunk
    result: dict[str, Any] = json.loads(raw)
    return result


def _image_view(req: dict[str, Any]) -> None:
    """The image as the step would see it (upper over lowers), read-only, at `root`."""
    root = req["root"]
    layers = [open_dir(root["upper"], "upper dir")]
    layers += [open_dir(p, "layer") for p in root["lowers"]]
    enter_staging(root["work"])
    os.mkdir("root", 0o755)
    os.mkdir("empty", 0o755)
    mount_overlay("root", [*layers, open_dir("empty", "staging")], flags=_RO)


def op_read(req: dict[str, Any], control: Control) -> dict[str, Any]:
    """Read files of the image, each path resolved by the kernel after chroot into it."""
    _image_view(req)
    os.chroot("root")
    os.chdir("/")
    limit = req["limit"]
    return {"files": [_read(path, limit) for path in req["paths"]]}


def _read(path: str, limit: int) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StepFailed(f"{path} in the image: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StepFailed(f"{path} in the image is not a regular file")
        data = bytearray()
        while len(data) <= limit and (chunk := os.read(fd, 1 << 16)):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise StepFailed(f"{path} in the image is larger than {limit} bytes")
    return base64.b64encode(data).decode()


def op_resolve(req: dict[str, Any], control: Control) -> dict[str, Any]:
    """Canonical in-image paths (symlinks resolved inside the image), None where missing."""
    _image_view(req)
    root_fd = open_dir("root", "staging")
    out: list[str | None] = []
    for path in req["paths"]:
        with resolve(root_fd, path) as res:
            out.append(res.path if res.exists else None)
    return {"paths": out}


def op_glob(req: dict[str, Any], control: Control) -> dict[str, Any]:
    """Image paths matching wildcard patterns (dot files too), sorted, after chroot into it."""
    import glob  # only here: the other operations start without it

    _image_view(req)
    os.chroot("root")
    os.chdir("/")
    return {"matches": [sorted(glob.glob(p, include_hidden=True)) for p in req["patterns"]]}


def op_copy(req: dict[str, Any], control: Control) -> dict[str, Any]:
    """Write items into the step's upper dir through its merged overlay, chrooted into it."""
    root, source = req["root"], req["source"]
    lowers = [open_dir(p, "layer") for p in root["lowers"]]
    upper = open_dir(root["upper"], "upper dir")
    work = open_dir(root["work"], "overlay workdir")
    if source["layers"] is None:
        source_fd = open_dir(source["dir"], "copy source")
    else:
        source_layers = [open_dir(p, "source layer") for p in source["layers"]]
    enter_staging(root["work"])
    for name in ("root", "empty", "source"):
        os.mkdir(name, 0o755)
    empty = open_dir("empty", "staging")
    mount_overlay("root", lowers or [empty], upper, work)
    if source["layers"] == []:
        source_fd = empty  # an empty stage (FROM scratch)
    elif source["layers"] is not None:
        mount_overlay("source", [*source_layers, empty], flags=_RO)
        source_fd = open_dir("source", "staging")
    os.chroot("root")
    os.chdir("/")
    items = req.pop("items")
    Copier(source_fd, req["follow_symlinks"], req.get("rootless")).copy_all(each_item(items))
    sync("/")
    return {}


def each_item(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The copy items of a request one by one, an item's `entries` each made an item of its
    own, as `spec.CopyItem.each` makes them: one at a time, so that a tree of many entries
    is never a list of items."""
    while items:
        item = items.pop(0)
        entries, mode = item.pop("entries", None), item.pop("entry_mode", None)
        yield item
        if not entries:
            continue
        base = "" if item["source"] == "." else item["source"] + "/"
        dest = item["dest"]
        start = 0
        while start < len(entries):
            end = entries.index("\0", start)
            inner = entries[start:end]
            start = end + 1
            yield {**item, "source": base + inner, "dest": posixpath.join(dest, inner),
                   "mode": mode, "recursive": False}


def op_export(req: dict[str, Any], control: Control) -> dict[str, Any]:
    """Copy the merged tree of some layers into a host dir, chrooted into that dir."""
    layers = [open_dir(p, "layer") for p in req["lowers"]]
    dest = open_dir(req["dest"], "export destination")
    if not layers:
        return {}
    enter_staging(req["dest"], cover=req["dest"])  # dest is reached through its fd
    os.mkdir("root", 0o755)
    os.mkdir("empty", 0o755)
    mount_overlay("root", [*layers, open_dir("empty", "staging")], flags=_RO)
    source_fd = open_dir("root", "staging")
    os.fchdir(dest)
    os.chroot(".")
    os.chdir("/")
    item = {"source": ".", "dest": "/", "uid": None, "gid": None, "mode": None,
            "recursive": True, "into_existing_dir": True, "made_time": None, "link_group": 0}
    Copier(source_fd, False).copy_all([item])
    return {}


def op_run(req: dict[str, Any], control: Control) -> dict[str, Any]:
    """Run a step (see `step.run`)."""
    return step.run(req, 0, control.send)


OPS = {"run": op_run, "copy": op_copy, "read": op_read, "resolve": op_resolve,
       "export": op_export, "glob": op_glob}


def main() -> None:
    """Serve the one request on stdin."""
    os.umask(0)
    req = _request()
    os.set_inheritable(req["control_fd"], False)  # never into the step: it could forge replies
    if "network_fd" in req:
        os.set_inheritable(req["network_fd"], False)
    control = Control(req["control_fd"])
    if req.get("fuse"):
        use_fuse(req["fuse"])
    try:
        result = OPS[req["op"]](req, control)
        control.send({"status": "ok", **result})
    except UnsafePath as exc:
        control.send({"status": "error", "kind": "unsafe", "message": str(exc)})
    except LayerbuildError as exc:
        control.send({"status": "error", "kind": "failed", "message": str(exc)})
    except OSError as exc:
        what = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror)
        control.send({"status": "error", "kind": "failed", "message": what})
    except Exception as exc:
        import traceback  # only on this path: it is slow to import

        traceback.print_exc(file=sys.stderr)
        control.send({"status": "error", "kind": "failed",
                      "message": f"sandbox error: {type(exc).__name__}: {exc}"})
    finally:
        stop_fuse()
