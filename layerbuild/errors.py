"""Every error layerbuild raises on purpose derives from one root class."""

from __future__ import annotations


class LayerbuildError(Exception):
    """Root of every error layerbuild reports to a user as one clear line."""


class BuildfileError(LayerbuildError):
    """A Buildfile that cannot be parsed or rendered; names the file and line."""

    def __init__(self, message: str, path: str = "Buildfile", line: int | None = None,
                 instruction: str | None = None) -> None:
        self.path = path
        self.line = line
        self.instruction = instruction
        self.reason = message
        where = f"{path}:{line}" if line is not None else path
        what = f" {instruction}:" if instruction else ""
        super().__init__(f"{where}:{what} {message}")


class StepFailed(LayerbuildError):
    """A build step whose process failed."""


class DigestMismatch(LayerbuildError):
    """Content whose hash is not the digest that names it."""


class FormatError(LayerbuildError):
    """An archive, manifest, config or layer that is malformed."""


class UnsafePath(FormatError):
    """An archive entry or image path that would escape its root."""


class StoreError(LayerbuildError):
    """The local store cannot do what was asked (missing image, not writable, …)."""


class ImageNotFound(StoreError):
    """No image by that name or ID in the store."""


class RegistryError(LayerbuildError):
    """A registry answered with an error or could not be reached."""
