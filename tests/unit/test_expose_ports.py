"""EXPOSE port specs as BuildKit reads them: the container ports of every form, with a
warning for IP addresses and host ports, and BuildKit's errors for bad specs."""

from __future__ import annotations

import pytest

from layerbuild.builder.config import apply_metadata, created_by, expose_warnings
from layerbuild.buildfile import Expose, parse_buildfile, parse_port_spec
from layerbuild.errors import BuildfileError
from layerbuild.image import empty_config


@pytest.mark.parametrize(("text", "ports", "host_part"), [
    ("80", ("80/tcp",), False),
    ("53/UDP", ("53/udp",), False),
    ("9000/sctp", ("9000/sctp",), False),
    ("8000-8002", ("8000/tcp", "8001/tcp", "8002/tcp"), False),
    ("80-80/udp", ("80/udp",), False),
    ("1234:1234/udp", ("1234/udp",), True),
    ("0.0.0.0:1234:1234/tcp", ("1234/tcp",), True),
    ("[::1]:80:80", ("80/tcp",), True),
    ("::1:8080:80", ("80/tcp",), True),
    ("127.0.0.1::80", ("80/tcp",), True),
    ("8000-8001:80-81", ("80/tcp", "81/tcp"), True),
    ("10.0.0.1:9000-9001:90-91/udp", ("90/udp", "91/udp"), True),
    ("8000-8010:80", ("80/tcp",), True),  # a host range to pick one port from
    ("0", ("0/tcp",), False),
    ("65535", ("65535/tcp",), False),
])
def test_container_ports(text: str, ports: tuple[str, ...], host_part: bool) -> None:
    spec = parse_port_spec(text)
    assert (spec.text, spec.ports, spec.host_part) == (text, ports, host_part)


@pytest.mark.parametrize(("text", "message"), [
    ("", "no port specified"),
    ("/tcp", "no port specified"),
    ("80/icmp", "invalid proto: icmp"),
    ("http", "invalid containerPort: http"),
    ("65536", "invalid containerPort: 65536"),
    ("90-80", "invalid containerPort: 90-80"),
    ("80-", "invalid containerPort: 80-"),
    ("1-2-3", "invalid containerPort: 1-2-3"),
    ("x:80", "invalid hostPort: x"),
    ("nope:80:80", "invalid IP address: nope"),
    ("[::1:80:80", "invalid IP address: [::1"),
    ("8000-8001:80-82", "invalid ranges specified for container and host Ports: 80-82 and "
                        "8000-8001"),
])
def test_bad_specs(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_port_spec(text)


def expose(line: str) -> Expose:
    instr = parse_buildfile(f"FROM a\n{line}\n", "Buildfile").stages[0].instructions[0]
    assert isinstance(instr, Expose)
    return instr


def test_host_parts_are_accepted_with_a_warning_keeping_the_container_port() -> None:
    instr = expose("EXPOSE 0.0.0.0:1234:1234/tcp [::1]:80:80 1234:1234/udp 443 "
                   "127.0.0.1:7000-7001:7000-7001")
    config = apply_metadata(empty_config(), instr, {})
    assert sorted(config.config["ExposedPorts"]) == [
        "1234/tcp", "1234/udp", "443/tcp", "7000/tcp", "7001/tcp", "80/tcp"]
    assert expose_warnings(instr, {}, path="dir/Buildfile") == [
        "warning: dir/Buildfile:2: EXPOSE instruction should not define an IP address or "
        f"host-port mapping, found '{spec}'"
        for spec in ("0.0.0.0:1234:1234/tcp", "[::1]:80:80", "1234:1234/udp",
                     "127.0.0.1:7000-7001:7000-7001")]
    assert created_by(instr, empty_config(), {}) == (
        "EXPOSE map[1234/tcp:{} 1234/udp:{} 443/tcp:{} 7000/tcp:{} 7001/tcp:{} 80/tcp:{}]")


def test_an_upper_case_protocol_is_lowered_with_buildkits_warning() -> None:
    instr = expose("EXPOSE 80/TCP 53/udp 0.0.0.0:443:443/Udp $P")
    env = {"P": "9000-9001/SCTP"}
    config = apply_metadata(empty_config(), instr, env)
    assert sorted(config.config["ExposedPorts"]) == [
        "443/udp", "53/udp", "80/tcp", "9000/sctp", "9001/sctp"]
    casing = "EXPOSE instruction should be lowercase"
    # Per spec as BuildKit checks it: the casing first, then the host part; the spec as
    # expanded, whole.
    assert expose_warnings(instr, env) == [
        f"warning: Buildfile:2: Defined protocol '80/TCP' in {casing}",
        f"warning: Buildfile:2: Defined protocol '0.0.0.0:443:443/Udp' in {casing}",
        "warning: Buildfile:2: EXPOSE instruction should not define an IP address or "
        "host-port mapping, found '0.0.0.0:443:443/Udp'",
        f"warning: Buildfile:2: Defined protocol '9000-9001/SCTP' in {casing}"]
    assert created_by(instr, empty_config(), env) == (
        "EXPOSE map[443/udp:{} 53/udp:{} 80/tcp:{} 9000/sctp:{} 9001/sctp:{}]")
    assert (parse_port_spec("80/tcp").proto_casing, parse_port_spec("80").proto_casing) == (
        False, False)


def test_a_bad_protocol_is_named_as_written() -> None:
    with pytest.raises(ValueError, match=r"invalid proto: ICMP$"):
        parse_port_spec("80/ICMP")


def test_a_variable_may_hold_several_ports() -> None:
    instr = expose("EXPOSE $PORTS 8080")
    env = {"PORTS": "80 443/udp"}
    config = apply_metadata(empty_config(), instr, env)
    assert sorted(config.config["ExposedPorts"]) == ["443/udp", "80/tcp", "8080/tcp"]
    assert created_by(instr, empty_config(), env) == "EXPOSE map[443/udp:{} 80/tcp:{} 8080/tcp:{}]"
    assert expose_warnings(instr, env) == []
    # Quoted, it stays one word, and so one (bad) spec.
    with pytest.raises(BuildfileError, match="invalid containerPort"):
        apply_metadata(empty_config(), expose('EXPOSE "$PORTS"'), env)


@pytest.mark.parametrize(("line", "message"), [
    ("EXPOSE 80/icmp", "invalid proto: icmp"),
    ("EXPOSE ${P:?which-port}", "P: which-port"),
])
def test_bad_ports_and_bad_variables_name_their_line(line: str, message: str) -> None:
    instr = expose(line)
    with pytest.raises(BuildfileError) as caught:
        apply_metadata(empty_config(), instr, {}, path="x/Buildfile")
    assert str(caught.value).startswith("x/Buildfile:2: EXPOSE:")
    assert message in str(caught.value)
    with pytest.raises(BuildfileError) as caught:
        expose_warnings(instr, {}, path="x/Buildfile")
    assert str(caught.value).startswith("x/Buildfile:2: EXPOSE:")
