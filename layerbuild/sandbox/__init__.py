"""Overlay mounts and step processes in namespaces: the only layerbuild code that mounts or spawns.

>>> code = run_step(StepRoot((base,), upper, work), RunSpec(("/bin/sh", "-c", "make"), ()),
...                 on_output=sys.stdout.buffer.write)  # doctest: +SKIP

The names below are imported on first use, so the sandbox's own child process (which imports
`layerbuild.sandbox.child`, and this file with it) starts without the builder-side modules.
"""

from __future__ import annotations

from layerbuild.lazy import lazy_names

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from layerbuild.sandbox.launch import stop_all
    from layerbuild.sandbox.ops import (
        copy_into,
        export_merged,
        glob_in_image,
        read_image_file,
        read_image_files,
        resolve_in_image,
        run_step,
    )
    from layerbuild.sandbox.spec import CopyItem, Mount, RunSpec, StepRoot

_OPS = ("copy_into", "export_merged", "glob_in_image", "read_image_file", "read_image_files",
        "resolve_in_image", "run_step")
_HOMES = {**dict.fromkeys(_OPS, "ops"), **dict.fromkeys(("CopyItem", "Mount", "RunSpec",
                                                         "StepRoot"), "spec"),
          "stop_all": "launch"}

__all__ = ["CopyItem", "Mount", "RunSpec", "StepRoot", "copy_into", "export_merged",
           "glob_in_image", "read_image_file", "read_image_files", "resolve_in_image", "run_step",
           "stop_all"]


__getattr__ = lazy_names(__name__, _HOMES, globals())
