"""HEALTHCHECK arguments: ``NONE``, or ``[flags] CMD command``, as Docker stores them.

Docker keeps the test as ``["NONE"]``, ``["CMD-SHELL", command]`` (shell form) or
``["CMD", arg, ...]`` (exec form), and durations as nanoseconds, 0 meaning "not set".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerbuild.buildfile.flags import FlagKind, Flags, parse_duration
from layerbuild.buildfile.parser import parse_json_array

__all__ = ["HEALTHCHECK_FLAGS", "HealthSettings", "healthcheck_fields"]

HEALTHCHECK_FLAGS: dict[str, FlagKind] = {
    name: "string" for name in ("interval", "timeout", "start-period", "start-interval", "retries")
}
_MIN_DURATION = 1_000_000  # 1ms: Docker refuses shorter non-zero durations
_WHITESPACE = re.compile(r"\s+")
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class HealthSettings:
    """The values of one HEALTHCHECK, durations in nanoseconds (0 = not set)."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


def healthcheck_fields(rest: str, flags: Flags) -> HealthSettings:
    """The settings for a HEALTHCHECK argument text and its checked flags.

    Raises ValueError with Docker's wording for a missing or unknown type, extra arguments
    after NONE, a missing command, or a bad duration or retry count.
    """
    parts = _WHITESPACE.split(rest.strip(), maxsplit=1)
    kind = parts[0].upper()
    command = parts[1].strip() if len(parts) > 1 else ""
    if not kind:
        raise ValueError("HEALTHCHECK requires at least one argument (NONE or CMD ...)")
    if kind == "NONE":
        if command:
            raise ValueError("HEALTHCHECK NONE takes no arguments")
        return HealthSettings(("NONE",))
    if kind != "CMD":
        raise ValueError(f"unknown type {kind!r} in HEALTHCHECK (try CMD)")
    exec_form = parse_json_array(command)
    if not command or (exec_form is not None and not exec_form):
        raise ValueError("missing command after HEALTHCHECK CMD")
    test = ("CMD", *exec_form) if exec_form is not None else ("CMD-SHELL", command)
    return HealthSettings(
        test,
        interval=_duration(flags.string("interval"), "interval"),
        timeout=_duration(flags.string("timeout"), "timeout"),
        start_period=_duration(flags.string("start-period"), "start-period"),
        start_interval=_duration(flags.string("start-interval"), "start-interval"),
        retries=_retries(flags.string("retries")),
    )


def _duration(text: str | None, name: str) -> int:
    if not text:
        return 0
    value = parse_duration(text)
    if value < 0:
        raise ValueError(f"--{name} cannot be negative (got {text})")
    if 0 < value < _MIN_DURATION:
        raise ValueError(f"--{name} cannot be less than 1ms (got {text})")
    return value


def _retries(text: str | None) -> int:
    if not text:
        return 0
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"--retries must be a whole number, not {text!r}")
    retries = int(text)
    if retries < 0:
        raise ValueError(f"--retries cannot be negative ({retries})")
    return retries
