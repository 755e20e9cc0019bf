"""The record checks made after a key's secret matched: suspension, then networks."""

from __future__ import annotations

import pytest

from keyguard.core.errors import STATUS, TITLES, ErrorCode
from keyguard.core.records import KeyRecord, KeyStatus
from keyguard.core.render import ProblemRenderer
from keyguard.core.restrictions import (
    NETWORK_NOT_ALLOWED,
    SUSPENDED,
    is_restricted,
    record_denial,
)

NOW = 1_000_000.0


def rec(**fields: object) -> KeyRecord:
    return KeyRecord(key_id="k0000000000A", name="k", digest="sha256$x", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "client", "expected"),
    [
        pytest.param(rec(), "203.0.113.5", None, id="unrestricted"),
        pytest.param(rec(), None, None, id="unrestricted-no-address"),
        pytest.param(rec(suspended_at=1.0), "10.0.0.1", SUSPENDED, id="suspended"),
        pytest.param(
            rec(suspended_at=1.0, allowed_networks=("10.0.0.0/8",)),
            "127.0.0.1",
            SUSPENDED,
            id="suspended-wins-over-network",
        ),
        pytest.param(rec(allowed_networks=("10.0.0.0/8",)), "10.9.8.7", None, id="in-network"),
        pytest.param(
            rec(allowed_networks=("10.0.0.0/8",)), "127.0.0.1", NETWORK_NOT_ALLOWED, id="outside"
        ),
        pytest.param(
            rec(allowed_networks=("10.0.0.0/8",)), None, NETWORK_NOT_ALLOWED, id="no-address"
        ),
        pytest.param(
            rec(allowed_networks=("2001:db8::/32",)), "2001:db8::1", None, id="ipv6-inside"
        ),
    ],
)
def test_record_denial(record: KeyRecord, client: str | None, expected: object) -> None:
    assert record_denial(record, client, NOW) is expected
    assert is_restricted(record) is (
        record.suspended_at is not None or bool(record.allowed_networks)
    )


def test_codes_are_in_the_error_contract() -> None:
    assert SUSPENDED.code is ErrorCode.SUSPENDED_API_KEY
    assert SUSPENDED.status == 401 == STATUS[ErrorCode.SUSPENDED_API_KEY]
    assert NETWORK_NOT_ALLOWED.code is ErrorCode.NETWORK_NOT_ALLOWED
    assert NETWORK_NOT_ALLOWED.status == 403
    for decision in (SUSPENDED, NETWORK_NOT_ALLOWED):
        assert decision.code is not None
        problem = ProblemRenderer().render(decision, "rid")
        assert problem.status == decision.status
        assert f'"code":"{decision.code.value}"'.encode() in problem.body
        assert TITLES[decision.code].encode() in problem.body


def test_suspension_is_a_status_between_expired_and_active() -> None:
    assert rec(suspended_at=1.0).status(NOW) is KeyStatus.SUSPENDED
    assert rec(suspended_at=1.0, expires_at=NOW - 1).status(NOW) is KeyStatus.EXPIRED
    assert rec(suspended_at=1.0, revoked_at=2.0).status(NOW) is KeyStatus.REVOKED
    assert rec().status(NOW) is KeyStatus.ACTIVE
