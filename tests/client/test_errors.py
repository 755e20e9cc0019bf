"""The error table covers every keyguard error code, and unknown codes still get advice."""

from __future__ import annotations

import pytest

from keyguard.client import ADVICE, APIError, APIKeyError, ForbiddenError, advice_for
from keyguard.client.errors import error_from
from keyguard.core.errors import STATUS, ErrorCode, KeyguardError

#: Codes the contract reserves (DESIGN.md) before ErrorCode has them.
RESERVED = {"suspended_api_key": 401, "network_not_allowed": 403}


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_every_error_code_has_advice_with_its_status(code: ErrorCode) -> None:
    advice = ADVICE[code.value]
    assert advice.status == STATUS[code]
    assert advice.meaning
    assert advice.action
    assert issubclass(advice.error, APIError)
    assert issubclass(advice.error, KeyguardError)


def test_reserved_codes_are_covered_and_nothing_else() -> None:
    assert set(ADVICE) == {c.value for c in ErrorCode} | set(RESERVED)
    for code, status in RESERVED.items():
        assert ADVICE[code].status == status


def test_only_waiting_helps_for_rate_limits_and_outages() -> None:
    assert {code for code, a in ADVICE.items() if a.retry} == {"rate_limited", "auth_unavailable"}


def test_an_unknown_code_from_a_newer_server_gets_advice_from_its_status() -> None:
    advice = advice_for("quota_exhausted", 403)
    assert advice.error is ForbiddenError
    error = error_from(403, {"code": "quota_exhausted", "detail": "no more"})
    assert isinstance(error, ForbiddenError)
    assert error.code == "quota_exhausted"
    assert "403 quota_exhausted: no more" in str(error)


def test_the_status_decides_the_class_when_a_code_comes_with_another_status() -> None:
    error = error_from(401, {"code": "insufficient_scope"})
    assert isinstance(error, APIKeyError)
