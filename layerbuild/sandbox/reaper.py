"""Processes the sandbox has killed, reaped off the step's critical path but surely.

A killed process can take the kernel a while to end: a network stack's tap device is torn down
in its exit, waiting for RCU grace periods (15-30 ms here), and a step's result never depends
on it. So the caller kills it and hands it over; a short-lived thread waits for it, so it does
not linger as a zombie. `settle` waits for every one handed over: the engine calls it when a
build ends and it runs at interpreter exit, so none outlives the build or the builder.
"""

from __future__ import annotations

import atexit
import threading
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow)
if TYPE_CHECKING:
    import subprocess

SETTLE_TIMEOUT = 10.0
_waiting: list[threading.Thread] = []
_lock = threading.Lock()


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Reap `proc`, already killed, in the background."""
    thread = threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True)
    thread.start()
    with _lock:
        _waiting[:] = [t for t in _waiting if t.is_alive()]
        _waiting.append(thread)


def settle(timeout: float = SETTLE_TIMEOUT) -> bool:
    """Wait until every process handed over is reaped; False if some still were not by then."""
    deadline = time.monotonic() + timeout
    with _lock:
        waiting = list(_waiting)
    for thread in waiting:
        thread.join(max(0.0, deadline - time.monotonic()))
    with _lock:
        _waiting[:] = [t for t in _waiting if t.is_alive()]
        return not _waiting


atexit.register(settle)
