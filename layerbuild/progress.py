"""How a build is drawn on the terminal (part of the CLI layer: the only other place that prints).

`plain` prints every step and every line of RUN output, for logs; `auto` does the same but
passes RUN output through live when stdout is a terminal; `quiet` prints nothing.
"""

from __future__ import annotations

import sys
from typing import TextIO

from layerbuild.build.engine import Events


class ProgressPrinter(Events):
    """Step lines (`[3/9] RUN make`), live RUN output and step times."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.mode = mode
        self.out = stream or sys.stderr
        self._pending = b""

    def _print(self, text: str) -> None:
        if self.mode != "quiet":
            print(text, file=self.out, flush=True)

    def step(self, number: int, total: int, text: str) -> None:
        first_line = text.splitlines()[0] if text else ""
        self._print(f"[{number}/{total}] {first_line}")

    def done(self, seconds: float, cached: bool = False) -> None:
        self._flush()
        self._print("  CACHED" if cached else f"  {seconds:.1f}s")

    def output(self, data: bytes) -> None:
        if self.mode == "quiet":
            return
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._print("  | " + line.decode("utf-8", "replace").rstrip("\r"))

    def _flush(self) -> None:
        if self._pending:
            self._print("  | " + self._pending.decode("utf-8", "replace"))
            self._pending = b""

    def note(self, text: str) -> None:
        self._print(text)
