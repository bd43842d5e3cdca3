"""Instruction flags (``--name=value``) checked against what each instruction accepts.

Also the two value syntaxes flags use: Go durations (``1m30s``, as HEALTHCHECK takes them)
and byte sizes (``64m``, as a tmpfs mount takes them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

__all__ = [
    "FlagError",
    "FlagKind",
    "Flags",
    "parse_duration",
    "parse_flags",
    "parse_size",
]

FlagKind = Literal["bool", "string", "strings"]

_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"(\d*(?:\.\d*)?)(ns|us|µs|μs|ms|s|m|h)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?", re.IGNORECASE)
_INT64_MAX = 2**63 - 1


class FlagError(ValueError):
    """A flag the instruction does not take, or a value it cannot use."""


@dataclass(frozen=True)
class Flags:
    """The flags given to one instruction, by name (without the leading dashes)."""

    values: Mapping[str, bool | str | tuple[str, ...]]

    def string(self, name: str) -> str | None:
        """A single-valued flag's value, or None when it was not given."""
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    def strings(self, name: str) -> tuple[str, ...]:
        """Every value of a repeatable flag, in order."""
        value = self.values.get(name, ())
        return value if isinstance(value, tuple) else ()

    def boolean(self, name: str) -> bool:
        """A boolean flag: true when given bare or as ``=true``."""
        return self.values.get(name) is True

    def tristate(self, name: str) -> bool | None:
        """A boolean flag whose absence means something else: None when it was not given."""
        value = self.values.get(name)
        return value if isinstance(value, bool) else None


def parse_flags(raw: Sequence[str], accepted: Mapping[str, FlagKind]) -> Flags:
    """Check raw ``--name[=value]`` words against ``accepted`` and collect their values.

    Only ``strings`` flags may repeat; a ``bool`` flag may be bare or ``=true``/``=false``;
    ``string`` and ``strings`` flags need ``=value``. Raises :class:`FlagError`.
    """
    values: dict[str, bool | str | tuple[str, ...]] = {}
    for word in raw:
        if not word.startswith("--"):
            raise FlagError(f"flag should start with --: {word}")
        name, has_value, value = word[2:].partition("=")
        kind = accepted.get(name)
        if kind is None:
            known = ", ".join(f"--{k}" for k in sorted(accepted)) or "none"
            raise FlagError(f"unknown flag: --{name} (accepted: {known})")
        if name in values and kind != "strings":
            raise FlagError(f"duplicate flag specified: --{name}")
        if kind == "bool":
            values[name] = _boolean(name, has_value, value)
        elif not has_value:
            raise FlagError(f"missing a value on flag: --{name}")
        elif kind == "string":
            values[name] = value
        else:
            previous = values.get(name, ())
            assert isinstance(previous, tuple)
            values[name] = (*previous, value)
    return Flags(values)


def _boolean(name: str, has_value: str, value: str) -> bool:
    if not has_value:
        return True
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value == "":
        raise FlagError(f"missing a value on flag: --{name}")
    raise FlagError(f"expecting boolean value for flag --{name}, not: {value}")


def parse_duration(text: str) -> int:
    """A Go duration (``300ms``, ``1h30m``, ``1.5s``, ``0``) in nanoseconds.

    Raises FlagError for anything Go's ``time.ParseDuration`` would refuse.
    """
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    if body == "0":
        return 0
    if not body:
        raise FlagError(f"invalid duration {text!r}")
    total = Decimal(0)
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None or match.group(1) in ("", "."):
            raise FlagError(f"invalid duration {text!r} (use a number and a unit: ns, us, ms, "
                            "s, m, h)")
        try:
            total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        except InvalidOperation:
            raise FlagError(f"invalid duration {text!r}") from None
        pos = match.end()
    nanoseconds = int(total)
    if nanoseconds > _INT64_MAX:
        raise FlagError(f"invalid duration {text!r}: out of range")
    return sign * nanoseconds


def parse_size(text: str) -> int:
    """A byte size as Docker reads memory sizes: ``512``, ``64m``, ``1.5g``, ``100KiB``.

    Multipliers are binary (k = 1024). Raises FlagError.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise FlagError(f"invalid size {text!r} (e.g. 64m, 1g)")
    power = " kmgtp".index(match.group(2).lower() or " ")
    return int(Decimal(match.group(1)) * (1024 ** power))
