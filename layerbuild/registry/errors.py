"""What a registry's refusal means, in one line: the errors and their messages.

Registries answer errors as `{"errors": [{"code": …, "message": …}]}` (distribution spec);
the message is built from the code, the message and the HTTP status, never from headers or
URLs (they may carry tokens).
"""

from __future__ import annotations

import json

from layerbuild.errors import RegistryError


class Unauthorized(RegistryError):
    """401: no or wrong credentials."""


class Denied(RegistryError):
    """403: the credentials do not allow this."""


class NotFound(RegistryError):
    """404: no such repository, tag, manifest or blob."""


class Unreachable(RegistryError):
    """The registry could not be reached (after the retries)."""


_KINDS: dict[int, type[RegistryError]] = {401: Unauthorized, 403: Denied, 404: NotFound}


def describe(status: int, body: bytes) -> str:
    """`code: message` of a registry's error body, or the HTTP status."""
    try:
        errors = json.loads(body.decode("utf-8", "replace"))["errors"]
        first = errors[0]
        code = str(first.get("code", "")).lower().replace("_", " ")
        message = str(first.get("message", "")).strip()
        text = message if code and message.lower().startswith(code) else (
            f"{code}: {message}" if code and message else code or message)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = ""
    if not text:
        text = {401: "unauthorized: authentication required", 403: "denied: requested access "
                "to the resource is denied", 404: "not found", 429: "too many requests"}.get(
                    status, "unexpected answer")
    return f"{text} (HTTP {status})"


def from_status(what: str, status: int, body: bytes) -> RegistryError:
    """The error for an answer with this status about `what` (e.g. `127.0.0.1:5000/a:1`)."""
    kind = _KINDS.get(status, RegistryError)
    return kind(f"{what}: {describe(status, body[:64 << 10])}")
