"""Running a build: stages in order, each step on the layers so far, the result into the store.

The engine owns the order of things; what a step does to the config is in `config`, how a
filesystem step runs is in `steps`, and every mount or process is the sandbox's.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild.builder import config as cfg
from layerbuild.builder import steptext
from layerbuild.builder.bases import Bases, registry_puller
from layerbuild.builder.plan import (
    is_layer_step,
    is_linked,
    may_start_early,
    needed_stages,
    run_script,
    stage_needs,
    target_stage,
)
from layerbuild.builder.report import Report, StageEvents
from layerbuild.builder.sandbox import HostSandbox, Sandbox
from layerbuild.builder.schedule import Stopped, run_at_once
from layerbuild.builder.state import StageState
from layerbuild.buildfile import (
    MAX_BUILDFILE_BYTES,
    Add,
    Arg,
    Buildfile,
    Copy,
    Env,
    ExpansionError,
    Expose,
    Instruction,
    Platform,
    Run,
    Scope,
    Stage,
    Workdir,
    build_instruction,
    decode_buildfile,
    expand,
    is_template,
    parse,
    parse_buildfile,
    platform_args,
    render_template,
    stage_ref,
    target_stage_args,
    unused_build_args,
)
from layerbuild.cache.exchange import CacheRecord, StepResult
from layerbuild.cache.index import CachedStep, CacheIndex
from layerbuild.cache.inputs import step_inputs
from layerbuild.cache.keys import StepInputs, cacheable
from layerbuild.cache.records import fingerprint, write_record
from layerbuild.cache.roots import FILTERS
from layerbuild.cache.stat import settled, signature
from layerbuild.context import Context, load_ignore
from layerbuild.digest import EMPTY_LAYER_DIFF_ID, Digest, chain_id
from layerbuild.errors import (
    BuildfileError,
    ImageNotFound,
    LayerbuildError,
    StepFailed,
    at_instruction,
    os_error_text,
)
from layerbuild.events import (
    BuildWarning,
    CacheMiss,
    Events,
    Relinked,
    StepFinished,
    StepStarted,
    WouldRun,
)
from layerbuild.image import (
    History,
    Image,
    ImageConfig,
    empty_config,
    host_platform,
    rfc3339,
    timestamp,
)
from layerbuild.request import BuildRequest
from layerbuild.store import Layer, Store

if TYPE_CHECKING:
    from layerbuild.builder.early import EarlyCopy
    from layerbuild.builder.shared import Imported, Source
    from layerbuild.builder.stepcontext import StepContext
    from layerbuild.image import Descriptor
    from layerbuild.registry import Registry

COMMENT = "buildkit.dockerfile.v0"
LOOKAHEAD = 2
"""Filesystem steps whose processes are asked for ahead of them: a step shorter than a
process's start (an `echo`) then finds the next one started already."""
EPOCH_ARG = "SOURCE_DATE_EPOCH"


def host_platform_value() -> Platform:
    """The host's platform as Buildfile ARGs describe it."""
    arch, variant = host_platform()
    return Platform("linux", arch, variant or "")


def read_buildfile(request: BuildRequest) -> Buildfile:
    """Read, render (templates) and parse the Buildfile."""
    path = request.buildfile
    try:
        if request.buildfile_data is not None:
            data = request.buildfile_data
        else:
            with open(path, "rb") as f:
                # One byte past the limit tells a file too large, and an endless stream ends.
                data = f.read(MAX_BUILDFILE_BYTES + 1)
    except OSError as exc:
        raise LayerbuildError(f"cannot read {path}: {exc.strerror}") from None
    # Universal newlines, as reading it as text always did.
    text = decode_buildfile(data, str(path)).replace("\r\n", "\n").replace("\r", "\n")
    templated = request.template if request.template is not None else is_template(str(path))
    if templated:
        text = render_template(text, request.template_vars, str(path))
    return parse_buildfile(text, str(path))


class Build:
    """One build of one Buildfile into one store, its steps run by `sandbox` (the host's)."""

    def __init__(self, store: Store, request: BuildRequest, events: Events | None = None,
                 sandbox: Sandbox | None = None, bases: Bases | None = None) -> None:
        self.store = store
        self.request = request
        self.events = events or Events()
        self.sandbox: Sandbox = sandbox or HostSandbox(store.buildcache / FILTERS)
        if bases is None:
            puller = None if request.dry_run else registry_puller(
                store, self.events.note, self.events.emit)  # type: ignore[arg-type]
            bases = Bases(store, request.pull, puller, _foreign(request.platform))
        self.bases = bases
        self.buildfile = read_buildfile(request)
        self.fingerprint = fingerprint(request)
        self.replayable = True  # no step that must never come from the cache
        self._stopping = threading.Event()
        self.images: dict[str, str] = {}
        """Every stored image the build named, by the reference it used."""
        self.epoch = source_date_epoch(request)
        self.request = request = replace(request, source_date_epoch=self.epoch)
        build_args = dict(request.build_args)
        if self.epoch is not None:  # a build arg too, for RUN steps that declare it
            build_args[EPOCH_ARG] = str(self.epoch)
        self.context = Context(request.context, load_ignore(
            request.context, None if request.streamed else request.buildfile))
        platform = host_platform_value()
        target = Platform.parse(request.platform) if request.platform else platform
        self.target = target_stage(self.buildfile, request.target)
        automatic = {**platform_args(platform, target), **target_stage_args(self.target)}
        self.scope = Scope.initial(build_args, automatic)
        for arg in self.buildfile.global_args:
            self.scope = self._scoped(self.scope, arg)
        self.cache = CacheIndex(store.buildcache)
        self.stats = self.cache.stat_cache(request.context)
        self._buildfile_name = f"{request.context.resolve()}:-" if request.streamed \
            else str(request.buildfile.resolve())
        """Where the Buildfile is, for the cache's record of each step's last inputs."""
        self.warnings: list[str] = []
        """What the build warned about, said again when a record replays it."""
        self._session: Registry | None = None
        self.imported: Imported | None = None
        """The caches of `--cache-from`, read when the build starts."""
        self._fetch_lock = threading.Lock()
        self._begin()

    def _begin(self) -> None:
        """The state of a build before its first stage (again, for a build started over)."""
        self.results: dict[int, StageState] = {}
        self.pending: dict[Digest, _Pending] = {}
        """Layers of steps that came from an imported cache and are not fetched yet."""
        self.made: dict[Digest, Digest] = {}
        """A chain ID of each layer a step made or took from a cache, by diff_id."""
        self.steps: list[tuple[int, StepResult]] = []
        """Each step's result, by stage, for a cache export."""
        self.stage_base: dict[int, int] = {}
        """The earlier stage each stage is built FROM."""
        self._lease: Path | None = None

    def run(self) -> Image | None:
        """Build the target stage and store the image under the requested tags.

        A dry run works out every step's cache key and reports hits and misses, but runs
        nothing and stores nothing (it returns None). However it ends, no process of the
        build outlives it.
        """
        try:
            for _ in range(RESTARTS):
                try:
                    return self._run()
                except BadImport as exc:  # the build starts over without those records
                    self._warn(f"warning: --cache-from {exc.source.name}: {exc.reason}; "
                               "building the steps that used it")
                    assert self.imported is not None
                    self.imported.drop_layer(exc.source, exc.diff_id)
                    self._stopping.clear()
                    self._begin()
            from layerbuild.builder.shared import Imported

            self.imported = Imported()  # one bad layer after another: no imported cache
            return self._run()
        finally:
            self.sandbox.settle()

    def _run(self) -> Image | None:
        target = self.target
        stages = needed_stages(self.buildfile, target, self.scope.environment())
        unused = [a for a in unused_build_args(self.buildfile, self.request.build_args)
                  if a != EPOCH_ARG]
        if unused:
            self._warn(f"warning: build args not used by any ARG: {', '.join(unused)}")
        if self.request.cache_from and self.imported is None:
            from layerbuild.builder.shared import load_sources

            self.imported = load_sources(self.request.cache_from, self._registry, self._warn,
                                         self.request.platform)
        report = Report(self.events, [s.index for s in stages])
        with self.store.staging() as lease:
            self._lease = lease
            self._build_stages(stages, lease, report)
            self.stats.save()
            if self.request.dry_run:
                return None
            final = self.results[target.index]
            self._ready(final.top)
            # The image is as new as its last step, so a fully cached build keeps its image ID.
            config = replace(final.config, created=self._previous(final))
            if any(spec.type == "inline" for spec in self.request.cache_to):
                from layerbuild.builder.shared import inline_cache
                from layerbuild.cache.exchange import INLINE

                config = replace(config, extra={**config.extra, INLINE: inline_cache(
                    self._final_steps(target.index), config.diff_ids)})
            image = Image.from_config(config)
            self.store.put_image(image, list(self.request.tags), lease)
            self._export(target.index)
            listed = {path: (signature(st), read) for path, (st, read)
                      in self.context.listed.items()}
            if self.fingerprint is not None and self.replayable and self.stats.settled \
                    and all(settled(sig, read) for sig, read in listed.values()):
                dirs = {path: sig for path, (sig, _) in listed.items()}
                seen = chain(((path, sig) for path, sig in self.stats.seen_signatures()
                              if path not in dirs), dirs.items())
                write_record(self.store, self.fingerprint, image, report.steps, self.images,
                             seen, self.warnings)
        return image

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        self.events.emit(BuildWarning(text))

    def _build_stages(self, stages: list[Stage], lease: Path, report: Report) -> None:
        """Build the stages; those that do not use each other at the same time."""
        named = steptext.stages_named(self.buildfile)
        channels = {s.index: report.channel(s.index, steptext.stage_label(s) if named else "",
                                            1 + len(s.instructions)) for s in stages}
        by_index = {s.index: s for s in stages}

        def build_one(index: int) -> None:
            try:
                self.results[index] = self._build_stage(by_index[index], lease,
                                                        channels[index])
            finally:
                report.finished(index)

        if self.request.dry_run or len(stages) == 1:
            for stage in stages:
                build_one(stage.index)
            return
        env = self.scope.environment()
        needs = {s.index: stage_needs(self.buildfile, s, env) for s in stages}
        stopped_at: list[str] = []

        def stop() -> None:
            """No more steps, the running ones killed, and the display left as it is."""
            shown = report.close()
            stopped_at.append(channels[shown].where if shown is not None else "")
            self._stopping.set()
            self.sandbox.stop()

        try:
            run_at_once([s.index for s in stages], needs, build_one, stop)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(stopped_at[0] if stopped_at else "") from None

    def _build_stage(self, stage: Stage, lease: Path, events: StageEvents) -> StageState:
        started = time.monotonic()
        text = steptext.from_text(stage.from_instr, self.scope.environment(),
                                  self.buildfile.escape)
        events.emit(StepStarted(0, 0, text, stage.index, is_from=True))
        state = self._base(stage, lease)
        events.emit(StepFinished(time.monotonic() - started, False, text, stage.index))
        triggers = state.config.config.get("OnBuild") or []
        steps: list[tuple[Instruction, str, str | None]] = [
            (self._trigger(text, stage), f"onbuild{n}", f"ONBUILD {text}")
            for n, text in enumerate(triggers)]
        if triggers:
            state.config = state.config.with_config(OnBuild=None)
            events.total += len(triggers)
        steps += [(instr, str(n), None) for n, instr in enumerate(stage.instructions)]
        coming: collections.deque[Instruction] = collections.deque()
        nexts: list[tuple[Instruction, ...]] = []
        for instr, _, _ in reversed(steps):  # the filesystem steps after each step
            nexts.append(tuple(coming))
            if isinstance(instr, Run | Copy | Add | Workdir):
                coming.appendleft(instr)
                if len(coming) > LOOKAHEAD:
                    coming.pop()
        nexts.reverse()
        # The stage's first filesystem step, which may well be cached: its child only.
        self._prepare(tuple(coming)[:1])
        for (instr, position, label), after in zip(steps, nexts, strict=True):
            state = self._dispatch(stage, state, instr, lease, position, events, label, after)
        return state

    def _prepare(self, upcoming: tuple[Instruction, ...],
                 running: Instruction | None = None) -> None:
        """Let the sandbox start the processes of filesystem steps likely to run, while the
        step `running` (which takes a process of its own first) runs."""
        if self.request.dry_run or not upcoming:
            return
        wanted: dict[tuple[str, str], int] = {}
        for instr in upcoming:
            kind = self._child_kind(instr)
            wanted[kind] = wanted.get(kind, 0) + 1
        if running is not None and (kind := self._child_kind(running)) in wanted:
            wanted[kind] += 1
        for (kind_name, network), count in wanted.items():
            self.sandbox.prepare(kind_name, network, count=count)

    def _child_kind(self, instr: Instruction) -> tuple[str, str]:
        if isinstance(instr, Run):
            return "run", instr.network or self.request.network
        return ("copy", "none") if isinstance(instr, Copy | Add | Workdir) else ("", "")

    def _trigger(self, text: str, stage: Stage) -> Instruction:
        doc = parse(text, self.buildfile.path)
        if len(doc.nodes) != 1:
            raise BuildfileError(f"bad ONBUILD trigger {text!r}", self.buildfile.path,
                                 stage.from_instr.line, "FROM")
        return build_instruction(doc.nodes[0], self.buildfile.path, self.buildfile.escape)

    def _base(self, stage: Stage, lease: Path) -> StageState:
        instr = stage.from_instr
        env = self.scope.environment()
        ref = expand(instr.image, env, self.buildfile.escape)
        platform = None
        if instr.platform:
            wanted = expand(instr.platform, env, self.buildfile.escape)
            try:
                platform = _foreign(wanted)
            except LayerbuildError as exc:
                raise BuildfileError(str(exc), self.buildfile.path, instr.line,
                                     "FROM") from None
        earlier = stage_ref(self.buildfile, ref, stage.index)
        if earlier is not None:
            base = self.results[earlier.index]
            config, top, key = base.config, base.top, base.key
            self.stage_base[stage.index] = earlier.index
        elif ref == "scratch":
            # BuildKit's empty image: WorkingDir "/" (PATH is added below, as to any base)
            config, top, key = empty_config().with_config(WorkingDir="/"), None, "scratch"
        else:
            try:
                image = self._find_image(ref, platform)
            except LayerbuildError as exc:
                raise BuildfileError(f"base image {ref!r}: {exc}", self.buildfile.path,
                                     instr.line, "FROM") from None
            config, key = cfg.derived(image.config), f"image:{image.id}"
            self.images[ref] = str(image.id)
            # Held until the build ends: removing the base meanwhile leaves its layers.
            layers = self.store.hold_image(image, lease)
            top = layers[-1].chain_id if layers else None
        config = cfg.with_default_path(config)
        scope = self.scope.enter_stage(cfg.env_map(config))
        return StageState(config, top, scope, key=key)

    def _use_cache(self, stage: Stage) -> bool:
        if self.request.no_cache:
            return False
        return not (stage.name and stage.name in self.request.no_cache_filter)

    def _dispatch(self, stage: Stage, state: StageState, instr: Instruction, lease: Path,
                  position: str, events: StageEvents, label: str | None = None,
                  following: tuple[Instruction, ...] = ()) -> StageState:
        if self._stopping.is_set():
            raise Stopped()
        shown = label or steptext.step_text(instr, state.scope.environment(),
                                            self.buildfile.escape)
        started = time.monotonic()
        events.emit(StepStarted(0, 0, shown, stage.index))
        events.where = f"{self.buildfile.path}:{instr.line}: {shown}"
        try:
            source = self._step(stage, state, instr, lease, position, events, shown, following)
        except KeyboardInterrupt:  # say where, as a failing step does
            raise KeyboardInterrupt(events.where) from None
        except BadImport:  # not the step's failure: the build starts over without it
            raise
        except LayerbuildError as exc:  # every error of a step names its line
            located = at_instruction(exc, self.buildfile.path, instr.line, instr.instruction)
            if located is exc:
                raise
            raise located from exc
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise StepFailed(f"{self.buildfile.path}:{instr.line}: {instr.instruction}: "
                             f"{os_error_text(exc)}") from exc
        if self.request.dry_run and source is None:
            events.emit(WouldRun(shown, stage.index))
        else:
            events.emit(StepFinished(time.monotonic() - started, source is not None, shown,
                                     stage.index, source or ""))
        return state

    def _step(self, stage: Stage, state: StageState, instr: Instruction, lease: Path,
              position: str, events: StageEvents, shown: str,
              following: tuple[Instruction, ...] = ()) -> str | None:
        """One step into `state`: its cache key, then its result from the cache or by
        running it; None when it ran, else where it came from ("" for this store's cache,
        else the imported cache's name). When it runs, the processes of the `following`
        filesystem steps, which are then likely to run too, are started meanwhile."""
        early = self._start_early(stage, state, instr, lease, events)
        if following and (state.missed or not self._use_cache(stage)):
            self._prepare(following, instr)  # now, not once the key is known
            following = ()
        if early is None:
            return self._keyed_step(stage, state, instr, lease, position, events, shown,
                                    following)
        try:
            return self._keyed_step(stage, state, instr, lease, position, events, shown,
                                    following, early)
        except KeyboardInterrupt:
            self.sandbox.stop()  # the early copy's child too, at once
            raise
        finally:
            early.close()

    def _start_early(self, stage: Stage, state: StageState, instr: Instruction, lease: Path,
                     events: Events) -> EarlyCopy | None:
        """The step's copy, started now, when the step may start before its key is known
        and its key is all but sure to miss: an earlier step of the stage missed, or the
        stage does not use the cache (see `builder.early`)."""
        if self.request.dry_run or not isinstance(instr, Copy | Add) \
                or not may_start_early(instr) or (not state.missed and self._use_cache(stage)):
            return None
        from layerbuild.builder.early import EarlyCopy

        self._ready(state.top)
        return EarlyCopy(self._step_context(stage, lease, events), instr, state.config,
                         state.top, state.scope.environment())

    def _step_context(self, stage: Stage, lease: Path, events: Events,
                      previous: tuple[Layer, list[str]] | None = None) -> StepContext:
        # Loaded here: a fully cached build never needs the sandbox or layer code.
        from layerbuild.builder.stepcontext import StepContext

        return StepContext(self.store, self.buildfile, self.context, lease, self.results,
                           stage, self.request, events, self.sandbox, self._find_image,
                           self._ready, previous)

    def _keyed_step(self, stage: Stage, state: StageState, instr: Instruction, lease: Path,
                    position: str, events: StageEvents, shown: str,
                    following: tuple[Instruction, ...], early: EarlyCopy | None = None,
                    ) -> str | None:
        """`_step` once any early copy of it has started: the result of that copy is stored
        only if the key misses, and the processes of the `following` steps are asked for
        then."""
        text = cfg.describe(instr)
        env = state.scope.environment()
        inputs = step_inputs(state.key, instr, env, self.buildfile, stage.index, self.context,
                             self.stats, lambda i: self.results[i].key, self._image_key)
        if self.epoch is not None:  # it sets the step's times, so it is part of its result
            inputs = replace(inputs, extra={**inputs.extra, EPOCH_ARG: str(self.epoch)})
        linked = is_linked(instr)
        if linked:  # its layer does not depend on the layers below it
            workdir = str(state.config.config.get("WorkingDir") or "/")
            inputs = replace(inputs, parent="linked", extra={**inputs.extra, "workdir": workdir})
        key = inputs.key()
        slot = f"{self._buildfile_name}:{stage.index}:{position}"
        self.replayable = self.replayable and cacheable(inputs)
        cached = self.cache.get(key) if self._use_cache(stage) and cacheable(inputs) else None
        if cached is not None and cached.diff_id is not None and linked:
            cached = self._relinked(cached, state.top, lease, events, shown, stage.index)
        elif cached is not None and (chain := cached.chain_id) is not None:
            if self.store.layer(chain) is None:
                cached = None
            else:
                self.store.hold(lease, chain)
        source = "" if cached is not None else None
        if cached is None and self.imported is not None and self._use_cache(stage) \
                and cacheable(inputs):
            cached, source = self._imported(key, instr, state, linked, lease)
        # A copy from the context may take files from its slot's last layer.
        offer = cached is None and early is None and isinstance(instr, Copy | Add) \
            and not getattr(instr, "from_", None) and self._use_cache(stage) \
            and not self.request.dry_run
        found = None
        if cached is None and not state.missed:
            state.missed = True
            if offer:  # the slot read once for both
                reason, found = self.cache.missed(slot, inputs)
            else:
                reason = self.cache.why_missed(slot, inputs)
            if self._use_cache(stage):
                events.emit(CacheMiss(shown, reason, stage.index))
        elif offer:
            found = self.cache.previous(slot, inputs)
        if cached is None:
            self._prepare(following, instr)
        previous = self._previous_layer(found, inputs, lease) if found is not None else None
        history = self._apply(stage, state, instr, lease, env, text, cached, events, previous,
                              early if cached is None else None)
        made = cached.diff_id is not None if cached is not None \
            else is_layer_step(instr, state.config)
        if cached is None and not self.request.dry_run:
            top = state.top if made else None
            diff = state.config.diff_ids[-1] if top is not None else None
            self.cache.put(key, CachedStep(history, top, diff))
            self.cache.remember(slot, inputs, key)
        if not self.request.dry_run:
            if made and state.top is not None:
                self.made.setdefault(state.config.diff_ids[-1], state.top)
            self.steps.append((stage.index, StepResult(
                key, history, tuple(state.config.diff_ids) if made else (), linked)))
        # What follows a linked step depends on everything below it, as after any other step.
        state.key = hashlib.sha256(f"{state.key}+{key}".encode()).hexdigest() if linked else key
        return source

    def _previous_layer(self, found: tuple[CachedStep, list[str]], inputs: StepInputs,
                        lease: Path) -> tuple[Layer, list[str]] | None:
        """The layer the last build of a slot made, and the files changed since (`found`:
        see `CacheIndex.previous`), when not most of them changed (held for this build)."""
        step, changed = found
        if step.chain_id is None or len(changed) * 2 > len(inputs.files):
            return None
        layer = self.store.layer(step.chain_id)
        if layer is None:
            return None
        self.store.hold(lease, step.chain_id)
        return layer, changed

    def _relinked(self, cached: CachedStep, top: Digest | None, lease: Path, events: Events,
                  step: str, stage: int) -> CachedStep | None:
        """A cached linked layer put on the stack `top`: it is there, or it is stored there
        from the blob of the same layer on another stack (a rebase, nothing is rerun)."""
        assert cached.diff_id is not None
        chain = chain_id(top, cached.diff_id)
        if self.store.layer(chain) is None:
            if cached.chain_id is None or (was := self.store.layer(cached.chain_id)) is None:
                return None
            if not self.request.dry_run:
                from layerbuild.builder.steps import relink

                self._ready(top)
                relink(self.store, was, top, lease)
                events.emit(Relinked(step, stage, chain))
        if not self.request.dry_run:
            self.store.hold(lease, chain)
        return replace(cached, chain_id=chain)

    # --- imported and exported caches ------------------------------------------------------

    def _registry(self) -> Registry:
        """The build's registry session for caches (made when first needed)."""
        if self._session is None:
            from layerbuild.registry import Registry

            self._session = Registry(notice=self.events.note)
        return self._session

    def _imported(self, key: str, instr: Instruction, state: StageState, linked: bool,
                  lease: Path) -> tuple[CachedStep | None, str | None]:
        """A step's result from an imported cache, and the cache's name; (None, None) when
        none has it for the layers this build stands on. Its layer is fetched later, when
        something needs its files (`_ready`). A record that does not fit the step (another
        step's history, a layer where the step makes none) is left with a warning."""
        assert self.imported is not None
        for record, source in self.imported.candidates(key):
            wrong = self._misfit(record, instr, state)
            if wrong:
                self._warn(f"warning: --cache-from {source.name}: its record of "
                           f"{self.buildfile.path}:{instr.line} {instr.instruction} {wrong}; "
                           "building the step")
                continue
            if not record.made_layer:
                return CachedStep(record.history), source.name
            layer = source.config.layers[record.stack[-1]]
            if not linked and source.config.stack_chain(record) != state.top:
                continue  # made on other layers than this build's
            chain = chain_id(state.top, layer.diff_id)
            if self.store.layer(chain) is not None:
                if not self.request.dry_run:
                    self.store.hold(lease, chain)
            elif layer.blob is None:
                continue
            else:
                with self._fetch_lock:
                    self.pending.setdefault(chain, _Pending(state.top, layer.diff_id,
                                                            layer.blob, source, key,
                                                            record.history))
            return CachedStep(record.history, chain, layer.diff_id), source.name
        return None, None

    def _misfit(self, record: CacheRecord, instr: Instruction, state: StageState) -> str:
        """How an imported record does not fit the step it is keyed as ("": it fits): its
        history must be the one the step writes, and it makes a layer when the step does."""
        makes = isinstance(instr, Run | Copy | Add) or (
            record.made_layer and isinstance(instr, Workdir))
        if record.made_layer != makes:
            return "has a layer" if record.made_layer else "has no layer"
        env = state.scope.environment()
        scope = self._scoped(state.scope, instr) if isinstance(instr, Arg | Env) \
            else state.scope
        config = cfg.apply_metadata(state.config, instr, env, self.buildfile.escape,
                                    state.cmd_set, self.buildfile.path) \
            if isinstance(instr, Workdir) else state.config
        expected = self._created_by(instr, config, env, scope, state.scope)
        history = record.history
        if history.created_by != expected:
            return f"says {history.created_by!r}, the step {expected!r}"
        if history.comment != COMMENT or history.author is not None:
            return "has another history comment or author"
        if self.epoch is not None and history.created != rfc3339(self.epoch):
            return f"was made at {history.created!r}, not at SOURCE_DATE_EPOCH"
        return ""

    def _created_by(self, instr: Instruction, config: ImageConfig, env: dict[str, str],
                    scope: Scope, before: Scope) -> str | None:
        """The step's history `created_by` (`config` the one it sees, `scope` the one after
        it, `before` the one before)."""
        return cfg.created_by(instr, config, env, self.buildfile.escape, scope.args,
                              run_script(instr) if isinstance(instr, Run) else "", before)

    def _ready(self, top: Digest | None) -> None:
        """Fetch the layers of the stack `top` that are only in an imported cache (checked
        against their digests); a layer that fails its check starts the build over without
        the records that use it (`BadImport`)."""
        if top is None or not self.pending or self.request.dry_run:
            return
        from layerbuild.fetching import Fetch, fetch_layers

        with self._fetch_lock:
            todo: list[Digest] = []
            chain: Digest | None = top
            while chain is not None and chain in self.pending \
                    and self.store.layer(chain) is None:
                todo.append(chain)
                chain = self.pending[chain].parent
            todo.reverse()
            items = [self.pending[c] for c in todo]
            failed: list[int] = []
            assert self._lease is not None
            try:
                fetch_layers(self.store, [Fetch(p.parent, p.diff_id, p.blob,
                                                p.source.opener(p.blob),
                                                f"{p.source.name} layer {p.blob.digest.short}")
                                          for p in items], self._lease, self.events, set(),
                             failed_at=failed.append)
            except LayerbuildError as exc:
                bad = items[failed[0]] if failed else items[0]
                raise BadImport(bad.source, bad.diff_id,
                                f"layer {bad.blob.digest.short}: {exc}") from exc
            for chain, item in zip(todo, items, strict=True):
                del self.pending[chain]
                # This store's cache has it now: the next build needs no --cache-from for it.
                self.cache.put(item.key, CachedStep(item.history, chain, item.diff_id))

    def _final_steps(self, target: int) -> list[StepResult]:
        """The steps of the final image: its stage's and those of the stages it is FROM."""
        chain = {target}
        while (base := self.stage_base.get(target)) is not None and base not in chain:
            chain.add(base)
            target = base
        return [step for stage, step in self.steps if stage in chain]

    def _export(self, target: int) -> None:
        """Write the build's cache to each `--cache-to` target (inline is in the image)."""
        specs = [spec for spec in self.request.cache_to if spec.type != "inline"]
        if not specs:
            return
        from layerbuild.builder.shared import Exportable, export_cache

        final = self._final_steps(target)
        every = [step for _, step in self.steps]
        for spec in specs:
            build = Exportable(every if spec.mode == "max" else final, self.made, self._ready,
                               self._pending_blob)
            export_cache(self.store, spec, build, self._registry, self.events)

    def _pending_blob(self, chain: Digest) -> Descriptor | None:
        pending = self.pending.get(chain)
        return pending.blob if pending is not None else None

    def _find_image(self, ref: str, platform: str | None = None) -> Image:
        """A stored image, pulled as `--pull` says; ImageNotFound says how to bring it in."""
        try:
            return self.bases.get(ref, platform)
        except ImageNotFound:
            never = self.request.pull == "never"
            raise ImageNotFound(
                "not in the store" + (" (and --pull=never)" if never else "") +
                "; bring it in with `layerbuild pull`, `load` or `import`") from None

    def _image_key(self, ref: str) -> str:
        try:
            found = self.bases.stored(ref) if self.request.dry_run else self._find_image(ref)
        except LayerbuildError:
            found = None
        if found is None:
            self.images[ref] = ""  # were it stored later, the key would change
            return f"missing:{ref}"
        image_id = self.images[ref] = str(found.id)
        return f"image:{image_id}"

    def _apply(self, stage: Stage, state: StageState, instr: Instruction, lease: Path,
               env: dict[str, str], text: str, cached: CachedStep | None,
               events: Events, previous: tuple[Layer, list[str]] | None = None,
               early: EarlyCopy | None = None) -> History:
        """Change the stage's state by one step: from the cache, or by running it; returns the
        step's history entry (one without `created_by` is not recorded: ONBUILD). A copy may
        take unchanged files from the `previous` layer of the step (see `_previous_layer`),
        or be one started `early`, whose result this stores."""
        escape = self.buildfile.escape
        before = state.scope
        if isinstance(instr, Arg | Env):
            state.scope = self._scoped(state.scope, instr)
        if isinstance(instr, Expose):  # before its history, which needs good ports
            for warning in cfg.expose_warnings(instr, env, escape, self.buildfile.path):
                self._warn(warning)
        if isinstance(instr, Workdir):  # changes the config, then makes the dir (a layer)
            state.config = cfg.apply_metadata(state.config, instr, env, escape, state.cmd_set,
                                              self.buildfile.path)
        layer = is_layer_step(instr, state.config)
        history = cached.history if cached is not None else History(
            comment=COMMENT, created_by=self._created_by(instr, state.config, env,
                                                         state.scope, before))
        newest: int | None = None
        if layer:
            if cached is not None and cached.diff_id is not None:
                diff_id, top = cached.diff_id, cached.chain_id
            elif self.request.dry_run:  # keys do not depend on results: keep planning
                diff_id, top = EMPTY_LAYER_DIFF_ID, state.top
            else:
                # Loaded here: a fully cached build never needs the sandbox or layer code.
                from layerbuild.builder.steps import run_filesystem_step

                self._ready(state.top)
                diff_id, top, newest = run_filesystem_step(
                    self._step_context(stage, lease, events, previous), instr, state.config,
                    state.top, env, early)
            if cached is None:
                history = replace(history, created=self._created(state, instr, newest))
            state.config = state.config.with_layer(diff_id, history)
            state.top = top
        else:
            if cached is None:
                history = replace(history, created=self._created(state, instr, None))
            if not isinstance(instr, Workdir):  # (applied above)
                state.config = cfg.apply_metadata(state.config, instr, env, escape,
                                                  state.cmd_set, self.buildfile.path)
            state.cmd_set = state.cmd_set or instr.instruction == "CMD"
            if history.created_by is not None:
                state.config = state.config.with_history(history)
        return history

    def _scoped(self, scope: Scope, instr: Arg | Env) -> Scope:
        """The scope after an ARG or ENV; a value that cannot be expanded names its line."""
        try:
            return scope.apply(instr, self.buildfile.escape)
        except ExpansionError as err:
            raise err.located(self.buildfile.path, instr.line, instr.instruction) from None

    def _created(self, state: StageState, instr: Instruction, newest: int | None) -> str:
        """When a new step was made.

        With SOURCE_DATE_EPOCH, the epoch. Otherwise only a RUN takes the time it ran: a step
        that runs nothing is as new as the step before it, or as its newest file if that is
        later, so building the same inputs again, anywhere, gives the same image.
        """
        if self.epoch is not None:
            return rfc3339(self.epoch)
        if isinstance(instr, Run):
            return rfc3339()
        if is_linked(instr) and newest is not None:  # made apart from the steps before
            return rfc3339(newest)
        previous = self._previous(state)
        if newest is None or (previous_at := timestamp(previous)) is None \
                or previous_at >= newest:
            return previous
        return rfc3339(newest)

    def _previous(self, state: StageState) -> str:
        """The time of the stage's last step (the epoch for a new image with none)."""
        return cfg.last_created(state.config) or rfc3339(self.epoch or 0)


def source_date_epoch(request: BuildRequest) -> int | None:
    """SOURCE_DATE_EPOCH for a build: the request's, or a build arg of that name (BuildKit)."""
    if request.source_date_epoch is not None:
        return request.source_date_epoch
    value = request.build_args.get(EPOCH_ARG)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise LayerbuildError(f"{EPOCH_ARG} must be an integer, not {value!r}") from None


def build(store: Store, request: BuildRequest, events: Events | None = None,
          sandbox: Sandbox | None = None, bases: Bases | None = None) -> Image | None:
    """Build a Buildfile into the store, steps run by `sandbox` (the host's) on images found
    by `bases` (the store's, pulled from registries when missing); returns the image (None
    for a dry run)."""
    return Build(store, request, events, sandbox, bases).run()


def _foreign(platform: str | None) -> str | None:
    """A platform that is not the host's (normalised), or None for the host's own."""
    if not platform or platform == "$BUILDPLATFORM":
        return None
    from layerbuild.registry.platforms import InvalidPlatform
    from layerbuild.registry.platforms import Platform as Wanted

    try:
        wanted = Wanted.parse(platform)
    except InvalidPlatform as exc:
        raise LayerbuildError(str(exc)) from None
    return None if wanted == Wanted.host() else str(wanted)


RESTARTS = 8
"""How often a build starts over without an imported layer that failed its check."""


class BadImport(LayerbuildError):
    """A layer of an imported cache is not what its record says (digest, diff_id, bytes)."""

    def __init__(self, source: Source, diff_id: Digest, reason: str) -> None:
        super().__init__(reason)
        self.source = source
        self.diff_id = diff_id
        self.reason = reason


@dataclass(frozen=True)
class _Pending:
    """A step's layer known from an imported cache and not fetched yet."""

    parent: Digest | None
    diff_id: Digest
    blob: Descriptor
    source: Source
    key: str
    history: History
