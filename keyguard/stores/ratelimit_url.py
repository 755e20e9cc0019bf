"""A rate limiter from :class:`~keyguard.core.ratelimit.settings.LimiterSettings`: in-process
for ``memory://`` (or no URL), Redis behind a :class:`~keyguard.core.ratelimit.ResilientLimiter`
for ``redis://``, ``rediss://``, ``unix://`` and a Redis Cluster's ``redis+cluster://`` and
``rediss+cluster://``. Used wherever a limiter is built from a URL:
``keyguard demo``, the adapters' settings and
:func:`keyguard.adapters._shared.build_verifier`.

A missing driver is a :class:`ConfigurationError` naming the extra to install, raised when the
limiter is built, so a server checks it once before it starts workers.
"""

from __future__ import annotations

from typing import Final

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit import MemoryRateLimiter, RateLimiter, ResilientLimiter
from keyguard.core.ratelimit.settings import ENV, LimiterSettings

__all__ = ["REDIS_SCHEMES", "limiter_from_settings", "missing_extra"]

#: URL schemes served by the Redis limiter.
REDIS_SCHEMES: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_SCHEMES: Final = ("memory", *REDIS_SCHEMES)


def _scheme(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(
            f"{ENV['url']}: unknown rate-limit URL scheme {scheme!r} (known: {known})"
        )
    return scheme


def missing_extra(settings: LimiterSettings) -> str | None:
    """The one-line error for a driver these settings need and cannot import, else None."""
    if settings.url is None or _scheme(settings.url) not in REDIS_SCHEMES:
        return None
    try:
        import redis  # noqa: F401 - only whether it imports
    except ImportError:
        pass
    else:
        return None
    return (
        f"{ENV['url']} names a Redis server, but the redis package is not installed: "
        "pip install 'keyguard[redis]'"
    )


def limiter_from_settings(settings: LimiterSettings) -> RateLimiter | None:
    """The limiter ``settings`` describe; None when they name none (the caller's default,
    in-process, applies). Redis is wrapped in a :class:`ResilientLimiter` with the settings'
    mode and breaker, and an in-process fallback."""
    if settings.url is None:
        return None
    if _scheme(settings.url) == "memory":
        return MemoryRateLimiter()
    missing = missing_extra(settings)
    if missing is not None:
        raise ConfigurationError(missing)
    from keyguard.stores.redis_ratelimit import RedisRateLimiter

    primary = RedisRateLimiter.from_url(
        settings.url, socket_timeout=settings.timeout, budget=settings.budget
    )
    return ResilientLimiter(
        primary,
        fallback=MemoryRateLimiter(),
        mode=settings.mode,
        failure_threshold=settings.failures,
        cooldown=settings.cooldown,
    )
