"""Building, loading, saving, importing and inspecting images from Python, as the CLI does.

>>> image = build("examples/hello", tags=["hello:1"], store="/tmp/store")  # doctest: +SKIP
>>> save(["hello:1"], "hello.tar", store="/tmp/store")                     # doctest: +SKIP
>>> load("hello.tar", store="/tmp/other")[0].image.id == image.id          # doctest: +SKIP
True

Every function takes `store=`: a `Store`, the path of one, or None for $LAYERBUILD_ROOT (else
/var/lib/layerbuild). The modules behind each function load when it is called, so importing
this one stays cheap and a build that nothing changed loads no build engine.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild.errors import (
    BuildfileError,
    DigestMismatch,
    FormatError,
    ImageNotFound,
    LayerbuildError,
    StepFailed,
    StoreError,
    UnsafePath,
)
from layerbuild.image import Image
from layerbuild.reference import InvalidReference, Reference
from layerbuild.store import Store
from layerbuild.store import default_root as store_default_root

if TYPE_CHECKING:
    from layerbuild.archive.load import Loadable
    from layerbuild.builder.outputs import Output
    from layerbuild.cache.options import CacheSpec
    from layerbuild.events import Events
    from layerbuild.registry import Pulled, Pushed, Registry
    from layerbuild.request import BuildRequest

StoreLike = Store | str | os.PathLike[str] | None
ImageRef = str | Reference | Image
BUILDFILE_NAMES = ("Buildfile", "Buildfile.j2", "Dockerfile")

__all__ = ["BUILDFILE_NAMES", "BuildRequest", "BuildfileError", "DigestMismatch", "Events",
           "FormatError", "Image", "ImageNotFound", "InvalidReference", "LayerbuildError", "Output",
           "Reference", "StepFailed", "Store", "StoreError", "UnsafePath", "build",
           "default_root", "enter_rootless", "find_buildfile", "import_rootfs", "inspect",
           "inspect_image", "load", "login", "logout", "open_store", "pull", "push",
           "registry_session", "resolve_epoch", "run_build", "save"]


# Loaded on first use: Output's module loads the archive code, and `layerbuild --help` needs
# neither of them.
_LAZY = {"Output": "layerbuild.builder.outputs", "BuildRequest": "layerbuild.request",
         "Events": "layerbuild.events"}


def __getattr__(name: str) -> Any:
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


# --- stores ------------------------------------------------------------------------------


def default_root() -> Path:
    """The store directory used when none is given: $LAYERBUILD_ROOT, else root's
    /var/lib/layerbuild, or a user's own `$XDG_DATA_HOME/layerbuild`."""
    return store_default_root()


def enter_rootless() -> None:
    """For a user who is not root: enter the user namespace in which layerbuild works
    rootless (the user is its root; their /etc/subuid and /etc/subgid ranges are the other
    ids). Done by `open_store` when needed; a program with threads calls it before starting
    them. Nothing for root, or when already done."""
    from layerbuild.userns import enter

    enter()


def open_store(root: str | os.PathLike[str] | None = None) -> Store:
    """The store at `root` (default: `default_root()`), with what crashed writers left removed;
    a user who is not root works in their user namespace from then on (`enter_rootless`)."""
    chosen = default_root() if root is None else Path(root)
    enter_rootless()
    store = Store(chosen)
    store.tidy()
    return store


def _store(store: StoreLike) -> Store:
    return store if isinstance(store, Store) else open_store(store)


def _ref_text(image: ImageRef) -> str:
    return str(image.id) if isinstance(image, Image) else str(image)


# --- inputs ------------------------------------------------------------------------------


def find_buildfile(context: str | os.PathLike[str],
                   buildfile: str | os.PathLike[str] | None = None) -> Path:
    """`buildfile` if given ("-" is stdin), else the first of BUILDFILE_NAMES in `context`."""
    if buildfile:
        return Path(buildfile) if str(buildfile) != "-" else Path("/dev/stdin")
    for name in BUILDFILE_NAMES:
        if (Path(context) / name).is_file():
            return Path(context) / name
    raise LayerbuildError(f"no Buildfile (or Dockerfile) in {Path(context)}; use -f FILE")


def read_stream(path: Path) -> bytes | None:
    """The bytes of a Buildfile read from stdin (`-`, `/dev/stdin`) or another stream (a pipe,
    a terminal), read once and at most one byte over the size limit; None for a regular file
    (read when built).

    A stream cannot be read twice, so its bytes go to both the build record and the engine.
    """
    import stat

    stdin = str(path) == "/dev/stdin"
    try:
        if not stdin and stat.S_ISREG(os.stat(path).st_mode):
            return None
        from layerbuild.buildfile.limits import MAX_BUILDFILE_BYTES  # streams only

        if stdin:  # fd 0 itself: a socket cannot be opened again
            with open(0, "rb", closefd=False) as f:
                return f.read(MAX_BUILDFILE_BYTES + 1)
        with open(path, "rb") as f:
            return f.read(MAX_BUILDFILE_BYTES + 1)
    except FileNotFoundError:
        return None  # the engine says so, as for any Buildfile it cannot read
    except OSError as exc:
        raise LayerbuildError(f"cannot read {path}: {exc.strerror}") from None


def resolve_epoch(value: int | str | None = None) -> int | None:
    """SOURCE_DATE_EPOCH as a number: `value` if set, else the environment's; None if neither."""
    if value is None or value == "":
        value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise LayerbuildError(f"SOURCE_DATE_EPOCH must be an integer, not {value!r}") from None


def _output(value: Output | str) -> Output:
    from layerbuild.builder.outputs import parse_output

    return parse_output(value) if isinstance(value, str) else value


# --- building ----------------------------------------------------------------------------


def build(context: str | os.PathLike[str], *, tags: Iterable[str | Reference] = (),
          buildfile: str | os.PathLike[str] | None = None,
          build_args: Mapping[str, str] | None = None, target: str | None = None,
          outputs: Iterable[Output | str] = (), store: StoreLike = None,
          events: Events | None = None, no_cache: bool = False,
          no_cache_filter: Iterable[str] = (), dry_run: bool = False,
          source_date_epoch: int | str | None = None, network: str = "default",
          allow: Iterable[str] = (),
          secrets: Mapping[str, str | os.PathLike[str]] | None = None,
          template: bool | None = None, template_vars: Mapping[str, str] | None = None,
          seccomp: bool = True, pull: str = "missing", platform: str | None = None,
          push: bool = False, cache_from: Iterable[str | CacheSpec] = (),
          cache_to: Iterable[str | CacheSpec] = ()) -> Image | None:
    """Build `context` as `layerbuild build` does, tag and write the image; None on a dry run.

    `network` is RUN's default network: "default" (a private namespace with outbound access),
    "none" or "host", which, like any `RUN --network=host`, needs "network.host" in `allow`.
    RUN steps run under Docker's default seccomp profile; `seccomp=False` (the CLI's
    `--security-opt seccomp=unconfined`) runs them without a filter.
    Bases the store lacks are pulled (`pull`: "missing", "always" re-resolves every tag,
    "never"), for `platform` when given; with `push`, the image goes to each tag's registry.
    `cache_from` and `cache_to` are `--cache-from` / `--cache-to` values (or `CacheSpec`s):
    caches of other machines' builds to take steps from, and where to export this one's.
    """
    from layerbuild.events import Events
    from layerbuild.request import BuildRequest, check_allow

    check_allow(tuple(allow))

    wanted = [_output(o) for o in outputs]
    if wanted:
        from layerbuild.builder.outputs import check_outputs

        check_outputs(wanted)
    path = find_buildfile(context, buildfile)
    request = BuildRequest(
        context=Path(context), buildfile=path, buildfile_data=read_stream(path),
        tags=tuple(t if isinstance(t, Reference) else Reference.parse(t) for t in tags),
        build_args=dict(build_args or {}), target=target, template=template,
        template_vars=dict(template_vars or {}),
        source_date_epoch=resolve_epoch(source_date_epoch), network=network,
        allow=tuple(allow), no_cache=no_cache,
        no_cache_filter=tuple(s.lower() for s in no_cache_filter),
        dry_run=dry_run, secrets={k: Path(v) for k, v in (secrets or {}).items()},
        seccomp=seccomp, pull=pull, platform=platform,
        cache_from=tuple(_cache_spec(c, False) for c in cache_from),
        cache_to=tuple(_cache_spec(c, True) for c in cache_to))
    request.check_network(network)
    if push and not request.tags:
        raise LayerbuildError("--push needs a name to push to: give -t NAME[:TAG]")
    if pull not in ("missing", "always", "never"):
        raise LayerbuildError(f"--pull={pull}: expected missing, always or never")
    target_store = _store(store)
    image = run_build(target_store, request, events or Events())
    if image is not None and wanted:
        from layerbuild.builder.outputs import write_output

        for output in wanted:
            write_output(target_store, image, output, [t.familiar for t in request.tags],
                         events)
    if image is not None and push:
        for tag in request.tags:
            _push_stored(target_store, image, tag, "gzip", events, None)
    return image


def _cache_spec(value: str | CacheSpec, exporting: bool) -> CacheSpec:
    from layerbuild.cache.options import parse_cache_spec

    return value if not isinstance(value, str) else parse_cache_spec(value, exporting)


def run_build(store: Store, request: BuildRequest, events: Events) -> Image | None:
    """Run a build request: its build record's image when nothing changed, else the engine's."""
    from layerbuild.cache.records import replay

    # Nothing changed since the last build of this: no need to load the build engine (unless
    # every tag is to be asked again of its registry).
    image = replay(store, request, events) if request.pull != "always" else None
    if image is None:
        from layerbuild.builder.engine import build as engine_build

        image = engine_build(store, request, events)
    return image


# --- archives ----------------------------------------------------------------------------


def _silent(_line: str) -> None:
    pass


def load(archive: str | os.PathLike[str], *, store: StoreLike = None,
         progress: Callable[[str], None] | None = None) -> list[Loadable]:
    """Store every image of an archive or OCI layout ("-" is stdin); each item has
    `.image` and `.tags`; `progress` gets a line per layer."""
    from layerbuild.archive.load import find_images, open_archive, store_images

    target = _store(store)
    with target.staging() as stage:
        source = open_archive(str(archive), stage)
        try:
            images = find_images(source)
            store_images(target, source, images, progress or _silent)
        finally:
            source.close()
    return images


def save(images: ImageRef | Sequence[ImageRef], output: str | os.PathLike[str], *,
         store: StoreLike = None, compression: str = "none",
         notice: Callable[[str], None] | None = None) -> None:
    """Write images to one archive file ("-" is stdout): an OCI layout plus `manifest.json`;
    `notice` hears of tags that several of the images share (tools that pick an image by
    its OCI `ref.name` alone cannot tell them apart)."""
    from layerbuild.archive.save import save as save_archive

    refs = [images] if isinstance(images, str | Reference | Image) else list(images)
    save_archive(_store(store), [_ref_text(r) for r in refs], str(output), compression, notice)


def import_rootfs(tarball: str | os.PathLike[str], tag: str | Reference | None = None, *,
                  store: StoreLike = None, source_date_epoch: int | str | None = None,
                  message: str | None = None) -> Image:
    """Store a root filesystem tarball ("-" is stdin) as a one-layer image, like `docker
    import`."""
    from layerbuild.archive.rootfs import import_rootfs as import_tarball

    ref = Reference.parse(tag) if isinstance(tag, str) else tag
    epoch = resolve_epoch(source_date_epoch)
    return import_tarball(_store(store), str(tarball), ref, epoch, message)


# --- registries --------------------------------------------------------------------------


def registry_session(notice: Callable[[str], None] | None = None) -> Registry:
    """A registry session with the settings in force (registries.toml, Docker's config)."""
    from layerbuild.registry import Registry as Session

    return Session(notice=notice)


def _remote(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else Reference.parse(ref, digests=True)


def pull(ref: str | Reference, *, store: StoreLike = None, platform: str | None = None,
         events: Events | None = None, registry: Registry | None = None) -> Pulled:
    """Pull an image from its registry into the store (its tag and RepoDigest name it)."""
    from layerbuild.registry import Platform

    session = registry or registry_session(events.note if events else None)
    wanted = Platform.parse(platform) if platform else None
    return session.pull(_store(store), _remote(ref), wanted, events)


def push(image: ImageRef, ref: str | Reference | None = None, *, store: StoreLike = None,
         compression: str = "gzip", events: Events | None = None,
         registry: Registry | None = None) -> Pushed:
    """Push a stored image to `ref` (default: the name `image` is given by)."""
    target_store = _store(store)
    if ref is None:
        if isinstance(image, Image):
            raise LayerbuildError("push: name the reference to push an image object to")
        ref = image
    if compression not in ("gzip", "zstd"):
        raise LayerbuildError(f"push: compression must be gzip or zstd, not {compression!r}")
    found = target_store.get_image(_ref_text(image))
    return _push_stored(target_store, found, _remote(ref), compression, events, registry)


def _push_stored(store: Store, image: Image, ref: Reference, compression: str,
                 events: Events | None, registry: Registry | None) -> Pushed:
    session = registry or registry_session(events.note if events else None)
    return session.push(store, image, ref, compression, events)


def login(registry: str, username: str, password: str) -> str:
    """Check credentials against a registry and keep them in Docker's config; returns where."""
    return registry_session().login(_registry_name(registry), username, password)


def logout(registry: str) -> bool:
    """Forget a registry's credentials; whether there were any."""
    return registry_session().logout(_registry_name(registry))


def _registry_name(text: str) -> str:
    from layerbuild.reference import DOCKER_HUB

    name = text.strip().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return DOCKER_HUB if name in ("", "index.docker.io", "registry-1.docker.io") else name


# --- inspecting --------------------------------------------------------------------------


def inspect(image: ImageRef, *, store: StoreLike = None) -> dict[str, Any]:
    """What `layerbuild inspect` shows of one image, as a dict."""
    return inspect_image(_store(store), _ref_text(image))


def inspect_image(store: Store, ref: str) -> dict[str, Any]:
    """Docker-like inspect data for one image, plus where its layers live in the store."""
    image_id = store.resolve(ref)
    image = store.image_by_id(image_id)
    config = image.config
    tags = sorted(t for t, i in store.tags().items() if i == image_id)
    stored = store.image_layers(image)
    layers = [{"ChainID": str(layer.chain_id), "DiffID": str(layer.diff_id),
               "CacheID": layer.cache_id, "DiffDir": str(layer.diff_dir), "Size": layer.size}
              for layer in stored]
    return {
        "Id": str(image_id), "RepoTags": tags,
        "RepoDigests": store.repo_digests(image_id), "Parent": "",
        "Comment": config.history[-1].comment or "" if config.history else "",
        "Created": config.created, "Author": config.author or "",
        "Architecture": config.architecture, "Os": config.os,
        **({"Variant": config.variant} if config.variant else {}),
        "Config": dict(config.config), "Size": sum(layer.size for layer in stored),
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in config.diff_ids]},
        "Store": {"Layers": layers},
    }
