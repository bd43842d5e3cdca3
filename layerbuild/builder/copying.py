"""COPY and ADD: sources from the context, another stage or image, archives and URLs."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
from collections.abc import Mapping
from pathlib import Path

from layerbuild.builder.stepcontext import (
    StepContext,
    layer_dirs,
    made_time,
    read_texts,
    source_top,
)
from layerbuild.buildfile import Add, Copy, IgnoreRules, expand
from layerbuild.context import Context, ContextError
from layerbuild.errors import FormatError
from layerbuild.image import ImageConfig
from layerbuild.layer import is_tar_archive, open_decompressed
from layerbuild.sandbox.entries import entry_string
from layerbuild.sandbox.spec import CopyItem, PreviousLayer, StepRoot
from layerbuild.users import resolve_chown


def _dest(instr: Copy | Add, config: ImageConfig, env: Mapping[str, str], escape: str) -> str:
    dest = expand(instr.dest, env, escape)
    if not dest.startswith("/"):
        workdir = str(config.config.get("WorkingDir") or "/")
        dest = posixpath.join(workdir, dest) + ("/" if dest.endswith("/") or dest == "." else "")
    return dest


def copy_step(ctx: StepContext, instr: Copy | Add, base: StepRoot, root: StepRoot,
              config: ImageConfig, env: Mapping[str, str], stage: Path) -> None:
    """COPY/ADD into `root`; `base` is the image so far (where --chown names are looked up)."""
    escape = ctx.buildfile.escape
    dest = _dest(instr, config, env, escape)
    owner = (0, 0)
    if instr.chown:
        spec = expand(instr.chown, env, escape)
        passwd, group = read_texts(ctx.sandbox, base, ["/etc/passwd", "/etc/group"])
        owner = resolve_chown(spec, passwd, group)
    mode = _chmod(ctx, instr)
    sources = [expand(s, env, escape) for s in instr.sources]
    exclude = _exclude(ctx, instr, [expand(p, env, escape) for p in instr.exclude])
    many = len(sources) + len(instr.heredocs) > 1 or any(set("*?[") & set(s) for s in sources)
    if many and not dest.endswith("/"):
        raise ctx.error(instr, "when using more than one source (or a wildcard), the "
                        "destination must be a directory and end with a /")
    if instr.heredocs:
        docs = stage / "heredocs"
        docs.mkdir()
        # A heredoc is as new as its file; one of a streamed Buildfile, as the step before.
        written = made_time(config, ctx.request.source_date_epoch) * 10**9 \
            if ctx.request.streamed else ctx.request.buildfile.stat().st_mtime_ns
        for doc in instr.heredocs:
            body = expand(doc.content, env, escape) if doc.expand else doc.content
            (docs / doc.name).write_text(body)
            os.utime(docs / doc.name, ns=(written, written))
        items = [CopyItem(doc.name, _into(dest, doc.name, many), owner[0], owner[1],
                          mode if mode is not None else 0o644) for doc in instr.heredocs]
        ctx.sandbox.copy_into(root, docs, items)
    from_ = getattr(instr, "from_", None)
    if from_:
        _copy_from(ctx, instr, root, from_, sources, dest, owner, mode, env, stage)
        return
    previous = None
    if ctx.previous is not None:
        layer, changed = ctx.previous
        previous = PreviousLayer(layer.diff_dir, entry_string(changed),
                                 ctx.request.source_date_epoch)
    for source in sources:
        if isinstance(instr, Add) and source.startswith(("http://", "https://")):
            _add_url(ctx, instr, root, source, dest, owner, mode, stage,
                     made_time(config, ctx.request.source_date_epoch))
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
            if isinstance(instr, Add) and instr.unpack is not False:
                archive = _local_archive(ctx.context, rel)
                if archive is not None:
                    _add_archive(ctx, instr, root, archive, dest,
                                 owner if instr.chown else None, stage,
                                 made_time(config, ctx.request.source_date_epoch))
                    continue
            named = rel if wildcard else posixpath.normpath(source).lstrip("/")
            target, into = dest, many
            if getattr(instr, "parents", False) and rel:  # keep the source's own path
                target = posixpath.join(dest, rel if full.is_dir() else posixpath.dirname(rel))
                target, into = target.rstrip("/") + "/", True
            items, single = _items(ctx.context, rel, target, into, owner, mode, exclude, named)
            # One copy per matched path, as BuildKit makes: hard links inside a directory
            # source stay links, files named apart (two sources, a wildcard's matches) do not.
            ctx.sandbox.copy_into(root, ctx.context.root, items,
                                  follow_source_symlinks=single,
                                  previous=None if single else previous)


def _chmod(ctx: StepContext, instr: Copy | Add) -> int | None:
    """`--chmod` as a mode (octal, as BuildKit reads it)."""
    if not instr.chmod:
        return None
    try:
        mode = int(instr.chmod, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ctx.error(instr, f"--chmod={instr.chmod}: not an octal mode such as 0755")
    return mode


def _exclude(ctx: StepContext, instr: Copy | Add, patterns: list[str]) -> IgnoreRules | None:
    if not patterns:
        return None
    try:
        return IgnoreRules.from_patterns(patterns)
    except ValueError as exc:
        raise ctx.error(instr, f"--exclude: {exc}") from None


def _into(dest: str, name: str, directory: bool) -> str:
    return posixpath.join(dest, name) if directory or dest.endswith("/") else dest


def _items(context: Context, rel: str, dest: str, many: bool, owner: tuple[int, int],
           mode: int | None, exclude: IgnoreRules | None, named: str,
           ) -> tuple[list[CopyItem], bool]:
    """A dir source's entries, walked here (the ignore rules and --exclude applied, as the
    cache key saw them), go into dest; a file goes to/into dest.

    A file is copied from the path the Buildfile `named` (a symlink there is followed and the
    copy keeps the link's name, as in Docker); says whether the items are that one file.
    """
    entries = context.paths(rel, exclude)
    top, top_is_dir = next(entries)
    items = []
    if top_is_dir:
        cut = len(top) + 1 if top else 0
        # One string of paths, not an item (or a string) each: a context of many files
        # stays small in memory.
        below = entry_string(path[cut:] for path, _is_dir in entries)
        items.append(CopyItem(top or ".", dest.rstrip("/") or "/", owner[0], owner[1],
                              0o755, recursive=False, entries=below, entry_mode=mode))
    else:
        target = _into(dest, posixpath.basename(named), many)
        items.append(CopyItem(named, target, owner[0], owner[1], mode, recursive=False,
                              into_existing_dir=not dest.endswith("/")))
    return items, not top_is_dir


def _copy_from(ctx: StepContext, instr: Copy | Add, root: StepRoot, ref: str,
               sources: list[str], dest: str, owner: tuple[int, int], mode: int | None,
               env: Mapping[str, str], stage: Path) -> None:
    lowers = tuple(layer_dirs(ctx.store, source_top(ctx, instr, ref, env)))
    uid, gid = (owner if instr.chown else (None, None))
    # Each path (each match of a wildcard too) is a copy of its own, as in BuildKit: hard
    # links are kept inside one, not across two.
    items = [CopyItem(s.lstrip("/") or ".", dest, uid, gid, mode,
                      into_existing_dir=not dest.endswith("/"), link_group=i)
             for i, s in enumerate(_expand_wildcards(ctx, instr, lowers, sources, stage))]
    ctx.sandbox.copy_into(root, lowers, items, follow_source_symlinks=True)


def _expand_wildcards(ctx: StepContext, instr: Copy | Add, lowers: tuple[Path, ...],
                      sources: list[str], stage: Path) -> list[str]:
    """Sources of another stage or image with their wildcards matched in its filesystem."""
    patterns = ["/" + s.lstrip("/") for s in sources if set("*?[") & set(s)]
    if not patterns:
        return sources
    view = stage / "glob"
    for sub in ("upper", "work"):
        (view / sub).mkdir(parents=True)
    found = dict(zip(patterns, ctx.sandbox.glob(StepRoot(lowers, view / "upper", view / "work"),
                                             patterns), strict=True))
    out = []
    for source in sources:
        matches = found.get("/" + source.lstrip("/"), [source])
        if not matches:
            raise ctx.error(instr, f"{source}: no source files were specified")
        out.extend(matches)
    return out


def _local_archive(context: Context, rel: str) -> Path | None:
    """The context file `rel` names (symlinks followed inside the context), when it is a tar
    archive that ADD unpacks: plain or compressed, told by its content, as BuildKit does."""
    full = context.root / context.resolve(rel)
    return full if full.is_file() and is_tar_archive(full) else None


def _add_archive(ctx: StepContext, instr: Add, root: StepRoot, path: Path, dest: str,
                 owner: tuple[int, int] | None, stage: Path, made: int) -> None:
    """Extract a local archive into dest; `--chown` owns what it extracts, as in BuildKit
    0.23+ (older BuildKit, Docker 20.10's among them, left the archive's owners).

    Directories the archive does not list, and dest, take the time `made`."""
    from layerbuild.layer import extract_layer  # (and tarfile) for ADD of an archive only

    unpacked = stage / f"add-{os.urandom(4).hex()}"
    try:
        with open(path, "rb") as raw:
            extract_layer(open_decompressed(raw), unpacked, whiteouts=False,
                          implicit_mtime=made)
    except FormatError as exc:  # it starts as a tar, and then is not one
        raise ctx.error(instr, f"{path.name}: cannot unpack the archive: {exc}") from None
    items = [CopyItem(".", dest.rstrip("/") or "/", owner[0] if owner else None,
                      owner[1] if owner else None, None, made_time=made)]
    ctx.sandbox.copy_into(root, unpacked, items)


def _add_url(ctx: StepContext, instr: Add, root: StepRoot, url: str, dest: str,
             owner: tuple[int, int], mode: int | None, stage: Path, made: int) -> None:
    """Fetch a URL into dest: the file as served, or with ``--unpack=true`` the archive it
    is, extracted (as a local one is)."""
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
    if instr.unpack and is_tar_archive(target):
        _add_archive(ctx, instr, root, target, dest, owner if instr.chown else None, stage,
                     made)
        shutil.rmtree(fetched, ignore_errors=True)
        return
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
    ctx.sandbox.copy_into(root, fetched, [item])
    shutil.rmtree(fetched, ignore_errors=True)
