"""Filesystem steps: RUN in the sandbox, COPY and ADD through it; each one makes a layer."""

from __future__ import annotations

import collections
import hashlib
import os
import posixpath
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild.build import config as cfg
from layerbuild.build.plan import is_linked, run_script, stage_ref
from layerbuild.build.users import Ids, home_dir, resolve_chown, resolve_user
from layerbuild.buildfile import (
    Add,
    Buildfile,
    Copy,
    IgnoreRules,
    Instruction,
    Run,
    Stage,
    Workdir,
    expand,
)
from layerbuild.context import Context, ContextError
from layerbuild.digest import Digest, chain_ids
from layerbuild.errors import BuildfileError, LayerbuildError, StepFailed
from layerbuild.image import ImageConfig, timestamp
from layerbuild.ingest import ingest_blob, ingest_dir
from layerbuild.layer import extract_layer, open_decompressed
from layerbuild.sandbox import (
    CopyItem,
    Mount,
    RunSpec,
    StepRoot,
    copy_into,
    export_merged,
    glob_in_image,
    read_image_file,
    read_image_files,
    run_step,
)
from layerbuild.store import LayerRecord, Store

if TYPE_CHECKING:
    from layerbuild.build.engine import StageState
    from layerbuild.build.request import BuildRequest, Events

TAIL_LINES = 15
_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


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

    def error(self, instr: Instruction, message: str) -> BuildfileError:
        return BuildfileError(message, self.buildfile.path, instr.line, instr.instruction)


def layer_dirs(store: Store, top: Digest | None) -> list[Path]:
    """The diff dirs of a layer stack, top first."""
    dirs = []
    while top is not None:
        record = store.layer(top)
        if record is None:
            raise LayerbuildError(f"layer {top} is missing from the store")
        dirs.append(store.diff_dir(record))
        top = record.parent
    return dirs


def run_filesystem_step(ctx: StepContext, instr: Instruction, config: ImageConfig,
                        top: Digest | None, env: Mapping[str, str],
                        ) -> tuple[Digest, Digest, int]:
    """Run RUN/COPY/ADD/WORKDIR on the stack `top`; returns the new layer's diff_id, chain ID
    and newest mtime."""
    with ctx.store.staging() as stage:
        upper, work = stage / "upper", stage / "work"
        upper.mkdir()
        work.mkdir()
        root = StepRoot(tuple(layer_dirs(ctx.store, top)), upper, work)
        if isinstance(instr, Run):
            _run(ctx, instr, root, config, env)
        elif isinstance(instr, Workdir):
            _workdir(root, config, stage, ctx.request.source_date_epoch)
        else:
            # --link: written into an empty tree, so the layer is the same on any base (the
            # base is only read, for --chown names).
            into = StepRoot((), upper, work) if is_linked(instr) else root
            _copy(ctx, instr, root, into, config, env, stage)  # type: ignore[arg-type]
        got = ingest_dir(ctx.store, top, upper, stage, ctx.request.source_date_epoch,
                         lease=ctx.lease)
    return got.record.diff_id, got.record.chain_id, got.newest


def _workdir(root: StepRoot, config: ImageConfig, stage: Path, epoch: int | None,
             ) -> None:
    """Create the WORKDIR (and its parents) unless the image has it; an existing one is kept.

    What it creates belongs to the USER in force, as BuildKit makes it, and takes the time of
    the step before (so the layer does not depend on when it was built).
    """
    empty = stage / "workdir"
    empty.mkdir(mode=0o755)
    workdir = str(config.config.get("WorkingDir") or "/")
    ids, _home = _ids(root, str(config.config.get("User") or ""))
    copy_into(root, empty, [CopyItem(".", workdir, ids.uid, ids.gid, 0o755, recursive=False,
                                     made_time=made_time(config, epoch))])


def relink(store: Store, layer: LayerRecord, top: Digest | None, lease: Path) -> None:
    """Store a layer made by COPY --link on another stack `top` too, from its blob."""
    blob = layer.blobs[0]
    with open(store.blob_path(blob.digest), "rb") as f:
        ingest_blob(store, top, layer.diff_id, f, blob.media_type, expected=blob.digest,
                    expected_size=blob.size, lease=lease)


def made_time(config: ImageConfig, epoch: int | None) -> int:
    """The time for directories a step makes without a source: that of the step before (for
    a new image, SOURCE_DATE_EPOCH or 0)."""
    last = cfg.last_created(config)
    when = timestamp(last) if last else None
    return int(when) if when is not None else epoch or 0


def _ids(root: StepRoot, user: str) -> tuple[Ids, str]:
    """The USER's numeric ids, and its home directory (for HOME)."""
    passwd, group = (d.decode("utf-8", "replace") if d is not None else None
                     for d in read_image_files(root, ["/etc/passwd", "/etc/group"]))
    ids = Ids(0, 0) if not user or user in ("0", "root", "0:0") else resolve_user(
        user, passwd, group)
    return ids, home_dir(ids.uid, passwd)


def _text(root: StepRoot, path: str) -> str | None:
    data = read_image_file(root, path)
    return data.decode("utf-8", "replace") if data is not None else None


def _run(ctx: StepContext, instr: Run, root: StepRoot, config: ImageConfig,
         env: Mapping[str, str]) -> None:
    script = run_script(instr)
    mounts = _mounts(ctx, instr, env, root.upper.parent)
    if isinstance(script, str) and script.startswith("#!") and instr.heredocs:
        # A heredoc with a shebang runs as its own executable, as BuildKit does.
        path = root.upper.parent / f"heredoc-{instr.heredocs[0].name}"
        path.write_text(script)
        path.chmod(0o755)
        target = f"/dev/pipes/{instr.heredocs[0].name}"
        mounts.append(Mount("bind", target, path, readonly=True))
        argv = [target]
    else:
        argv = cfg.command_argv(script, config)
    values = dict(env)
    values.setdefault("PATH", cfg.DEFAULT_PATH.partition("=")[2])
    ids, home = _ids(root, str(config.config.get("User") or ""))
    values.setdefault("HOME", home)
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
    partial = bytearray()

    def on_output(data: bytes) -> None:
        ctx.events.output(data)
        partial.extend(data)
        *lines, rest = bytes(partial).split(b"\n")
        tail.extend(lines)
        partial[:] = rest

    spec = RunSpec(argv=tuple(argv), env=tuple(f"{k}={v}" for k, v in values.items()),
                   cwd=str(config.config.get("WorkingDir") or "/"), user=ids.spec(),
                   network=instr.network or ctx.request.network,
                   mounts=tuple(mounts))
    code = run_step(root, spec, on_output)
    if partial:
        tail.append(bytes(partial))
    if code != 0:
        shown = "\n".join("  " + line.decode("utf-8", "replace") for line in tail)
        raise StepFailed(f"{ctx.buildfile.path}:{instr.line}: RUN {cfg.describe(instr)}: "
                         f"exit code {code}" + (f"\n{shown}" if shown else ""))


def _mounts(ctx: StepContext, instr: Run, env: Mapping[str, str], stage: Path) -> list[Mount]:
    out = []
    for m in instr.mounts:
        if not m.target and m.type != "secret":
            raise ctx.error(instr, f"--mount type={m.type} needs a target")
        if m.type == "cache":
            ident = m.id or m.target
            source = ctx.store.root / "cachemounts" / hashlib.sha256(ident.encode()).hexdigest()
            source.mkdir(parents=True, exist_ok=True)
            out.append(Mount("cache", m.target, source, readonly=m.readonly, mode=m.mode,
                             uid=m.uid or 0, gid=m.gid or 0))
        elif m.type == "tmpfs":
            out.append(Mount("tmpfs", m.target, None, readonly=False, size=m.size))
        elif m.type == "bind" and m.from_:
            tree = _stage_tree(ctx, instr, m.from_, env, stage)
            sub = posixpath.normpath("/" + (m.source or "")).lstrip("/")
            out.append(Mount("bind", m.target, tree / sub if sub else tree,
                             readonly=m.readonly))
        elif m.type == "bind":
            rel = ctx.context.resolve(m.source or "")
            out.append(Mount("bind", m.target, ctx.context.root / rel if rel else
                             ctx.context.root, readonly=m.readonly))
        elif m.type == "secret":
            ident = m.id or posixpath.basename(m.target or "")
            if not ident:
                raise ctx.error(instr, "--mount type=secret needs an id or a target")
            source = ctx.request.secrets.get(ident)
            if source is None:
                if m.required:
                    raise ctx.error(instr, f"secret {ident!r} is required but was not given "
                                    "(--secret id=ID,src=FILE)")
                continue
            out.append(Mount("secret", m.target or f"/run/secrets/{ident}", Path(source),
                             mode=m.mode, uid=m.uid or 0, gid=m.gid or 0))
        else:
            raise ctx.error(instr, f"--mount type={m.type} is not supported")
    return out


def _stage_tree(ctx: StepContext, instr: Run, ref: str, env: Mapping[str, str],
                stage: Path) -> Path:
    """A stage's or image's merged filesystem as a plain directory, for a bind mount."""
    top = _source_top(ctx, instr, ref, env)
    tree = stage / f"from-{len(list(stage.glob('from-*')))}"
    tree.mkdir()
    export_merged(tuple(layer_dirs(ctx.store, top)), tree)
    return tree


def _source_top(ctx: StepContext, instr: Instruction, ref: str,
                env: Mapping[str, str]) -> Digest | None:
    """The top layer of the earlier stage or the stored image that a `from` value names."""
    expanded = expand(ref, env, ctx.buildfile.escape)
    earlier = stage_ref(ctx.buildfile, expanded, ctx.stage.index)
    if earlier is not None:
        return ctx.results[earlier.index].top
    try:
        chains = chain_ids(ctx.store.get_image(expanded).config.diff_ids)
    except LayerbuildError:
        raise ctx.error(instr, f"--from={expanded}: no such stage or image in the store",
                        ) from None
    return chains[-1] if chains else None


def _dest(instr: Copy | Add, config: ImageConfig, env: Mapping[str, str], escape: str) -> str:
    dest = expand(instr.dest, env, escape)
    if not dest.startswith("/"):
        workdir = str(config.config.get("WorkingDir") or "/")
        dest = posixpath.join(workdir, dest) + ("/" if dest.endswith("/") or dest == "." else "")
    return dest


def _copy(ctx: StepContext, instr: Copy | Add, base: StepRoot, root: StepRoot,
          config: ImageConfig, env: Mapping[str, str], stage: Path) -> None:
    """COPY/ADD into `root`; `base` is the image so far (where --chown names are looked up)."""
    escape = ctx.buildfile.escape
    dest = _dest(instr, config, env, escape)
    owner = (0, 0)
    if instr.chown:
        spec = expand(instr.chown, env, escape)
        owner = resolve_chown(spec, _text(base, "/etc/passwd"), _text(base, "/etc/group"))
    mode = int(instr.chmod, 8) if instr.chmod else None
    sources = [expand(s, env, escape) for s in instr.sources]
    exclude = IgnoreRules.from_patterns([expand(p, env, escape) for p in instr.exclude]) \
        if instr.exclude else None
    many = len(sources) + len(instr.heredocs) > 1 or any(set("*?[") & set(s) for s in sources)
    if many and not dest.endswith("/"):
        raise ctx.error(instr, "when using more than one source (or a wildcard), the "
                        "destination must be a directory and end with a /")
    if instr.heredocs:
        docs = stage / "heredocs"
        docs.mkdir()
        written = ctx.request.buildfile.stat().st_mtime_ns  # a heredoc is as new as its file
        for doc in instr.heredocs:
            body = expand(doc.content, env, escape) if doc.expand else doc.content
            (docs / doc.name).write_text(body)
            os.utime(docs / doc.name, ns=(written, written))
        items = [CopyItem(doc.name, _into(dest, doc.name, many), owner[0], owner[1],
                          mode if mode is not None else 0o644) for doc in instr.heredocs]
        copy_into(root, docs, items)
    from_ = getattr(instr, "from_", None)
    if from_:
        _copy_from(ctx, instr, root, from_, sources, dest, owner, mode, env, stage)
        return
    for source in sources:
        if isinstance(instr, Add) and source.startswith(("http://", "https://")):
            _add_url(ctx, instr, root, source, dest, owner, mode, stage)
            continue
        try:
            matches = ctx.context.match(source)
        except ContextError as exc:
            raise ctx.error(instr, str(exc)) from None
        if not matches:
            raise ctx.error(instr, f"{source}: no source files were specified")
        wildcard = bool(set("*?[") & set(source))
        for rel in matches:
            full = ctx.context.root / rel if rel else ctx.context.root
            if isinstance(instr, Add) and full.is_file() and _is_archive(full):
                _add_archive(root, full, dest, owner if instr.chown else None, stage,
                             made_time(config, ctx.request.source_date_epoch))
                continue
            named = rel if wildcard else posixpath.normpath(source).lstrip("/")
            target, into = dest, many
            if getattr(instr, "parents", False) and rel:  # keep the source's own path
                target = posixpath.join(dest, rel if full.is_dir() else posixpath.dirname(rel))
                target, into = target.rstrip("/") + "/", True
            items, single = _items(ctx.context, rel, target, into, owner, mode, exclude, named)
            copy_into(root, ctx.context.root, items, follow_source_symlinks=single)


def _into(dest: str, name: str, directory: bool) -> str:
    return posixpath.join(dest, name) if directory or dest.endswith("/") else dest


def _items(context: Context, rel: str, dest: str, many: bool, owner: tuple[int, int],
           mode: int | None, exclude: IgnoreRules | None, named: str,
           ) -> tuple[list[CopyItem], bool]:
    """One item per entry: a dir source's contents go into dest, a file goes to/into dest.

    A file is copied from the path the Buildfile `named` (a symlink there is followed and the
    copy keeps the link's name, as in Docker); says whether the items are that one file.
    """
    entries = list(context.walk(rel, exclude))
    top = entries[0]
    items = []
    if top.is_dir:
        base = dest.rstrip("/") or "/"
        items.append(CopyItem(top.rel or ".", base, owner[0], owner[1], 0o755, recursive=False))
        for entry in entries[1:]:
            inner = entry.rel[len(top.rel) + 1:] if top.rel else entry.rel
            items.append(CopyItem(entry.rel, posixpath.join(base, inner), owner[0], owner[1],
                                  mode, recursive=False))
    else:
        target = _into(dest, posixpath.basename(named), many)
        items.append(CopyItem(named, target, owner[0], owner[1], mode, recursive=False,
                              into_existing_dir=not dest.endswith("/")))
    return items, not top.is_dir


def _copy_from(ctx: StepContext, instr: Copy | Add, root: StepRoot, ref: str,
               sources: list[str], dest: str, owner: tuple[int, int], mode: int | None,
               env: Mapping[str, str], stage: Path) -> None:
    lowers = tuple(layer_dirs(ctx.store, _source_top(ctx, instr, ref, env)))
    uid, gid = (owner if instr.chown else (None, None))
    items = [CopyItem(s.lstrip("/") or ".", dest, uid, gid, mode,
                      into_existing_dir=not dest.endswith("/"))
             for s in _expand_wildcards(ctx, instr, lowers, sources, stage)]
    copy_into(root, lowers, items, follow_source_symlinks=True)


def _expand_wildcards(ctx: StepContext, instr: Copy | Add, lowers: tuple[Path, ...],
                      sources: list[str], stage: Path) -> list[str]:
    """Sources of another stage or image with their wildcards matched in its filesystem."""
    patterns = ["/" + s.lstrip("/") for s in sources if set("*?[") & set(s)]
    if not patterns:
        return sources
    view = stage / "glob"
    for sub in ("upper", "work"):
        (view / sub).mkdir(parents=True)
    found = dict(zip(patterns, glob_in_image(StepRoot(lowers, view / "upper", view / "work"),
                                             patterns), strict=True))
    out = []
    for source in sources:
        matches = found.get("/" + source.lstrip("/"), [source])
        if not matches:
            raise ctx.error(instr, f"{source}: no source files were specified")
        out.extend(matches)
    return out


def _is_archive(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(262)
    return head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar"


def _add_archive(root: StepRoot, path: Path, dest: str, owner: tuple[int, int] | None,
                 stage: Path, made: int) -> None:
    """Extract a local archive into dest; `--chown` owns what it extracts, as in BuildKit
    0.23+ (older BuildKit, Docker 20.10's among them, left the archive's owners).

    Directories the archive does not list, and dest, take the time `made`."""
    unpacked = stage / f"add-{os.urandom(4).hex()}"
    with open(path, "rb") as raw:
        extract_layer(open_decompressed(raw), unpacked, whiteouts=False, implicit_mtime=made)
    items = [CopyItem(".", dest.rstrip("/") or "/", owner[0] if owner else None,
                      owner[1] if owner else None, None, made_time=made)]
    copy_into(root, unpacked, items)


def _add_url(ctx: StepContext, instr: Add, root: StepRoot, url: str, dest: str,
             owner: tuple[int, int], mode: int | None, stage: Path) -> None:
    import urllib.parse  # only ADD of a URL pays for loading the HTTP client
    import urllib.request

    name = posixpath.basename(urllib.parse.urlparse(url).path) or "index.html"
    fetched = stage / f"url-{os.urandom(4).hex()}"
    fetched.mkdir()
    target = fetched / name
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            while chunk := response.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
            modified = response.headers.get("Last-Modified")
    except OSError as exc:
        raise ctx.error(instr, f"cannot fetch {url}: {exc}") from None
    if instr.checksum and instr.checksum != f"sha256:{h.hexdigest()}":
        raise ctx.error(instr, f"{url}: checksum sha256:{h.hexdigest()} does not match "
                        f"{instr.checksum}")
    os.chmod(target, 0o600)
    if modified:  # the file is as new as the server says, as in Docker
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(modified).timestamp()
            os.utime(target, (when, when))
        except (TypeError, ValueError):
            pass
    item = CopyItem(name, _into(dest, name, False), owner[0], owner[1], mode,
                    into_existing_dir=not dest.endswith("/"))
    copy_into(root, fetched, [item])
    shutil.rmtree(fetched, ignore_errors=True)
