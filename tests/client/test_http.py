"""The auth classes against the real demo service over HTTP (httpx sync and async, requests).

The demo runs under uvicorn on a loopback port with 2 requests per 10 s per key, its rate
limiter on a fake clock that the client's retry policy sleeps on: a real 429 with a real
Retry-After, and no real waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import requests

from keyguard.client import (
    ADVICE,
    APIError,
    APIKeyError,
    ForbiddenError,
    RateLimitError,
    RetryPolicy,
    ServiceUnavailableError,
)
from keyguard.client.httpx import UserKeyAuth as HttpxAuth
from keyguard.client.requests import UserKeyAuth as RequestsAuth
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.demo import create_app
from keyguard.stores.memory import MemoryStore
from tests.client.conftest import Demo, FakeClock, Served, demo_keys

KINDS = ["httpx", "httpx-async", "requests"]


def make_auth(kind: str, key: str, **options: Any) -> Any:
    return (RequestsAuth if kind == "requests" else HttpxAuth)(key, **options)


def send(
    kind: str,
    base: str,
    method: str,
    path: str,
    auth: Any,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> tuple[int, Any]:
    """One request through the given client library; returns (status, JSON body)."""
    if kind == "requests":
        r = requests.request(method, base + path, auth=auth, headers=headers, json=json, timeout=10)
        return r.status_code, r.json()
    if kind == "httpx":
        with httpx.Client(base_url=base, timeout=10) as client:
            resp = client.request(method, path, auth=auth, headers=headers, json=json)
            return resp.status_code, resp.json()

    async def go() -> tuple[int, Any]:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            resp = await client.request(method, path, auth=auth, headers=headers, json=json)
            return resp.status_code, resp.json()

    return asyncio.run(go())


def spend(demo: Demo, key: str) -> None:
    """Use up the key's 2 requests in this 10 s window."""
    for _ in range(2):
        r = httpx.get(demo.base + "/agents", headers={"Authorization": f"UserKey {key}"})
        assert r.status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_the_key_is_sent_as_userkey(kind: str, demo: Demo) -> None:
    status, body = send(kind, demo.base, "GET", "/whoami", make_auth(kind, demo.keys["reader"]))
    assert status == 200
    assert body["scopes"] == ["*:read"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_real_429_is_retried_exactly_when_retry_after_says(kind: str, demo: Demo) -> None:
    key = demo.keys["reader"]
    spend(demo, key)
    auth = make_auth(kind, key, retry=demo.clock.policy(max_attempts=3))
    status, body = send(kind, demo.base, "GET", "/agents", auth)
    assert status == 200
    assert "agents" in body
    # The window is 10 s and the fake clock has not moved: Retry-After said 10, and the
    # client waited exactly that, once.
    assert demo.clock.sleeps == [10.0]


@pytest.mark.parametrize("kind", KINDS)
def test_retrying_before_retry_after_is_refused_until_the_attempts_run_out(
    kind: str, demo: Demo
) -> None:
    key = demo.keys["reader"]
    spend(demo, key)
    policy = demo.clock.policy(max_attempts=3, respect_retry_after=False)
    with pytest.raises(RateLimitError) as info:
        send(kind, demo.base, "GET", "/agents", make_auth(kind, key, retry=policy))
    error = info.value
    assert error.code == "rate_limited"
    assert error.status == 429
    assert error.attempts == 3
    assert error.gave_up == "attempt limit of 3 reached"
    assert error.retry_after is not None
    assert 1 <= error.retry_after <= 10
    assert len(demo.clock.sleeps) == 2
    assert sum(demo.clock.sleeps) < 10  # backoff alone, far shorter than Retry-After
    assert "429 rate_limited after 3 attempts" in str(error)
    assert ADVICE["rate_limited"].action in str(error)


@pytest.mark.parametrize("kind", KINDS)
def test_the_time_budget_is_respected(kind: str, demo: Demo) -> None:
    key = demo.keys["reader"]
    spend(demo, key)
    policy = demo.clock.policy(max_elapsed=5)
    with pytest.raises(RateLimitError) as info:
        send(kind, demo.base, "GET", "/agents", make_auth(kind, key, retry=policy))
    assert demo.clock.sleeps == []  # a 10 s wait would pass the 5 s budget: none started
    assert info.value.gave_up is not None
    assert "time budget of 5 s" in info.value.gave_up


@pytest.mark.parametrize("kind", KINDS)
def test_a_post_is_not_retried_unless_asked(kind: str, demo: Demo) -> None:
    key = demo.keys["admin"]
    spend(demo, key)
    auth = make_auth(kind, key, retry=demo.clock.policy())
    with pytest.raises(RateLimitError) as info:
        send(kind, demo.base, "POST", "/agents", auth, json={"name": "x"})
    assert info.value.attempts == 1
    assert info.value.gave_up is not None
    assert "not idempotent" in info.value.gave_up
    assert demo.clock.sleeps == []
    # With an Idempotency-Key, the server can deduplicate: retried.
    status, body = send(
        kind,
        demo.base,
        "POST",
        "/agents",
        auth,
        headers={"Idempotency-Key": "create-x-1"},
        json={"name": "x"},
    )
    assert status == 201
    assert body["name"] == "x"
    assert demo.clock.sleeps == [10.0]
    opted_in = make_auth(kind, key, retry=demo.clock.policy(retry_non_idempotent=True))
    demo.clock.now += 10  # a fresh window, spent again
    spend(demo, key)
    status, _ = send(kind, demo.base, "POST", "/agents", opted_in, json={"name": "y"})
    assert status == 201
    assert demo.clock.sleeps == [10.0, 10.0]


@pytest.mark.parametrize("kind", KINDS)
def test_a_real_503_is_retried_with_its_retry_after(kind: str, demo: Demo) -> None:
    demo.store.failures = 2
    auth = make_auth(kind, demo.keys["reader"], retry=demo.clock.policy())
    status, _ = send(kind, demo.base, "GET", "/agents", auth)
    assert status == 200
    assert demo.clock.sleeps == [1.0, 1.0]
    demo.store.failures = 10
    with pytest.raises(ServiceUnavailableError) as info:
        send(kind, demo.base, "GET", "/agents", auth)
    assert info.value.code == "auth_unavailable"
    assert info.value.attempts == 4


DENIALS = [
    pytest.param("expired", "GET", "/agents", APIKeyError, "expired_api_key", id="expired"),
    pytest.param("revoked", "GET", "/agents", APIKeyError, "revoked_api_key", id="revoked"),
    pytest.param("reader", "POST", "/agents", ForbiddenError, "insufficient_scope", id="scope"),
    pytest.param("admin", "GET", "/nowhere", ForbiddenError, "insufficient_scope", id="no-rule"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("who", "method", "path", "error", "code"), DENIALS)
def test_a_final_denial_names_its_code_and_what_to_do(
    kind: str, who: str, method: str, path: str, error: type[APIError], code: str, demo: Demo
) -> None:
    auth = make_auth(kind, demo.keys[who], retry=demo.clock.policy())
    with pytest.raises(error) as info:
        send(kind, demo.base, method, path, auth, json={"name": "x"})
    raised = info.value
    assert raised.code == code
    assert raised.attempts == 1
    assert raised.request_id
    assert raised.advice == ADVICE[code].action
    assert str(raised).startswith(f"{ADVICE[code].status} {code}: ")
    assert raised.advice in str(raised)
    if who == "reader":
        assert raised.required_scopes == ("agents:write",)
        assert "Required scope: agents:write." in str(raised)
    assert demo.clock.sleeps == []


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_key_is_an_api_key_error(kind: str, demo: Demo) -> None:
    from keyguard.core.keys import KeyFormat

    auth = make_auth(kind, KeyFormat().generate().plaintext)
    with pytest.raises(APIKeyError) as info:
        send(kind, demo.base, "GET", "/agents", auth)
    assert info.value.code == "invalid_api_key"


@pytest.mark.parametrize("kind", KINDS)
def test_the_applications_own_errors_pass_through(kind: str, demo: Demo) -> None:
    auth = make_auth(kind, demo.keys["admin"])
    status, body = send(kind, demo.base, "GET", "/agents/999", auth)
    assert status == 404
    assert body == {"error": "no such agent"}


@pytest.mark.parametrize("kind", KINDS)
def test_raise_errors_false_returns_the_denial(kind: str, demo: Demo) -> None:
    auth = make_auth(kind, demo.keys["expired"], raise_errors=False)
    status, body = send(kind, demo.base, "GET", "/agents", auth)
    assert status == 401
    assert body["code"] == "expired_api_key"


@pytest.mark.parametrize("kind", KINDS)
def test_the_platform_error_format_is_understood_too(kind: str) -> None:
    from keyguard.core.hashing import Hasher
    from keyguard.core.render import ProblemRenderer

    store = MemoryStore()
    keys = demo_keys(store, time.time())
    app = create_app(store=store, hasher=Hasher(pepper_from_env=False))
    # The demo's middleware takes the renderer from its Starlette stack.
    for middleware in app.user_middleware:
        middleware.kwargs["renderer"] = ProblemRenderer.platform_compatible()
    with Served(app) as served, pytest.raises(APIKeyError) as info:
        send(kind, served.base, "GET", "/agents", make_auth(kind, keys["revoked"]))
    assert info.value.code == "revoked_api_key"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["httpx", "requests"])
def test_real_time_the_client_waits_as_retry_after_says_and_then_succeeds(kind: str) -> None:
    """No fake clock: the demo with 1 request per 2 s, the client's default sleep."""
    store = MemoryStore()
    keys = demo_keys(store, time.time())
    from keyguard.core.hashing import Hasher

    app = create_app(
        store=store,
        rate_limits="1/2s",
        limiter=MemoryRateLimiter(),
        hasher=Hasher(pepper_from_env=False),
    )
    with Served(app) as served:
        auth = make_auth(kind, keys["reader"], retry=RetryPolicy(max_attempts=3))
        assert send(kind, served.base, "GET", "/agents", auth)[0] == 200
        started = time.monotonic()
        assert send(kind, served.base, "GET", "/agents", auth)[0] == 200
        # Refused once, then admitted after Retry-After (1 or 2 whole seconds): it waited.
        assert time.monotonic() - started >= 1.0


def test_clock_helper_is_shared_by_both_sides() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock.time)
    from keyguard.core.ratelimit import parse_windows

    windows = parse_windows("1/10s")
    assert limiter.hit("k", windows).allowed
    assert not limiter.hit("k", windows).allowed
    clock.sleep(10)
    assert limiter.hit("k", windows).allowed
