"""What every filesystem step may use: the store, the Buildfile, the context, other stages."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild.builder import config as cfg
from layerbuild.buildfile import Buildfile, Instruction, Stage, expand, stage_ref
from layerbuild.context import Context
from layerbuild.digest import Digest
from layerbuild.errors import BuildfileError, LayerbuildError
from layerbuild.image import Image, ImageConfig, timestamp
from layerbuild.sandbox.spec import StepRoot
from layerbuild.store import Layer, Store

if TYPE_CHECKING:
    from layerbuild.builder.sandbox import Sandbox
    from layerbuild.builder.state import StageState
    from layerbuild.events import Events
    from layerbuild.request import BuildRequest


@dataclass(frozen=True)
class StepContext:
    """What a filesystem step may use: the store, the Buildfile, the context, other stages."""

    store: Store
    buildfile: Buildfile
    context: Context
    lease: Path
    results: Mapping[int, StageState]
    stage: Stage
    request: BuildRequest
    events: Events
    sandbox: Sandbox
    find_image: Callable[[str], Image]
    """The image a reference names (pulled when the store lacks it, as `--pull` says)."""
    ready: Callable[[Digest | None], None] = lambda _top: None
    """Bring in the layers of a stack that are still only in an imported cache."""
    previous: tuple[Layer, list[str]] | None = None
    """For a COPY or ADD whose last build differs in files only: the layer it made and the
    context paths changed since; the copy of a context directory may take the other files
    from that layer (see `sandbox.spec.PreviousLayer`)."""

    def error(self, instr: Instruction, message: str) -> BuildfileError:
        return BuildfileError(message, self.buildfile.path, instr.line, instr.instruction)


def layer_dirs(store: Store, top: Digest | None) -> list[Path]:
    """The diff dirs of a layer stack, top first."""
    return [layer.diff_dir for layer in store.stack(top)]


def new_step_root(store: Store, top: Digest | None, stage: Path) -> StepRoot:
    """A step's root on the stack `top`: its upper and work dirs made in the staging dir."""
    upper, work = stage / "upper", stage / "work"
    upper.mkdir()
    work.mkdir()
    return StepRoot(tuple(layer_dirs(store, top)), upper, work)


def made_time(config: ImageConfig, epoch: int | None) -> int:
    """The time for directories a step makes without a source: that of the step before (for
    a new image, SOURCE_DATE_EPOCH or 0)."""
    last = cfg.last_created(config)
    when = timestamp(last) if last else None
    return int(when) if when is not None else epoch or 0


def read_texts(sandbox: Sandbox, root: StepRoot, paths: list[str]) -> list[str | None]:
    """Text files of the image `root` shows, read at once (None for a missing one)."""
    return [data.decode("utf-8", "replace") if data is not None else None
            for data in sandbox.read_files(root, paths)]


def source_top(ctx: StepContext, instr: Instruction, ref: str,
                env: Mapping[str, str]) -> Digest | None:
    """The top layer of the earlier stage or the stored image that a `from` value names."""
    expanded = expand(ref, env, ctx.buildfile.escape)
    earlier = stage_ref(ctx.buildfile, expanded, ctx.stage.index)
    if earlier is not None:
        top = ctx.results[earlier.index].top
        ctx.ready(top)
        return top
    try:
        image = ctx.find_image(expanded)
    except LayerbuildError as exc:
        raise ctx.error(instr, f"--from={expanded}: no such stage, and the image: {exc}",
                        ) from None
    layers = ctx.store.hold_image(image, ctx.lease)  # held until the build ends
    return layers[-1].chain_id if layers else None
