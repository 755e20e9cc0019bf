"""Key names of the Redis backends: a bucket, prefix or address that would break the Cluster
hash tag or hold whitespace is refused before any command is sent (no Redis needed)."""

from __future__ import annotations

from typing import Any

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit import DEFAULT_WINDOWS
from keyguard.stores.redis_client import check_part
from tests.stores.redis_server import import_redis

import_redis()

from keyguard.stores.redis_ratelimit import RedisRateLimiter  # noqa: E402

BAD = [
    "",
    "{",
    "}",
    "a{b",
    "ab}",
    "a b",
    "a\tb",
    "a\rb",
    "a\nb",
    " ",
    "x" * 40 + "}",
    None,
    7,
    b"ab",
]
GOOD = ["a", "key_01HZX", "owner:acme", "203.0.113.7", "é", "a-b.c/d", "[::1]", "x" * 200]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_part_that_cannot_go_in_a_key_name_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_part("bucket", value)
    assert str(info.value) == "invalid Redis bucket: must be non-empty, without braces"


@pytest.mark.parametrize("value", GOOD)
def test_a_good_part_is_returned_as_is(value: str) -> None:
    assert check_part("prefix", value) is value


@pytest.mark.parametrize("value", [v for v in BAD if isinstance(v, str)], ids=repr)
def test_a_limiter_refuses_a_bad_bucket_without_a_round_trip(value: str) -> None:
    # Port 1: nothing listens; a command sent would fail with BackendDown, not this.
    limiter = RedisRateLimiter(url="redis://127.0.0.1:1/0", prefix="kg")
    try:
        with pytest.raises(ConfigurationError, match="invalid Redis bucket"):
            limiter.hit(value)
        with pytest.raises(ConfigurationError, match="invalid Redis bucket"):
            limiter.hit_pair("k", DEFAULT_WINDOWS, value, DEFAULT_WINDOWS)
        with pytest.raises(ConfigurationError, match="invalid Redis bucket"):
            limiter.keys(value)
    finally:
        limiter.close()


def test_key_names_of_a_good_bucket() -> None:
    limiter = RedisRateLimiter(url="redis://127.0.0.1:1/0", prefix="kg")
    try:
        assert limiter.keys("key_01") == ["kg:rl:{key_01}:log", "kg:rl:{key_01}:state"]
        assert limiter.pair_keys("k", "o") == [
            "kg:rl:{o}:k:k:log",
            "kg:rl:{o}:k:k:state",
            "kg:rl:{o}:log",
            "kg:rl:{o}:state",
        ]
    finally:
        limiter.close()
