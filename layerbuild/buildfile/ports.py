"""EXPOSE port specifications, read as BuildKit reads them (``dispatchExpose``).

A spec is ``[[ip:]host-port:]container-port[/proto]``; each port part may be a range
(``8000-8010``). Only the container ports are exposed; a spec with an IP address or a host
port is accepted, with a warning, as BuildKit does (its ``ExposeInvalidFormat`` check), since
publishing is for ``docker run -p`` to decide. The protocol is ``tcp``, ``udp`` or ``sctp``
in any case, written lower-case.

    >>> parse_port_spec("127.0.0.1:8080-8081:80-81/UDP").ports
    ('80/udp', '81/udp')
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["PortSpec", "host_part_warning", "parse_port_spec", "proto_casing_warning"]

_PROTOCOLS = ("tcp", "udp", "sctp")
_MAX_PORT = 65535


@dataclass(frozen=True)
class PortSpec:
    """One EXPOSE word: what was written, the container ports it exposes (``80/tcp``),
    whether it names an IP address or a host port, and whether its protocol has an upper-case
    letter (``80/TCP``)."""

    text: str
    ports: tuple[str, ...]
    host_part: bool
    proto_casing: bool = False


def host_part_warning(spec: PortSpec) -> str:
    """BuildKit's warning for a spec with an IP address or a host port."""
    return ("EXPOSE instruction should not define an IP address or host-port mapping, found "
            f"'{spec.text}'")


def proto_casing_warning(spec: PortSpec) -> str:
    """BuildKit's warning for a spec whose protocol is not written in lower case."""
    return f"Defined protocol '{spec.text}' in EXPOSE instruction should be lowercase"


def parse_port_spec(text: str) -> PortSpec:
    """Read one spec. Raises ValueError, worded as BuildKit words it, for a bad one."""
    ip, host_port, container = _split_parts(text)
    port, _, written = container.partition("/")
    if not port:
        raise ValueError(f"invalid port {text!r}: no port specified")
    proto = written.lower() or "tcp"
    if proto not in _PROTOCOLS:
        raise ValueError(f"invalid port {text!r}: invalid proto: {written}")
    if ip:
        _check_ip(ip)
    low, high = _port_range(port, "containerPort")
    if host_port:
        host_low, host_high = _port_range(host_port, "hostPort")
        # A host range for a single container port is a range to pick from; else they pair.
        if high - low != host_high - host_low and high != low:
            raise ValueError(f"invalid ranges specified for container and host Ports: {port} "
                             f"and {host_port}")
    ports = tuple(f"{number}/{proto}" for number in range(low, high + 1))
    return PortSpec(text, ports, bool(ip or host_port), written != written.lower())


def _split_parts(text: str) -> tuple[str, str, str]:
    """(ip, host port, container port): an IPv6 address keeps its colons."""
    parts = text.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _check_ip(ip: str) -> None:
    bare = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(f"invalid IP address: {ip}") from None


def _port_range(text: str, what: str) -> tuple[int, int]:
    start, dash, end = text.partition("-")
    low = _port_number(start, what, text)
    high = _port_number(end, what, text) if dash and end != start else low
    if high < low:
        raise ValueError(f"invalid {what}: {text}: the range ends before it starts")
    return low, high


def _port_number(text: str, what: str, whole: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_PORT:
        raise ValueError(f"invalid {what}: {whole} (ports are numbers from 0 to {_MAX_PORT})")
    return int(text)
