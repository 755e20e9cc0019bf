"""Shared fixtures. Redis-backed tests use a real Redis at 127.0.0.1:6379 (override with
KEYGUARD_TEST_REDIS_URL); without one they are skipped — except under CI=true, where a missing
Redis is a failure, not a skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Shared machines are noisy: a slow example is not a failing one. Timing goals live in
# benchmarks/, never in test assertions.
settings.register_profile(
    "keyguard", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("keyguard")

REDIS_URL = os.environ.get("KEYGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_or_skip() -> None:
    try:
        import redis
    except ImportError:  # pragma: no cover - the test extra installs it
        if os.environ.get("CI") == "true":
            pytest.fail("redis-py is required under CI=true (pip install -e '.[test]')")
        pytest.skip("redis-py not installed (pip install 'keyguard[redis]')")
    try:
        # Closed explicitly: a dropped client's socket is finalised whenever the garbage
        # collector gets to it, and under -W error that ResourceWarning fails a later test.
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5) as probe:
            probe.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required under CI=true but {REDIS_URL} is unreachable: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL with a unique key prefix (``?prefix=``) for one test; its keys are deleted
    afterwards."""
    _redis_or_skip()
    import redis

    prefix = "kgtest" + uuid.uuid4().hex[:10]
    yield f"{REDIS_URL}?prefix={prefix}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
