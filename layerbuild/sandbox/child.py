"""The sandbox's init: started by `unshare` in new namespaces, it does one operation and exits.

Protocol: one request on stdin (its length, then its `marshal` form), which then stays open as
a lifeline (EOF means the builder is gone: kill the step; EOF before any request means a spare
child was not needed). Replies are JSON lines on the control fd named in the request;
the last one carries `status`. stdout is the step's output pipe; stderr is for diagnostics.
Its mounts live only in its private mount namespace and vanish with it, even on SIGKILL.
"""

from __future__ import annotations

import binascii
import contextlib
import marshal
import os
import posixpath
import sys
from _json import encode_basestring_ascii

from layerbuild.errors import LayerbuildError, UnsafePath
from layerbuild.sandbox import identity, libc, step
from layerbuild.sandbox.copy import Copier, Reuse
from layerbuild.sandbox.entries import entry_paths
from layerbuild.sandbox.inroot import read_file, resolve
from layerbuild.sandbox.layers import (
    enter_staging,
    fuse_used,
    mount_overlay,
    open_dir,
    stop_fuse,
    sync,
    use_fuse,
)
from layerbuild.users import UnknownUser

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
        data = memoryview(_json(message).encode() + b"\n")
        while data:
            data = data[os.write(self.fd, data):]


def _json(value: object) -> str:
    """JSON text of a reply (dicts, lists, strings, numbers, None), without the json package:
    it imports re, and every step's child would pay for that."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json(str(k))}: {_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    raise TypeError(f"a reply cannot hold {type(value).__name__}")


def _request() -> dict[str, Any]:
    """The request: its length (8 bytes, big-endian), then its `marshal` form (the builder is
    this child's parent, running the same interpreter)."""
    head = _read_exactly(8)
    if not head:  # nothing at all: a spare child that was not needed
        raise SystemExit(0)
    size = int.from_bytes(head, "big")
    body = _read_exactly(size) if len(head) == 8 else b""
    if len(body) < size or len(head) < 8:
        raise SystemExit("the request on stdin was cut short")
    result: dict[str, Any] = marshal.loads(body)
    return result


def _read_exactly(size: int) -> bytes:
    """Up to `size` bytes of stdin: fewer only at its end."""
    raw = bytearray()
    while len(raw) < size:
        chunk = os.read(0, size - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


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
    """Read files of the image, each path resolved by the kernel as after chroot into it."""
    _image_view(req)
    root_fd = open_dir("root", "staging")
    files = [read_file(root_fd, path, req["limit"]) for path in req["paths"]]
    return {"files": [binascii.b2a_base64(f, newline=False).decode() if f is not None else None
                      for f in files]}


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
    reuse = None
    if req.get("reuse") is not None and not fuse_used():
        reuse = Reuse(open_dir(req["reuse"]["layer"], "previous layer"),
                      set(entry_paths(req["reuse"]["changed"])), req["reuse"]["epoch"])
    if source["layers"] is None:
        source_fd = open_dir(source["dir"], "copy source")
    else:
        source_layers = [open_dir(p, "source layer") for p in source["layers"]]
    enter_staging(root["work"])
    for name in ("root", "empty", "source"):
        os.mkdir(name, 0o755)
    empty = open_dir("empty", "staging")
    items = req.pop("items")  # taken apart as it is copied (`each_item`)
    if req.get("as_user") is not None:
        items = _owned(req["as_user"], [upper, *lowers, empty], items)
    mount_overlay("root", lowers or [empty], upper, work)
    if source["layers"] == []:
        source_fd = empty  # an empty stage (FROM scratch)
    elif source["layers"] is not None:
        mount_overlay("source", [*source_layers, empty], flags=_RO)
        source_fd = open_dir("source", "staging")
    os.chroot("root")
    os.chdir("/")
    # fuse-overlayfs keeps state of its own about the upper dir: write only through it.
    Copier(source_fd, req["follow_symlinks"], req.get("rootless"),
           upper_fd=None if fuse_used() else upper, reuse=reuse).copy_all(each_item(items))
    sync("/")
    return {}


def _owned(user: str, layers: list[int], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items owned by the ids USER `user` has in the image, looked up before a write, in
    a read-only view of it (nodev: no device node of the image is ever opened)."""
    os.mkdir("view", 0o755)
    mount_overlay("view", layers, flags=_RO)
    view = open_dir("view", "staging")
    try:
        (uid, gid, _groups), _home = identity.lookup(view, user, (0, 0, ()))
    finally:
        os.close(view)
        libc.umount("view")
    return [{**item, "uid": uid, "gid": gid} for item in items]


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
        for inner in entry_paths(entries):
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
    except UnknownUser as exc:
        control.send({"status": "error", "kind": "user", "message": str(exc)})
    except LayerbuildError as exc:
        control.send({"status": "error", "kind": "failed", "message": str(exc)})
    except OSError as exc:
        what = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror)
        control.send({"status": "error", "kind": "failed", "message": what})
    except Exception as exc:
        try:
            import traceback  # only on this path: it is slow to import
        except ImportError:  # after a chroot no module can be loaded
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            traceback.print_exc(file=sys.stderr)
        control.send({"status": "error", "kind": "failed",
                      "message": f"sandbox error: {type(exc).__name__}: {exc}"})
    finally:
        stop_fuse()
    _leave()


def _leave() -> None:
    """Exit now, every pipe to the builder closed first. A process's last fds are closed
    only after its namespaces are gone, and ending this mount namespace unmounts the step's
    overlay, evicting every inode it made: tens of ms for thousands of files, which the
    builder, with the whole reply in hand, need not wait for (it reaps this process in the
    background)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os.closerange(0, 1 << 20)
    os._exit(0)
