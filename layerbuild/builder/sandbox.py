"""The sandbox as the engine sees it: what a step may ask of it, and the real one on this host.

The engine takes a `Sandbox` next to the store, so it can build through a fake one (tests run
without root); `HostSandbox` is `layerbuild.sandbox`, loaded on first use, so a build that runs
no step never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from layerbuild.sandbox.spec import CopyItem, PreviousLayer, RunSpec, StepRoot


class Sandbox(Protocol):
    """Runs steps and reads and writes the images they see."""

    def run(self, root: StepRoot, spec: RunSpec, on_output: Callable[[bytes], None]) -> int:
        """Run a RUN step's process on `root`, stream its output; returns its exit code (its
        USER and HOME looked up in the image `root` shows, as `spec` asks)."""
        ...

    def copy_into(self, root: StepRoot, source: Path | Sequence[Path],
                  items: Sequence[CopyItem], follow_source_symlinks: bool = False,
                  as_user: str | None = None, previous: PreviousLayer | None = None) -> None:
        """Copy items from a directory, or a stack of layer dirs (top first), into `root`;
        with `as_user` (a USER value), owned by its ids in the image `root` shows; with
        `previous`, unchanged files may be taken from the step's previous layer."""
        ...

    def read_files(self, root: StepRoot, paths: Sequence[str]) -> list[bytes | None]:
        """Files of the image `root` shows (None for a missing one)."""
        ...

    def glob(self, root: StepRoot, patterns: Sequence[str]) -> list[list[str]]:
        """For each absolute wildcard pattern, the image's matching paths, sorted."""
        ...

    def export(self, lowers: Sequence[Path], dest: Path) -> None:
        """Copy the tree that layer dirs `lowers` (top first) make together into dest."""
        ...

    def prepare(self, kind: str, network: str = "none", count: int = 1) -> None:
        """A hint: `count` steps of `kind` ("run", on `network`, or "copy": COPY, ADD,
        WORKDIR) are likely to come next; the sandbox may start their processes now, while
        the step before runs."""
        ...

    def stop(self) -> None:
        """Kill every running step."""
        ...

    def settle(self) -> None:
        """Wait for what finished steps left behind to end (the engine calls it as a build
        ends, so no process of the build outlives it)."""
        ...


class HostSandbox:
    """The real sandbox: overlay mounts and processes in namespaces (needs root); the seccomp
    filter of RUN steps, once compiled, is kept in `filters` (a directory) for later builds."""

    def __init__(self, filters: Path | None = None) -> None:
        self.filters = filters

    def run(self, root: StepRoot, spec: RunSpec, on_output: Callable[[bytes], None]) -> int:
        """Run a RUN step's process on `root`, stream its output; returns its exit code."""
        from layerbuild.sandbox.ops import run_step

        return run_step(root, spec, on_output, self.filters)

    def copy_into(self, root: StepRoot, source: Path | Sequence[Path],
                  items: Sequence[CopyItem], follow_source_symlinks: bool = False,
                  as_user: str | None = None, previous: PreviousLayer | None = None) -> None:
        """Copy items from a directory, or a stack of layer dirs (top first), into `root`;
        with `as_user` (a USER value), owned by its ids in the image `root` shows; with
        `previous`, unchanged files may be taken from the step's previous layer."""
        from layerbuild.sandbox.ops import copy_into

        copy_into(root, source, items, follow_source_symlinks=follow_source_symlinks,
                  as_user=as_user, previous=previous)

    def read_files(self, root: StepRoot, paths: Sequence[str]) -> list[bytes | None]:
        """Files of the image `root` shows (None for a missing one)."""
        from layerbuild.sandbox.ops import read_image_files

        return read_image_files(root, paths)

    def glob(self, root: StepRoot, patterns: Sequence[str]) -> list[list[str]]:
        """For each absolute wildcard pattern, the image's matching paths, sorted."""
        from layerbuild.sandbox.ops import glob_in_image

        return glob_in_image(root, patterns)

    def export(self, lowers: Sequence[Path], dest: Path) -> None:
        """Copy the tree that layer dirs `lowers` (top first) make together into dest."""
        from layerbuild.sandbox.ops import export_merged

        export_merged(lowers, dest)

    def prepare(self, kind: str, network: str = "none", count: int = 1) -> None:
        """Start the children of `count` steps of `kind` ("run" on `network`, or "copy")."""
        from layerbuild.sandbox.ops import prepare_copy, prepare_run

        if kind == "run":
            prepare_run(network, count, self.filters)
        else:
            prepare_copy(count)

    def stop(self) -> None:
        """Kill every running step."""
        from layerbuild.sandbox.launch import stop_all

        stop_all()

    def settle(self) -> None:
        """End the spare children, and wait until the network stacks of finished steps,
        killed, are reaped."""
        from layerbuild.sandbox.launch import discard_spares
        from layerbuild.sandbox.reaper import settle

        discard_spares()
        settle()
