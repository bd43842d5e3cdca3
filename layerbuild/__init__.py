"""layerbuild: a daemonless container image builder.

>>> import layerbuild
>>> image = layerbuild.build("app/", tags=["app:1"])  # doctest: +SKIP
>>> layerbuild.save("app:1", "app.tar")               # doctest: +SKIP

The names below come from `layerbuild.api` on first use, so `import layerbuild` (and every
module of the package with it) loads none of them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from typing import Any

    from layerbuild.api import (
        BuildfileError,
        BuildRequest,
        Events,
        FormatError,
        Image,
        ImageNotFound,
        LayerbuildError,
        Output,
        Reference,
        StepFailed,
        Store,
        StoreError,
        build,
        enter_rootless,
        import_rootfs,
        inspect,
        load,
        login,
        logout,
        open_store,
        pull,
        push,
        save,
    )

__all__ = ["BuildRequest", "BuildfileError", "Events", "FormatError", "Image", "ImageNotFound",
           "LayerbuildError", "Output", "Reference", "StepFailed", "Store", "StoreError",
           "build", "enter_rootless", "import_rootfs", "inspect", "load", "login", "logout",
           "open_store", "pull", "push", "save"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("layerbuild.api"), name)
    globals()[name] = value
    return value
