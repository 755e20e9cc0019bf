"""Per-owner (tenant) rate limits end to end, through the ASGI and WSGI middleware: an owner's
keys share its limit, other owners and keys without an owner are unaffected."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from keyguard.core.ratelimit import MemoryRateLimiter
from tests.adapters.cases import World, make_world
from tests.adapters.test_ratelimit_e2e import ADAPTERS, Clock, Send
from tests.keyfactory import KeyFactory


def owner_world(clock: Clock, **options: Any) -> tuple[World, dict[str, str]]:
    world = make_world(
        limiter=MemoryRateLimiter(clock=clock),
        clock=clock,
        monotonic=clock,
        owner_rate_limits="3/minute",
        **options,
    )
    factory = KeyFactory(world.store)
    headers = {
        "acme1": factory.issue("agents:read", owner="acme").header,
        "acme2": factory.issue("agents:read", owner="acme").header,
        "globex": factory.issue("agents:read", owner="globex").header,
        "nobody": factory.issue("agents:read").header,
    }
    return world, headers


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_owner_limit_is_shared_across_the_owners_keys(adapter: Callable[[World], Send]) -> None:
    clock = Clock()
    world, keys = owner_world(clock)
    send = adapter(world)

    def get(name: str) -> Any:
        return send("GET", "/agents", [("Authorization", keys[name])])

    first = get("acme1")
    assert first.status == 200
    assert first.headers["ratelimit-policy"] == (
        '"burst";q=20;w=10, "minute";q=100;w=60, "day";q=5000;w=86400, "owner-minute";q=3;w=60'
    )
    assert first.headers["ratelimit"].endswith('"owner-minute";r=2;t=60')
    assert first.headers["x-ratelimit-limit"] == "3"
    assert first.headers["x-ratelimit-remaining"] == "2"
    clock.now += 1
    assert get("acme2").status == 200
    clock.now += 1
    assert get("acme1").status == 200
    clock.now += 1
    refused = get("acme2")  # the 4th request across both keys
    assert refused.status == 429
    problem = json.loads(refused.body)
    assert problem["code"] == "rate_limited"
    retry = int(refused.headers["retry-after"])
    assert retry == problem["retry_after"] == 57  # acme's first unit leaves at t0 + 60
    assert refused.headers["ratelimit"] == '"owner-minute";r=0;t=57'
    assert "owner" in problem["detail"]
    # Refusals consume nothing in either bucket: hammering does not push Retry-After.
    for _ in range(20):
        assert get("acme1").status == 429
    # Another owner's key, and a key without an owner, are unaffected.
    assert [get("globex").status for _ in range(4)] == [200, 200, 200, 429]
    for _ in range(10):
        r = get("nobody")
        assert r.status == 200
        assert "owner-minute" not in r.headers["ratelimit-policy"]
    clock.now += retry - 0.001
    assert get("acme1").status == 429
    clock.now += 0.001
    assert get("acme1").status == 200
    assert get("acme2").status == 429


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_key_limit_still_applies_under_an_owner_limit(adapter: Callable[[World], Send]) -> None:
    clock = Clock()
    world = make_world(
        limiter=MemoryRateLimiter(clock=clock),
        clock=clock,
        monotonic=clock,
        rate_limits="1/10s",
        owner_rate_limits="3/minute",
    )
    tight = KeyFactory(world.store).issue("agents:read", owner="acme").header
    send = adapter(world)
    auth = [("Authorization", tight)]
    assert send("GET", "/agents", auth).status == 200
    refused = send("GET", "/agents", auth)
    assert refused.status == 429
    assert refused.headers["retry-after"] == "10"
    assert refused.headers["ratelimit"] == '"10s";r=0;t=10'
    assert "owner" not in json.loads(refused.body)["detail"]
    clock.now += 10
    assert send("GET", "/agents", auth).status == 200
