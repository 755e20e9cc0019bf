"""A rate limiter from settings: in-process for memory:// (or nothing), Redis behind the
resilient wrapper for redis://, configured by the settings; a missing driver is one error
naming the extra to install."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit import MemoryRateLimiter, ResilientLimiter
from keyguard.core.ratelimit.settings import LimiterSettings
from keyguard.stores.ratelimit_url import limiter_from_settings, missing_extra


def test_no_url_means_the_callers_default() -> None:
    assert limiter_from_settings(LimiterSettings()) is None


def test_memory_url_is_in_process() -> None:
    assert isinstance(limiter_from_settings(LimiterSettings("memory://")), MemoryRateLimiter)


def test_redis_url_builds_the_configured_resilient_limiter() -> None:
    pytest.importorskip("redis")
    from keyguard.stores.redis_ratelimit import RedisRateLimiter

    settings = LimiterSettings(
        "redis://127.0.0.1:6379/15?prefix=kgx", "deny", 0.2, 1.5, failures=7, cooldown=9
    )
    lim = limiter_from_settings(settings)
    assert isinstance(lim, ResilientLimiter)
    assert (lim.mode, lim.failure_threshold, lim.cooldown) == ("deny", 7, 9.0)
    assert isinstance(lim.fallback, MemoryRateLimiter)
    primary = lim.primary
    assert isinstance(primary, RedisRateLimiter)
    assert (primary.prefix, primary.socket_timeout, primary.budget) == ("kgx", 0.2, 1.5)
    assert primary.client is not None
    assert primary.client.connection_pool.connection_kwargs["socket_timeout"] == 0.2
    primary.close()


def test_unknown_scheme_is_one_clear_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        limiter_from_settings(LimiterSettings("memcached://127.0.0.1"))
    assert "KEYGUARD_RATELIMIT_URL" in str(info.value)
    assert "redis://" in str(info.value)


def test_a_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_redis(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "redis" or name.startswith("redis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_redis)
    settings = LimiterSettings("redis://127.0.0.1:6379/0")
    message = missing_extra(settings)
    assert message is not None
    assert "pip install 'keyguard[redis]'" in message
    assert "\n" not in message
    with pytest.raises(ConfigurationError) as info:
        limiter_from_settings(settings)
    assert str(info.value) == message
    assert missing_extra(LimiterSettings("memory://")) is None
