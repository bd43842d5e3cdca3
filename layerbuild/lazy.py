"""Names a package exports from its modules, each module loaded when one of its names is first
used: a package's `__getattr__` (PEP 562), so that importing the package loads none of them."""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping
    from typing import Any


def lazy_names(package: str, homes: Mapping[str, str],
               namespace: MutableMapping[str, Any]) -> Callable[[str], Any]:
    """The `__getattr__` of `package`: a name of `homes` comes from its module there
    (`package.<home>`) on first use, and is kept in `namespace` (the package's globals)."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        namespace[name] = value
        return value

    return __getattr__
