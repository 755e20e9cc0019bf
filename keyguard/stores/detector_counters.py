"""The anomaly detectors' counters chosen by URL, like a store: ``memory://`` (this process),
``sqlite:///path.db`` (every process on the machine), ``redis://…`` (every process anywhere).

The same URL as the key store works, and is the point: processes that share keys then share
what the detectors count, so an attacker spreading wrong secrets over four workers is counted
once. Drivers are imported only when their scheme is used.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keyguard.core.detector_counters import DetectorCounters, MemoryDetectorCounters
from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit.settings import DEFAULT_TIMEOUT

__all__ = ["detector_counters_from_url"]

_REDIS: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def detector_counters_from_url(url: str) -> DetectorCounters:
    """Detector counters for ``url`` (a key store URL, or one of their own).

    Redis URLs keep their ``prefix`` (default ``kg``) and ``timeout`` (seconds) options;
    the key store's other options are ignored. ``redis+cluster://`` builds a Cluster client
    (on first use: a Cluster that cannot be reached then is ``StoreUnavailable``).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            "detector counters need a URL: memory://, sqlite:///path.db or redis://host/0"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryDetectorCounters()
    if scheme == "sqlite":
        from keyguard.stores.sqlite_detector_counters import SQLiteDetectorCounters

        return SQLiteDetectorCounters.from_url(url)
    if scheme not in _REDIS:
        raise ConfigurationError(
            f"unknown detector counter scheme {scheme!r} (known: memory://, sqlite://, "
            "redis://, rediss://, unix://, redis+cluster://)"
        )
    try:
        import redis  # noqa: F401 - only whether it imports
    except ImportError:
        raise ConfigurationError(
            "Redis detector counters need the redis package: pip install 'keyguard[redis]'"
        ) from None
    from keyguard.stores.redis_detector_counters import RedisDetectorCounters

    parts = urlsplit(url)
    prefix: str | None = None
    timeout: float | None = None
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                raise ConfigurationError("the timeout option must be a number") from None
        elif name != "max_audit":
            rest.append((name, value))
    socket_timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    # A Cluster URL's client is built on first use (keyguard.stores.redis_client).
    plain = urlunsplit(parts._replace(query=urlencode(rest)))
    return RedisDetectorCounters(url=plain, prefix=prefix, socket_timeout=socket_timeout)
