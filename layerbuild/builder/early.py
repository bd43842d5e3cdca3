"""A COPY started before its cache key is known, for a step whose cache miss is all but certain.

A COPY's key needs a digest of every source file, and the copy itself needs none of them: when
an earlier step of the stage missed (every later key then has a parent no cache has seen) or
the cache is not used, the copy runs in a sandbox child while the engine hashes the sources,
on the other core. The engine still looks the key up once it has it: on a hit the early copy
is thrown away, staging dir and all, as if it had never run; on a miss the step takes its
upper dir as it is and stores the layer, which is the one a copy started after the lookup
would have made (the same items, the same base, nothing from a previous layer).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path

from layerbuild.builder.copying import copy_step
from layerbuild.builder.stepcontext import StepContext, new_step_root
from layerbuild.buildfile import Add, Copy
from layerbuild.digest import Digest
from layerbuild.image import ImageConfig
from layerbuild.sandbox.spec import StepRoot


class EarlyCopy:
    """A COPY or ADD into a staging dir of its own, running on a thread from construction."""

    def __init__(self, ctx: StepContext, instr: Copy | Add, config: ImageConfig,
                 top: Digest | None, env: Mapping[str, str]) -> None:
        self._stack = contextlib.ExitStack()
        self.stage = self._stack.enter_context(ctx.store.staging())
        self.root = new_step_root(ctx.store, top, self.stage)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._copy, args=(ctx, instr, config, env), name="early-copy", daemon=True)
        self._thread.start()

    def _copy(self, ctx: StepContext, instr: Copy | Add, config: ImageConfig,
              env: Mapping[str, str]) -> None:
        try:
            copy_step(ctx, instr, self.root, self.root, config, env, self.stage)
        except BaseException as exc:  # raised again by the thread that takes the result
            self._error = exc

    def result(self) -> tuple[Path, StepRoot]:
        """The staging dir and the step's root once the copy has ended; its error if it
        failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.stage, self.root

    def close(self) -> None:
        """Wait for the copy, then remove its staging dir (whatever was not stored of it)."""
        self._thread.join()
        self._stack.close()

