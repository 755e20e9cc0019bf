"""Share rate-limit counts across processes through Redis (the README's rate-limit block).
Needs: pip install ".[redis]" and a Redis server.
"""

from keyguard import Verifier, from_url
from keyguard.core.ratelimit import ResilientLimiter
from keyguard.stores.redis_ratelimit import RedisRateLimiter


def build(
    store_url: str = "sqlite:///./keyguard.db", redis_url: str = "redis://127.0.0.1:6379/0"
) -> Verifier:
    verifier = Verifier(
        from_url(store_url),
        rate_limits="20/10s, 100/minute, 5000/day",  # the default; None disables
        limiter=ResilientLimiter(RedisRateLimiter.from_url(redis_url)),
    )
    return verifier  # noqa: RET504 - the README quotes the assignment
