"""The images a build stands on (`FROM`, `COPY --from`, `RUN --mount=from=`): from the store,
pulled from their registry when missing, or always with `--pull=always`.

    never    the store's image, or an error naming `layerbuild pull`
    missing  the store's image; a reference it lacks is pulled (the default, as Docker's)
    always   every reference is pulled once per build (its tag re-resolved), as BuildKit's
             `--pull`; what the registry has now is what the build uses

Pulling is an effect passed in (`Puller`): the engine's tests give none, a dry run pulls
nothing. A base of another platform is pulled for that platform and stored without a tag, so
it never replaces the host's image of the same name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from layerbuild.errors import ImageNotFound, LayerbuildError
from layerbuild.image import Image
from layerbuild.store import Store

POLICIES = ("missing", "always", "never")
Puller = Callable[[str, str | None], Image]
"""Pull a reference (for a platform, None for the host's) into the store; the stored image."""


class Bases:
    """Finds (and pulls) the images a build names, each reference once."""

    def __init__(self, store: Store, policy: str = "missing", puller: Puller | None = None,
                 platform: str | None = None) -> None:
        if policy not in POLICIES:
            raise LayerbuildError(f"--pull={policy}: expected one of {', '.join(POLICIES)}")
        self.store = store
        self.policy = policy
        self.puller = puller
        self.platform = platform
        self._pulled: dict[tuple[str, str | None], Image] = {}
        self._locks: dict[tuple[str, str | None], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, ref: str, platform: str | None = None) -> Image:
        """The image `ref` names for `platform` (default: the build's), pulled as the policy
        says; ImageNotFound or the registry's error otherwise."""
        platform = platform or self.platform
        key = (ref, platform)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # stages run in parallel: one pull of a reference, the others wait for it
            if key in self._pulled:
                return self._pulled[key]
            if self.policy != "always" and platform is None:
                try:
                    return self.store.get_image(ref)
                except ImageNotFound:
                    if self.policy == "never" or self.puller is None:
                        raise
            elif self.puller is None:
                raise ImageNotFound(f"no such image: {ref} (and no registry to pull it from)")
            image = self._pulled[key] = self.puller(ref, platform)
            return image

    def stored(self, ref: str) -> Image | None:
        """The image `ref` names now (pulled by this build, or stored), pulling nothing."""
        for (name, _platform), image in self._pulled.items():
            if name == ref:
                return image
        try:
            return self.store.get_image(ref)
        except LayerbuildError:
            return None


def registry_puller(store: Store, note: Callable[[str], None],
                    emit: Callable[[object], None]) -> Puller:
    """A puller through the registries (settings and credentials as configured)."""
    session = None

    def pull(ref: str, platform: str | None) -> Image:
        nonlocal session
        from layerbuild.events import Events
        from layerbuild.reference import Reference
        from layerbuild.registry import Platform, Registry

        if session is None:
            session = Registry(notice=note)

        class _Forward(Events):
            def emit(self, event: object) -> None:  # type: ignore[override]
                emit(event)

        wanted = Platform.parse(platform) if platform else None
        host = wanted is None or wanted.matches(Platform.host())
        parsed = Reference.parse(ref, digests=True)
        return session.pull(store, parsed, wanted, _Forward(), names=host).image

    return pull
