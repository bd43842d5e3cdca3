"""The `layerbuild` command: the only module that prints and picks exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild import __version__, api
from layerbuild.errors import LayerbuildError, StoreError, os_error_text
from layerbuild.reference import Reference
from layerbuild.store import Layer, Store, default_root

if TYPE_CHECKING:  # types only: the output code loads for builds that have outputs
    from layerbuild.builder.outputs import Output

Command = Callable[[Store, argparse.Namespace], int]


def _out(line: str = "") -> None:
    print(line, flush=True)


def _notice(line: str) -> None:
    print(f"layerbuild: notice: {line}", file=sys.stderr, flush=True)


def _human(size: float) -> str:
    from layerbuild.sizes import human_size

    return human_size(size)


def _ago(created: str | None) -> str:
    """Docker's "5 minutes ago" for an RFC 3339 time."""
    import datetime  # for the listings only

    if not created:
        return ""
    try:
        when = datetime.datetime.fromisoformat(re.sub(r"\.\d+", "", created))
    except ValueError:
        return created
    seconds = (datetime.datetime.now(datetime.UTC) - when).total_seconds()
    for unit, size in (("year", 31536000), ("month", 2592000), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago"


def cmd_import(store: Store, args: argparse.Namespace) -> int:
    image = api.import_rootfs(args.file, args.name or None, store=store,
                              source_date_epoch=args.source_date_epoch, message=args.message)
    _out(str(image.id))
    return 0


def cmd_load(store: Store, args: argparse.Namespace) -> int:
    images = api.load(args.input, store=store, progress=None if args.quiet else _out)
    for item in images:
        for tag in item.tags:
            _out(f"Loaded image: {tag.familiar}")
        if not item.tags:
            _out(f"Loaded image ID: {item.image.id}")
    return 0


def cmd_save(store: Store, args: argparse.Namespace) -> int:
    output = args.output or "-"
    if output == "-" and sys.stdout.isatty():
        raise LayerbuildError("refusing to write an archive to a terminal: use -o FILE")
    api.save(args.images, output, store=store, compression=args.compress, notice=_notice)
    return 0


def _image_size(layers: list[Layer]) -> int:
    return sum(layer.size for layer in layers)


def cmd_images(store: Store, args: argparse.Namespace) -> int:
    rows = []
    for entry in store.images():
        config = entry.image.config
        try:
            size = _human(_image_size(store.image_layers(entry.image)))
        except StoreError:
            if store.has_image(entry.image.id):
                raise  # a layer of a stored image is gone: the store is damaged
            continue  # removed by another command while listed
        for tag in entry.tags or ("<none>:<none>",):
            name, _, version = tag.rpartition(":")
            rows.append((name, version, entry.image.id.short, _ago(config.created), size))
    if args.quiet:
        for row in dict.fromkeys(r[2] for r in rows):
            _out(row)
        return 0
    _table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0


def _table(header: list[str], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in [tuple(header), *rows]:
        _out("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_inspect(store: Store, args: argparse.Namespace) -> int:
    data = [api.inspect(ref, store=store) for ref in args.images]
    _out(json.dumps(data, indent=4))
    return 0


def cmd_history(store: Store, args: argparse.Namespace) -> int:
    image = store.get_image(args.image)
    layers = iter(store.image_layers(image))
    rows = []
    for entry in image.config.history:
        layer = None if entry.empty_layer else next(layers, None)
        size = layer.size if layer else 0
        created_by = entry.created_by or ""
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append((entry.created or "", created_by, _human(size), entry.comment or ""))
    _table(["CREATED", "CREATED BY", "SIZE", "COMMENT"], rows[::-1])
    return 0


def cmd_diff(store: Store, args: argparse.Namespace) -> int:
    """Print how two images differ; exit 0 with no output when they are the same image."""
    from layerbuild.imagediff import diff_images, render

    result = diff_images(store, store.get_image(args.image1), store.get_image(args.image2))
    for line in render(result, args.image1, args.image2):
        _out(line)
    return 0 if result.identical else 1


def cmd_pull(store: Store, args: argparse.Namespace) -> int:
    from layerbuild.progress import open_transfers

    ref = Reference.parse(args.image, digests=True)
    if not args.quiet:
        _out(f"{ref.tag or ref.digest}: Pulling from {ref.path}")
    view = open_transfers("quiet" if args.quiet else "auto")
    try:
        pulled = api.pull(ref, store=store, platform=args.platform, events=view)
    finally:
        view.close()
    if args.quiet:
        _out(ref.full_name)
        return 0
    _out(f"Digest: {pulled.digest}")
    status = "Downloaded newer image" if pulled.fresh else "Image is up to date"
    _out(f"Status: {status} for {ref.familiar}")
    _out(ref.full_name)
    return 0


def cmd_push(store: Store, args: argparse.Namespace) -> int:
    from layerbuild.progress import open_transfers

    target = Reference.parse(args.target or args.image, digests=False)
    if not args.quiet:
        _out(f"The push refers to repository [{target.repository}]")
    view = open_transfers("quiet" if args.quiet else "auto")
    try:
        pushed = api.push(args.image, target, store=store, compression=args.compress,
                          events=view)
    finally:
        view.close()
    _out(f"{target.tag}: digest: {pushed.digest} size: {pushed.size}")
    return 0


def cmd_login(_store: Store | None, args: argparse.Namespace) -> int:
    import getpass

    user = args.username
    secret = args.password
    if args.password_stdin:
        if args.password:
            raise LayerbuildError("--password and --password-stdin cannot be used together")
        secret = sys.stdin.readline().rstrip("\r\n")
    if not user:
        if not sys.stdin.isatty():
            raise LayerbuildError("login: give --username (no terminal to ask on)")
        user = input("Username: ").strip()
    if not secret:
        if not sys.stdin.isatty():
            raise LayerbuildError("login: give --password-stdin (no terminal to ask on)")
        secret = getpass.getpass("Password: ")
    if not user or not secret:
        raise LayerbuildError("login: a username and a password are needed")
    if args.password:
        _notice("using --password on the command line is insecure; use --password-stdin")
    where = api.login(args.server or "docker.io", user, secret)
    _out(f"credentials kept in {where}")
    _out("Login Succeeded")
    return 0


def cmd_logout(_store: Store | None, args: argparse.Namespace) -> int:
    server = args.server or "docker.io"
    if api.logout(server):
        _out(f"Removing login credentials for {server}")
    else:
        _out(f"Not logged in to {server}")
    return 0


def cmd_tag(store: Store, args: argparse.Namespace) -> int:
    store.tag(args.source, args.target)
    return 0


def cmd_rmi(store: Store, args: argparse.Namespace) -> int:
    for ref in args.images:
        untagged, deleted = store.remove_image(ref, force=args.force)
        for tag in untagged:
            _out(f"Untagged: {tag}")
        if deleted is not None:
            _out(f"Deleted: {deleted}")
    return 0


def cmd_prune(store: Store, args: argparse.Namespace) -> int:
    removed = store.prune(all_cache=args.all)
    for record in removed:
        _out(f"Deleted layer: {record.chain_id}")
    _out(f"Total reclaimed space: {_human(sum(r.size for r in removed))}")
    return 0


def cmd_info(store: Store | None, args: argparse.Namespace) -> int:
    from layerbuild.hostcheck import gather, render

    for line in render(gather(Path(args.root))):
        _out(line)
    return 0


def cmd_du(store: Store, args: argparse.Namespace) -> int:
    counts = store.image_references()
    cached = store.cache_references()
    rows = []
    total = 0
    for record in store.layers():
        total += record.size
        rows.append((record.chain_id.short, record.diff_id.short, _human(record.size),
                     str(counts.get(record.chain_id, 0)),
                     "yes" if record.chain_id in cached else ""))
    _table(["LAYER", "DIFF ID", "SIZE", "SHARED BY", "CACHED"], rows)
    _out(f"Total: {len(rows)} layers, {_human(total)}")
    return 0


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise LayerbuildError(f"{what} {item!r}: expected KEY=VALUE")
        out[key] = value if sep else os.environ.get(key, "")
    return out


def _secrets(values: list[str]) -> dict[str, Path]:
    """`--secret id=ID,src=FILE` as id -> file."""
    out = {}
    for value in values:
        fields = dict(part.partition("=")[::2] for part in value.split(","))
        ident, source = fields.get("id"), fields.get("src") or fields.get("source")
        if not ident or not source:
            raise LayerbuildError(f"--secret {value!r}: expected id=ID,src=FILE")
        if not Path(source).is_file():
            raise LayerbuildError(f"--secret {ident}: {source} is not a file")
        out[ident] = Path(source)
    return out


def _seccomp(options: list[str]) -> bool:
    """Whether RUN steps get the seccomp filter: yes unless `seccomp=unconfined` is asked."""
    for value in options:
        if value.replace(":", "=", 1) != "seccomp=unconfined":
            raise LayerbuildError(f"--security-opt {value!r}: the only option is "
                                  "seccomp=unconfined")
    return not options


def _pull_policy(value: str) -> str:
    """`--pull` as Docker and Podman spell it: a bare `--pull` or `true` is `always`."""
    policy = {"true": "always", "false": "missing"}.get(value.lower(), value.lower())
    if policy not in ("missing", "always", "never"):
        raise LayerbuildError(f"--pull={value}: expected missing, always or never")
    return policy


def _err(line: str = "") -> None:
    print(line, file=sys.stderr, flush=True)


def _outputs(values: Sequence[str]) -> list[Output]:
    """The parsed `-o` values (the output code loads only for builds that have some)."""
    if not values:
        return []
    from layerbuild.builder.outputs import check_outputs, parse_output

    outputs = [parse_output(o) for o in values]
    check_outputs(outputs)
    return outputs


def cmd_build(store: Store, args: argparse.Namespace) -> int:
    from layerbuild.progress import open_progress

    outputs = _outputs(args.output)
    streamed = any(o.to_stdout for o in outputs)
    if streamed and sys.stdout.isatty():
        raise LayerbuildError("-o …,dest=-: refusing to write a tar to a terminal; "
                              "redirect stdout or give dest=FILE")
    say = _err if streamed else _out  # stdout carries the stream, and nothing else
    variables: dict[str, str] = {}
    for path in args.var_file:
        from layerbuild.buildfile import parse_var_file

        try:
            variables.update(parse_var_file(Path(path).read_text(), path))
        except OSError as exc:
            raise LayerbuildError(f"cannot read {path}: {exc.strerror}") from None
    variables.update(_pairs(args.var, "--var"))
    build_args = _pairs(args.build_arg, "--build-arg")
    secrets = _secrets(args.secret)
    seccomp = _seccomp(args.security_opt)
    mode = "quiet" if args.quiet else args.progress
    progress = open_progress("plain" if args.dry_run else mode)
    try:
        image = api.build(
            args.context, tags=args.tag, buildfile=args.file, build_args=build_args,
            target=args.target, outputs=outputs, store=store, events=progress,
            no_cache=args.no_cache, no_cache_filter=args.no_cache_filter, dry_run=args.dry_run,
            source_date_epoch=args.source_date_epoch, network=args.network, allow=args.allow,
            secrets=secrets,
            template=True if args.template else None, template_vars=variables,
            seccomp=seccomp, pull=_pull_policy(args.pull), platform=args.platform,
            push=args.push, cache_from=args.cache_from, cache_to=args.cache_to)
    finally:
        progress.close()  # before any error is printed: the live view must not hide it
    if image is None:
        return 0
    if args.quiet:
        say(str(image.id))
        return 0
    say(f"Successfully built {image.id}")
    for tag in args.tag:
        say(f"Successfully tagged {Reference.parse(tag).familiar}")
    return 0


class _Skipped:
    """A command's parser left out: what is said of its arguments goes nowhere."""

    def add_argument(self, *_args: object, **_kwargs: object) -> None:
        pass

    def set_defaults(self, **_kwargs: object) -> None:
        pass


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, told the width `shutil.get_terminal_size` would give: by
    default it asks shutil, whose import (bz2 and lzma with it) every command would pay for,
    since argparse makes a formatter for each option it adds, not only for --help."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


def _columns() -> int:
    """The terminal's width as `shutil.get_terminal_size().columns` reads it: $COLUMNS, else
    stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for every command; with `command`, for that one only (the others'
    parsers, which its line does not need, are not made: they cost milliseconds a start)."""
    p = argparse.ArgumentParser(prog="layerbuild", description="Daemonless image builder.",
                                formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"layerbuild {__version__}")
    p.add_argument("--root", default=str(default_root()),
                   help="store directory (default: $LAYERBUILD_ROOT or %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, help_: str) -> argparse.ArgumentParser:
        if command is not None and name != command:
            return _Skipped()  # type: ignore[return-value]
        sp = sub.add_parser(name, help=help_, description=help_, formatter_class=_Formatter)
        sp.set_defaults(func=func)
        return sp

    sp = add("build", cmd_build, "Build an image from a Buildfile")
    sp.add_argument("context", help="the build context directory")
    sp.add_argument("-t", "--tag", action="append", default=[], help="NAME[:TAG] (repeatable)")
    sp.add_argument("-f", "--file", help="Buildfile (default: CONTEXT/Buildfile, then "
                    "Buildfile.j2, then Dockerfile)")
    sp.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    sp.add_argument("--target", help="stage to build (default: the last)")
    sp.add_argument("--no-cache", action="store_true", help="rebuild every step")
    sp.add_argument("--dry-run", action="store_true",
                    help="show which steps would come from the cache and which would run")
    sp.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                    help="rebuild every step of this stage (repeatable)")
    sp.add_argument("--progress", choices=["auto", "tty", "plain", "quiet"], default="auto",
                    help="tty: a line per step, updated in place; plain: every line, for logs; "
                    "auto: tty on a terminal, else plain")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    sp.add_argument("-o", "--output", action="append", default=[], metavar="type=T,dest=D",
                    help="also write the image: docker or oci (a tar; a directory with "
                    "tar=false), tar (the root filesystem as a tar), local (as a directory); "
                    "dest=- streams a tar to stdout; or image / registry "
                    "(name=REF[,push=true])")
    sp.add_argument("--secret", action="append", default=[], metavar="id=ID,src=FILE",
                    help="a secret for RUN --mount=type=secret (never stored in the image)")
    sp.add_argument("--network", choices=["default", "private", "none", "host"],
                    default="default",
                    help="RUN's network: private (a namespace of its own with outbound access "
                    "through slirp4netns), none, host (needs --allow network.host), or "
                    "default: private as root, host rootless")
    sp.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT",
                    help="grant network.host: RUN may use the host's network")
    sp.add_argument("--security-opt", action="append", default=[], metavar="seccomp=unconfined",
                    help="run RUN steps without Docker's default seccomp filter")
    sp.add_argument("--template", action="store_true", help="render the Buildfile with Jinja2")
    sp.add_argument("--var", action="append", default=[], metavar="K=V",
                    help="template variable (repeatable)")
    sp.add_argument("--var-file", action="append", default=[], metavar="FILE",
                    help="template variables: JSON object or K=V lines")
    sp.add_argument("--source-date-epoch", help="timestamp for created times and clamped mtimes")
    sp.add_argument("--pull", nargs="?", const="always", default="missing",
                    metavar="missing|always|never",
                    help="bases the store lacks are pulled (missing, the default); always: "
                    "ask the registry for every tag again; never: use the store only")
    sp.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                    help="the platform to build for: bases are pulled for it (a RUN needs an "
                    "emulator for a platform not this machine's)")
    sp.add_argument("--push", action="store_true",
                    help="push the image to each -t name's registry (as -o type=registry)")
    sp.add_argument("--cache-from", action="append", default=[], metavar="type=T,…",
                    help="take steps from a cache other builds exported: "
                    "type=registry,ref=REF (or just REF, also an image with an inline cache) "
                    "or type=local,src=DIR (repeatable)")
    sp.add_argument("--cache-to", action="append", default=[], metavar="type=T,…",
                    help="export the build cache: type=registry,ref=REF, type=local,dest=DIR "
                    "(with mode=min|max, compression=gzip|zstd), or type=inline (into the "
                    "image's config)")
    sp = add("import", cmd_import, "Import a root filesystem tarball as an image")
    sp.add_argument("file", help="tarball (plain, gzip, zstd, xz or bzip2), or - for stdin")
    sp.add_argument("name", nargs="?", help="NAME[:TAG] for the image")
    sp.add_argument("-m", "--message", help="comment for the history entry")
    sp.add_argument("--source-date-epoch", help="timestamp for created and clamped mtimes")
    sp = add("load", cmd_load, "Load images from an archive")
    sp.add_argument("-i", "--input", default="-", help="archive file or OCI layout dir")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only the loaded names")
    sp = add("save", cmd_save, "Save images to an archive (OCI layout + manifest.json)")
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp.add_argument("-o", "--output", help="file to write (default: stdout)")
    sp.add_argument("--compress", choices=["none", "gzip", "zstd"], default="none",
                    help="layer compression (default: none, as docker save writes)")
    sp = add("images", cmd_images, "List images")
    sp.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    sp = add("inspect", cmd_inspect, "Show images as JSON")
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp = add("history", cmd_history, "Show the history of an image")
    sp.add_argument("image")
    sp.add_argument("--no-trunc", action="store_true")
    sp = add("diff", cmd_diff, "Show how two images differ: config, history, layer files "
             "(exit 1 if they do)")
    sp.add_argument("image1", metavar="IMAGE1")
    sp.add_argument("image2", metavar="IMAGE2")
    sp = add("pull", cmd_pull, "Pull an image from a registry")
    sp.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    sp.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                    help="the platform to pull from a multi-platform image (default: this one)")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    sp = add("push", cmd_push, "Push an image to a registry")
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("target", nargs="?", metavar="NAME[:TAG]",
                    help="where to push it (default: the image's own name)")
    sp.add_argument("--compress", choices=["gzip", "zstd"], default="gzip",
                    help="compression of the pushed layers (default: gzip)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress")
    sp = add("login", cmd_login, "Log in to a registry (credentials kept in Docker's config)")
    sp.add_argument("server", nargs="?", metavar="SERVER", help="default: docker.io")
    sp.add_argument("-u", "--username")
    sp.add_argument("-p", "--password")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sp.set_defaults(no_store=True)
    sp = add("logout", cmd_logout, "Log out from a registry")
    sp.add_argument("server", nargs="?", metavar="SERVER", help="default: docker.io")
    sp.set_defaults(no_store=True)
    sp = add("tag", cmd_tag, "Give an image another name")
    sp.add_argument("source")
    sp.add_argument("target")
    sp = add("rmi", cmd_rmi, "Remove images (layers still in use stay)")
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp.add_argument("-f", "--force", action="store_true", help="remove every tag of an ID")
    sp = add("prune", cmd_prune, "Remove layers no image or cache entry uses, and debris")
    sp.add_argument("-a", "--all", action="store_true", help="also drop every cache entry")
    add("du", cmd_du, "Show each layer's size and how many images share it")
    sp = add("info", cmd_info, "Show how layerbuild runs here (root or rootless, overlay, "
             "user namespaces, subordinate ids), with the fix for each missing part")
    sp.set_defaults(no_store=True)
    return p


_TERMINATED: list[int] = []
"""The signal that asked this process to stop, once one has."""


def _on_signal(signum: int, _frame: object) -> None:
    """SIGTERM takes Ctrl-C's path: the running steps are killed, their mounts and staging
    dirs go, and the command says where it stopped. Once: a second one waits for that."""
    import signal

    signal.signal(signum, signal.SIG_IGN)
    _TERMINATED.append(signum)
    raise KeyboardInterrupt()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    import signal

    args = parser(_command_of(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    if _in_main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
    try:
        if getattr(args, "no_store", False):
            return int(args.func(None, args))
        if os.geteuid() != 0:  # a user who is not root works in a user namespace of their own
            from layerbuild.userns import enter

            enter()
        store = _open_store(Path(args.root))
        return int(args.func(store, args))
    except LayerbuildError as exc:
        print(f"layerbuild: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        where = f" at {exc}" if str(exc) else ""
        if _TERMINATED:  # 128 + the signal, as the Docker CLI exits when signalled
            print(f"layerbuild: terminated{where}", file=sys.stderr)
            return 128 + _TERMINATED[0]
        print(f"layerbuild: interrupted{where}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except OSError as exc:
        print(f"layerbuild: error: {os_error_text(exc)}{_denied_hint(exc, args)}",
              file=sys.stderr)
        return 1


COMMANDS = ("build", "import", "load", "save", "images", "inspect", "history", "diff", "pull",
            "push", "login", "logout", "tag", "rmi", "prune", "du", "info")


def _command_of(argv: Sequence[str]) -> str | None:
    """The command a command line names after the global options; None when it names none
    plainly (the whole parser then reads it, and says what is wrong)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        i += 2 if argv[i] == "--root" else 1
    return argv[i] if i < len(argv) and argv[i] in COMMANDS else None


def _in_main_thread() -> bool:
    """Whether this is the main thread (the only one that may set signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()


def _open_store(root: Path) -> Store:
    """The store at `root`, its debris removed; one it cannot use says whose it is."""
    try:
        store = Store(root, notice=_notice)
    except StoreError as exc:
        if "Permission denied" not in str(exc):
            raise
        from layerbuild.privilege import store_hint

        raise StoreError(f"{exc}{store_hint(root)}") from None
    store.tidy()
    return store


def _denied_hint(exc: OSError, args: argparse.Namespace) -> str:
    """For a user who is not root denied something in the store: what to do."""
    from layerbuild.privilege import is_denied, store_hint

    root = getattr(args, "root", None)
    return store_hint(Path(root)) if root and is_denied(exc, Path(root)) else ""


if __name__ == "__main__":
    sys.exit(main())
