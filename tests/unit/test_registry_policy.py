"""How hard the transport tries, from the environment, and how a broken connection is told."""

from __future__ import annotations

import pytest
from urllib3.exceptions import IncompleteRead, NewConnectionError, ProtocolError

from layerbuild.errors import LayerbuildError
from layerbuild.registry.transport import ATTEMPTS_ENV, Policy, error_reason


def test_attempts_come_from_the_environment() -> None:
    assert Policy.from_env({}) == Policy()
    assert Policy.from_env({ATTEMPTS_ENV: ""}) == Policy()
    assert Policy.from_env({ATTEMPTS_ENV: " 2 "}) == Policy(attempts=2)
    assert Policy.from_env({ATTEMPTS_ENV: "1"}).backoff == Policy().backoff


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_bad_attempts_are_a_clear_error(text: str) -> None:
    with pytest.raises(LayerbuildError, match=f"{ATTEMPTS_ENV} must be a whole number"):
        Policy.from_env({ATTEMPTS_ENV: text})


def test_a_broken_connection_is_told_in_a_few_words() -> None:
    cut = ProtocolError("Connection broken: IncompleteRead(10 bytes read, 5 more expected)",
                        IncompleteRead(10, 5))
    assert error_reason(cut) == "Connection broken: IncompleteRead(10 bytes read, 5 more expected)"
    refused = NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    assert error_reason(refused) == "connection refused"
