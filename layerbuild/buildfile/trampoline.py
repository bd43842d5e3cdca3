"""Recursive descent without Python's stack: productions are generators run from a list.

A production yields each production it calls (a generator) and is sent back that one's
result; an exception raised by a callee is thrown into its caller, where ``try`` works as
usual. :func:`drive` keeps the callers on a list, so input nested 10,000 deep needs no
10,000 Python frames (and no RecursionError)::

    def count(n):
        return 0 if n == 0 else 1 + (yield count(n - 1))

    drive(count(100_000))  # 100000
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["drive"]

_T = TypeVar("_T")


def drive(root: Generator[Any, Any, _T]) -> _T:
    """Run the production ``root`` and every one it calls; its result, or its exception."""
    stack: list[Generator[Any, Any, Any]] = [root]
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            if error is None:
                call = stack[-1].send(value)
            else:
                call, error = stack[-1].throw(error), None
        except StopIteration as done:
            stack.pop()
            if not stack:
                return done.value  # type: ignore[no-any-return]
            value, error = done.value, None
            continue
        except Exception as err:  # handed to the caller, as a call would hand it
            stack.pop()
            if not stack:
                raise
            error = err
            continue
        stack.append(call)
        value = None
