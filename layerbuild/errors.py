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


def at_instruction(exc: LayerbuildError, path: str, line: int,
                   instruction: str) -> LayerbuildError:
    """`exc` as raised while building the instruction at `path:line`, naming where.

    An error that names its line already is returned as it is; a StepFailed stays a
    StepFailed (the step ran and failed); any other becomes a BuildfileError of that line.

    >>> str(at_instruction(LayerbuildError("f: not found"), "Buildfile", 2, "COPY"))
    'Buildfile:2: COPY: f: not found'
    """
    if isinstance(exc, BuildfileError) and exc.line is not None:
        return exc
    if str(exc).startswith(f"{path}:{line}:"):
        return exc
    if isinstance(exc, StepFailed):
        return StepFailed(f"{path}:{line}: {instruction}: {exc}")
    message = exc.reason if isinstance(exc, BuildfileError) else str(exc)
    return BuildfileError(message, path, line, instruction)


def os_error_text(exc: OSError) -> str:
    """`<what>: <path>: <reason>` for an OSError: the operations noted on it (outermost
    first), the paths it names, and the reason in lower case, as Docker words it.

    >>> os_error_text(PermissionError(13, "Permission denied", "/var/lib/layerbuild"))
    '/var/lib/layerbuild: permission denied'
    """
    notes = [n.removeprefix("while ") for n in reversed(getattr(exc, "__notes__", []))]
    paths = [p.decode("utf-8", "surrogateescape") if isinstance(p, bytes) else str(p)
             for p in (exc.filename, exc.filename2) if p is not None]
    reason = exc.strerror or str(exc) or type(exc).__name__
    return ": ".join([*notes, *paths, reason[:1].lower() + reason[1:]])
