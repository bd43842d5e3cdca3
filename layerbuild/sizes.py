"""Sizes as Docker prints them (for the CLI's tables and progress bars).

Apart from `progress`, so that `images`, `history` and `du` need not import what draws a
build.
"""

from __future__ import annotations


def human_size(size: float) -> str:
    """A size as Docker prints it: `512B`, `1.98MB`, `3.4GB` (powers of 1000).

    >>> human_size(1_980_000)
    '1.98MB'
    """
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"
