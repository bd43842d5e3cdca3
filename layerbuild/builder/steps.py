"""Filesystem steps, each of which makes a layer: RUN in the sandbox, WORKDIR, and COPY/ADD (the
latter in `copying`)."""

from __future__ import annotations

import collections
import hashlib
import posixpath
from collections.abc import Mapping
from pathlib import Path

from layerbuild.builder import config as cfg
from layerbuild.builder.copying import copy_step
from layerbuild.builder.early import EarlyCopy
from layerbuild.builder.plan import is_linked, run_script
from layerbuild.builder.sandbox import Sandbox
from layerbuild.builder.stepcontext import (
    StepContext,
    layer_dirs,
    made_time,
    new_step_root,
    read_texts,
    source_top,
)
from layerbuild.buildfile import Instruction, Run, Workdir, proxy_environment
from layerbuild.buildfile import Mount as RunMount
from layerbuild.digest import Digest
from layerbuild.errors import LayerbuildError, StepFailed
from layerbuild.events import StepOutput
from layerbuild.image import ImageConfig, host_platform
from layerbuild.ingest import ingest_blob, ingest_dir
from layerbuild.sandbox.spec import CopyItem, Mount, RunSpec, StepRoot
from layerbuild.store import Layer, Store
from layerbuild.users import UnknownUser, step_ids

TAIL_LINES = 15
MAX_SECRET_BYTES = 500 * 1024  # BuildKit's limit on a secret's size


def run_filesystem_step(ctx: StepContext, instr: Instruction, config: ImageConfig,
                        top: Digest | None, env: Mapping[str, str],
                        early: EarlyCopy | None = None) -> tuple[Digest, Digest, int]:
    """Run RUN/COPY/ADD/WORKDIR on the stack `top`, or store what the `early` copy of the
    step made; returns the new layer's diff_id, chain ID and newest mtime."""
    if early is not None:
        stage, root = early.result()
        return _stored(ctx, top, root.upper, stage)
    with ctx.store.staging() as stage:
        root = new_step_root(ctx.store, top, stage)
        if isinstance(instr, Run):
            _run(ctx, instr, root, config, env)
        elif isinstance(instr, Workdir):
            _workdir(ctx.sandbox, root, config, stage, ctx.request.source_date_epoch)
        else:
            # --link: written into an empty tree, so the layer is the same on any base (the
            # base is only read, for --chown names).
            into = StepRoot((), root.upper, root.work) if is_linked(instr) else root
            copy_step(ctx, instr, root, into, config, env, stage)  # type: ignore[arg-type]
        return _stored(ctx, top, root.upper, stage,
                       linked_from=ctx.previous[0] if ctx.previous else None)


def _stored(ctx: StepContext, top: Digest | None, upper: Path, stage: Path,
            linked_from: Layer | None = None) -> tuple[Digest, Digest, int]:
    """The step's upper dir stored as a layer on `top`: its diff_id, chain ID, newest mtime."""
    got = ingest_dir(ctx.store, top, upper, stage, ctx.request.source_date_epoch,
                     lease=ctx.lease, linked_from=linked_from)
    return got.record.diff_id, got.record.chain_id, got.newest


def _workdir(sandbox: Sandbox, root: StepRoot, config: ImageConfig, stage: Path,
             epoch: int | None) -> None:
    """Create the WORKDIR (and its parents) unless the image has it; an existing one is kept.

    What it creates belongs to the USER in force, as BuildKit makes it, and takes the time of
    the step before (so the layer does not depend on when it was built).
    """
    empty = stage / "workdir"
    empty.mkdir(mode=0o755)
    workdir = str(config.config.get("WorkingDir") or "/")
    sandbox.copy_into(root, empty, [CopyItem(".", workdir, 0, 0, 0o755, recursive=False,
                                             made_time=made_time(config, epoch))],
                      as_user=str(config.config.get("User") or ""))


def relink(store: Store, layer: Layer, top: Digest | None, lease: Path) -> None:
    """Store a layer made by COPY --link on another stack `top` too, from its blob."""
    with layer.open() as f:
        ingest_blob(store, top, layer.diff_id, f, layer.media_type, expected=layer.digest,
                    expected_size=layer.blobs[0].size, lease=lease)


def _user_first(sandbox: Sandbox, root: StepRoot, user: str) -> None:
    """Raise for an unknown USER (or unreadable passwd/group), which a step reports before
    any other error of its setup; the sandbox looks USER up only once the step starts."""
    passwd, group = read_texts(sandbox, root, ["/etc/passwd", "/etc/group"])
    step_ids(user, passwd, group)


def _run(ctx: StepContext, instr: Run, root: StepRoot, config: ImageConfig,
         env: Mapping[str, str]) -> None:
    _check_runnable(ctx, instr, config)
    script = run_script(instr)
    mounts, secret_env = _mounts(ctx, instr, env, root.upper.parent)
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
    # Proxy build args under both spellings, as BuildKit's executor adds them; an ENV or a
    # declared ARG of the same name wins. They are not in `env`, so not in the cache key.
    values = {**proxy_environment(ctx.request.build_args), **env}
    values.setdefault("PATH", cfg.DEFAULT_PATH.partition("=")[2])
    # HOME, unless set, is the USER's home in the image: the sandbox looks USER up there and
    # puts HOME next, before the secrets, which come last as BuildKit adds them (a secret
    # wins over an ENV, and a secret named HOME over the image's home).
    home_at = len(values)
    values.update(secret_env)
    home_wanted = "HOME" not in values
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
    partial = bytearray()

    def on_output(data: bytes) -> None:
        ctx.events.emit(StepOutput(data, ctx.stage.index))
        partial.extend(data)
        *lines, rest = bytes(partial).split(b"\n")
        tail.extend(lines)
        partial[:] = rest

    user = str(config.config.get("User") or "")
    network = instr.network or ctx.request.network
    try:
        ctx.request.check_network(network,
                                  f"{ctx.buildfile.path}:{instr.line}: RUN --network=host")
        spec = RunSpec(argv=tuple(argv), env=tuple(f"{k}={v}" for k, v in values.items()),
                       cwd=str(config.config.get("WorkingDir") or "/"), network=network,
                       mounts=tuple(mounts), seccomp=ctx.request.seccomp, image_user=user,
                       home_at=home_at if home_wanted else None)
        code = ctx.sandbox.run(root, spec, on_output)
    except UnknownUser:
        raise
    except LayerbuildError:
        _user_first(ctx.sandbox, root, user)
        raise
    if partial:
        tail.append(bytes(partial))
    if code != 0:
        shown = "\n".join("  " + line.decode("utf-8", "replace") for line in tail)
        raise StepFailed(f"{ctx.buildfile.path}:{instr.line}: RUN {cfg.describe(instr)}: "
                         f"exit code {code}" + (f"\n{shown}" if shown else ""))


def _mounts(ctx: StepContext, instr: Run, env: Mapping[str, str], stage: Path,
            ) -> tuple[list[Mount], dict[str, str]]:
    """The step's mounts, and the variables that secrets with `env=` set."""
    out = []
    secret_env: dict[str, str] = {}
    for m in instr.mounts:
        if not m.target and m.type != "secret":
            raise ctx.error(instr, f"--mount type={m.type} needs a target")
        target = m.target or ""
        if m.type == "cache":
            ident = m.id or target
            source = ctx.store.root / "cachemounts" / hashlib.sha256(ident.encode()).hexdigest()
            source.mkdir(parents=True, exist_ok=True)
            out.append(Mount("cache", target, source, readonly=m.readonly, mode=m.mode,
                             uid=m.uid or 0, gid=m.gid or 0))
        elif m.type == "tmpfs":
            out.append(Mount("tmpfs", target, None, readonly=False, size=m.size))
        elif m.type == "bind" and m.from_:
            tree = _stage_tree(ctx, instr, m.from_, env, stage)
            sub = posixpath.normpath("/" + (m.source or "")).lstrip("/")
            out.append(Mount("bind", target, tree / sub if sub else tree,
                             readonly=m.readonly))
        elif m.type == "bind":
            rel = ctx.context.resolve(m.source or "")
            out.append(Mount("bind", target, ctx.context.root / rel if rel else
                             ctx.context.root, readonly=m.readonly))
        elif m.type == "secret":
            out.extend(_secret(ctx, instr, m, secret_env))
        else:
            raise ctx.error(instr, f"--mount type={m.type} is not supported")
    return out, secret_env


def _secret(ctx: StepContext, instr: Run, m: RunMount, secret_env: dict[str, str],
            ) -> list[Mount]:
    """A secret as BuildKit gives it: its id is `id` (or `source`), else the target's name;
    with `env=NAME` its value is in $NAME, and it is a file only when a target is named too
    (without `env`, at the target or /run/secrets/<id>). A missing optional secret leaves no
    file and an empty $NAME."""
    ident = m.id or m.source or posixpath.basename(m.target or "")
    if not ident:
        raise ctx.error(instr, "--mount type=secret needs an id or a target")
    secret = ctx.request.secrets.get(ident)
    if secret is None and m.required:
        raise ctx.error(instr, f"secret {ident!r} is required but was not given "
                        "(--secret id=ID,src=FILE)")
    if m.env is not None:
        secret_env[m.env] = _secret_value(ctx, instr, ident, secret) \
            if secret is not None else ""
    if secret is None or (m.env is not None and not m.target):
        return []
    target = m.target or f"/run/secrets/{posixpath.basename(ident)}"
    return [Mount("secret", target, Path(secret), mode=m.mode, uid=m.uid or 0,
                  gid=m.gid or 0)]


def _secret_value(ctx: StepContext, instr: Run, ident: str, path: Path) -> str:
    """A secret's content as an environment variable's value (BuildKit's size limit)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ctx.error(instr, f"secret {ident!r}: cannot read {path}: {exc.strerror}",
                        ) from None
    if len(data) > MAX_SECRET_BYTES:
        raise ctx.error(instr, f"secret {ident!r} is larger than {MAX_SECRET_BYTES} bytes")
    if b"\0" in data:
        raise ctx.error(instr, f"secret {ident!r} holds a NUL byte, which no environment "
                        "variable can")
    return data.decode("utf-8", "surrogateescape")


def _stage_tree(ctx: StepContext, instr: Run, ref: str, env: Mapping[str, str],
                stage: Path) -> Path:
    """A stage's or image's merged filesystem as a plain directory, for a bind mount."""
    top = source_top(ctx, instr, ref, env)
    tree = stage / f"from-{len(list(stage.glob('from-*')))}"
    tree.mkdir()
    ctx.sandbox.export(tuple(layer_dirs(ctx.store, top)), tree)
    return tree


_QEMU = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el"}


def _check_runnable(ctx: StepContext, instr: Run, config: ImageConfig) -> None:
    """A RUN on an image of another architecture needs the kernel to emulate it (binfmt_misc
    with a QEMU handler, as Docker and BuildKit need): without one, say so, not `exec format
    error`."""
    arch = config.architecture
    host, _variant = host_platform()
    if not arch or arch == host or ctx.request.dry_run:
        return
    handler = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{_QEMU.get(arch, arch)}"
    try:
        enabled = handler.read_text().startswith("enabled")
    except OSError:
        enabled = False
    if not enabled:
        raise StepFailed(f"{ctx.buildfile.path}:{instr.line}: RUN {cfg.describe(instr)}: the "
                         f"image is for {config.os or 'linux'}/{arch} and this machine is "
                         f"{host}, and no emulator for {arch} is registered (install "
                         "qemu-user-static and binfmt-support)")
