"""The retry decision on its own: backoff with full jitter, Retry-After, bounds, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from keyguard.client.retry import NO_RETRY, RetryPolicy, parse_retry_after
from keyguard.core.errors import ConfigurationError
from tests.client.conftest import FakeClock


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("-3", None),
        ("1.5", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=1_900_000_000.0) == seconds


def test_parse_retry_after_http_date_is_measured_from_the_wall_clock() -> None:
    now = 1_900_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 42, UTC), usegmt=True)
    assert parse_retry_after(date, now=now) == 42.0


def test_full_jitter_stays_between_zero_and_the_capped_exponential() -> None:
    top = RetryPolicy(random=lambda: 0.999999, backoff_base=0.5, backoff_max=4.0)
    bottom = RetryPolicy(random=lambda: 0.0)
    assert [round(top.backoff(n), 3) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert bottom.backoff(3) == 0.0


def test_retry_after_is_waited_exactly_and_backoff_only_without_it() -> None:
    clock = FakeClock()
    state = clock.policy(max_attempts=5).start("GET")
    assert state.next_delay(429, "3") == 3.0
    assert state.next_delay(503, None) == pytest.approx(0.5)  # 0.5 * 0.5 * 2**1
    assert state.next_delay(200, None) is None
    assert state.attempts == 3
    assert state.gave_up is None


def test_only_retryable_statuses_are_retried() -> None:
    state = RetryPolicy().start("GET")
    for status in (200, 400, 401, 403, 404, 500):
        assert state.next_delay(status, "1") is None
    assert state.gave_up is None


def test_attempts_are_bounded() -> None:
    clock = FakeClock()
    state = clock.policy(max_attempts=3).start("GET")
    assert state.next_delay(429, "1") == 1.0
    assert state.next_delay(429, "1") == 1.0
    assert state.next_delay(429, "1") is None
    assert state.gave_up == "attempt limit of 3 reached"


def test_total_time_is_bounded_and_no_wait_starts_past_it() -> None:
    clock = FakeClock()
    state = clock.policy(max_attempts=10, max_elapsed=10).start("GET")
    assert state.next_delay(429, "4") == 4.0
    clock.sleep(4)
    assert state.next_delay(429, "4") == 4.0
    clock.sleep(4)
    assert state.next_delay(429, "4") is None  # 8 s spent + 4 > 10
    assert state.gave_up is not None
    assert "time budget of 10 s" in state.gave_up
    hour = clock.policy().start("GET")
    assert hour.next_delay(429, "3600") is None  # never block for an hour


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "get"])
def test_idempotent_methods_are_retried(method: str) -> None:
    assert RetryPolicy().start(method).next_delay(503, "1") == 1.0


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_other_methods_only_with_an_idempotency_key_or_when_asked(method: str) -> None:
    refused = RetryPolicy().start(method)
    assert refused.next_delay(429, "1") is None
    assert refused.gave_up is not None
    assert "not idempotent" in refused.gave_up
    assert RetryPolicy().start(method, has_idempotency_key=True).next_delay(429, "1") == 1.0
    assert RetryPolicy(retry_non_idempotent=True).start(method).next_delay(429, "1") == 1.0


def test_a_body_that_cannot_be_sent_twice_is_never_retried() -> None:
    state = RetryPolicy(retry_non_idempotent=True).start("PUT", replayable=False)
    assert state.next_delay(503, "1") is None


def test_no_retry_policy() -> None:
    state = NO_RETRY.start("GET")
    assert state.next_delay(429, "1") is None
    assert state.gave_up is None


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": True},
        {"max_elapsed": -1},
        {"backoff_base": float("nan")},
        {"backoff_max": float("inf")},
    ],
)
def test_bad_policies_are_configuration_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**options)  # type: ignore[arg-type]
