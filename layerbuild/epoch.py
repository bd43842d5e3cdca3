"""SOURCE_DATE_EPOCH's clamp of file times, as a layer built with it stores them."""

from __future__ import annotations


def clamped_ns(mtime_ns: int, epoch: int | None) -> int:
    """An mtime (ns) as a layer built with `epoch` stores it: one in a later second than the
    epoch's becomes the epoch, as the layer's tar has it (whole seconds, clamped).

    >>> clamped_ns(5_500_000_000, 5), clamped_ns(6_000_000_000, 5), clamped_ns(7, None)
    (5500000000, 5000000000, 7)
    """
    if epoch is not None and mtime_ns >= (epoch + 1) * 1_000_000_000:
        return epoch * 1_000_000_000
    return mtime_ns
