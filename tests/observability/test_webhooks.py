"""Signed webhooks against a real receiver on a local port: the signature checks out with the
receiver's own HMAC code, retries follow 5xx and network errors (never 4xx), and neither the
secret nor anything key-shaped is ever sent."""

from __future__ import annotations

import json
import socket
import time

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.observability.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    Webhook,
    sign,
    verify_signature,
)
from tests.observability.receiver import receiver

SECRET = "whsec-0123456789abcdef-test"
PAYLOAD = {"id": "n1", "type": "keyguard.key.expiring", "key": {"key_id": "3F9aQ2xLm7Pw"}}


def hook(url: str, sleeps: list[float] | None = None, **options: object) -> Webhook:
    record = sleeps if sleeps is not None else []
    return Webhook(url, SECRET, sleep=record.append, **options)  # type: ignore[arg-type]


def test_the_receiver_verifies_the_signature_of_a_delivery() -> None:
    with receiver(SECRET) as rx:
        result = hook(rx.url).send(PAYLOAD, event_id="n1", event_type="keyguard.key.expiring")
    assert result.delivered
    assert result.status == 200
    assert result.attempts == 1
    (got,) = rx.received
    assert got.signature_ok
    assert got.json == PAYLOAD
    assert got.headers["content-type"] == "application/json"
    assert got.headers[EVENT_ID_HEADER.lower()] == "n1"
    assert got.headers["keyguard-event-type"] == "keyguard.key.expiring"
    assert SECRET not in got.body.decode()
    assert SECRET not in json.dumps(got.headers)
    # keyguard's own verifier agrees with the receiver's code
    assert verify_signature(SECRET, got.headers[SIGNATURE_HEADER.lower()], got.body)


def test_a_5xx_is_retried_with_growing_backoff_until_delivered() -> None:
    sleeps: list[float] = []
    with receiver(SECRET, statuses=[500, 502, 503]) as rx:
        result = hook(rx.url, sleeps, backoff=1.0, max_backoff=3.0).send(PAYLOAD, event_id="n1")
    assert result.delivered
    assert result.attempts == 4
    assert [r.headers["x-answered"] for r in rx.received] == ["500", "502", "503", "200"]
    assert all(r.signature_ok for r in rx.received)  # each retry is signed afresh
    assert {r.headers[EVENT_ID_HEADER.lower()] for r in rx.received} == {"n1"}
    # full jitter below 1, 2, then the 3 s cap
    assert len(sleeps) == 3
    assert 0 <= sleeps[0] <= 1
    assert 0 <= sleeps[1] <= 2
    assert 0 <= sleeps[2] <= 3


def test_retries_give_up_after_the_last_attempt() -> None:
    with receiver(SECRET, statuses=[500] * 10) as rx:
        result = hook(rx.url, retries=2).send(PAYLOAD, event_id="n1")
    assert not result.delivered
    assert result.attempts == 3
    assert result.status == 500
    assert len(rx.received) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_a_4xx_is_final(status: int) -> None:
    with receiver(SECRET, statuses=[status]) as rx:
        result = hook(rx.url).send(PAYLOAD, event_id="n1")
    assert not result.delivered
    assert result.attempts == 1
    assert result.status == status


def test_429_is_retried() -> None:
    with receiver(SECRET, statuses=[429]) as rx:
        result = hook(rx.url).send(PAYLOAD, event_id="n1")
    assert result.delivered
    assert result.attempts == 2


def test_an_unreachable_receiver_is_retried_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleeps: list[float] = []
    result = hook(f"http://127.0.0.1:{port}/x", sleeps, retries=2, timeout=1.0).send(
        PAYLOAD, event_id="n1"
    )
    assert not result.delivered
    assert result.status is None
    assert result.attempts == 3
    assert result.error is not None
    assert SECRET not in result.error
    assert len(sleeps) == 2


def test_signature_verification() -> None:
    body = b'{"a":1}'
    now = 1_900_000_000
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=")
    assert len(header.partition("v1=")[2]) == 64
    assert verify_signature(SECRET, header, body, now=now + 10)
    assert not verify_signature(SECRET, header, body + b" ", now=now)
    assert not verify_signature(SECRET + "x", header, body, now=now)
    assert not verify_signature(SECRET, header, body, now=now + 301)  # replayed later
    assert not verify_signature(SECRET, header, body, now=now - 301)
    assert verify_signature(SECRET, f"t={now},v1={'0' * 64},{header.split(',')[1]}", body, now=now)
    for bad in ("", None, "t=abc,v1=00", f"t={now}", "v1=00", "garbage"):
        assert not verify_signature(SECRET, bad, body, now=now)


@pytest.mark.parametrize(
    ("url", "secret", "options"),
    [
        pytest.param("ftp://example.com/x", SECRET, {}, id="scheme"),
        pytest.param("https:///path", SECRET, {}, id="no-host"),
        pytest.param("https://example.com/x", "short", {}, id="short-secret"),
        pytest.param("https://example.com/x", SECRET, {"retries": -1}, id="retries"),
        pytest.param("https://example.com/x", SECRET, {"timeout": -1}, id="timeout"),
    ],
)
def test_bad_webhooks_are_refused(url: str, secret: str, options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Webhook(url, secret, **options)  # type: ignore[arg-type]


def test_the_secret_is_not_in_the_repr_and_the_url_is_shown_without_its_query() -> None:
    h = Webhook("https://user:pw@hooks.example.com:8443/k?token=t0ken", SECRET)
    assert SECRET not in repr(h)
    assert h.shown_url == "https://hooks.example.com:8443/k"
    assert len(h.target) == 12
    assert "t0ken" not in h.target


def test_a_delivery_is_signed_with_the_time_it_is_sent() -> None:
    with receiver(SECRET) as rx:
        Webhook(rx.url, SECRET, clock=lambda: time.time() - 1000).send(PAYLOAD, event_id="n1")
    (got,) = rx.received
    assert not got.signature_ok  # the receiver refuses a stale timestamp
