"""Building stages at once: each starts when the stages it uses are built.

A stage runs in its own thread once its dependencies are done. The first failure stops the
build: the other stages are told to stop (their running steps are killed), every thread is
waited for, so each cleans up after itself, and that first error is raised. Ctrl-C (which only
the main thread sees) stops the build the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence


class Stopped(Exception):
    """Raised in a stage that was told to stop because another one failed."""


def run_at_once(order: Sequence[int], needs: Mapping[int, set[int]],
                build: Callable[[int], None], stop: Callable[[], None]) -> None:
    """Call `build(stage)` for every stage of `order` in threads, each after its `needs`.

    `stop()` is called once if a stage fails or the wait is interrupted; a stage that fails
    after it (because it was stopped) does not hide the first error.
    """
    done = {stage: threading.Event() for stage in order}
    failed: list[BaseException] = []
    lock = threading.Lock()

    def fail(exc: BaseException) -> None:
        with lock:
            failed.append(exc)
            first = len(failed) == 1
        if first:
            stop()

    def work(stage: int) -> None:
        try:
            for need in needs.get(stage, ()):
                done[need].wait()
            if failed:
                raise Stopped()
            build(stage)
        except BaseException as exc:  # handed to the main thread
            fail(exc)
        finally:
            done[stage].set()

    threads = [threading.Thread(target=work, args=(stage,), name=f"stage-{stage}", daemon=True)
               for stage in order]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # short waits: Ctrl-C must reach this thread
    except KeyboardInterrupt:
        fail(KeyboardInterrupt())
        for thread in threads:
            thread.join()
        raise
    if failed:
        raise next((e for e in failed if not isinstance(e, Stopped)), failed[0])
