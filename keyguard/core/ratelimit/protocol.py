"""The contract every rate-limit backend satisfies (in-process, Redis, the resilient wrapper),
and the two ways a remote backend can fail that callers treat differently."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from keyguard.core.errors import StoreUnavailable
from keyguard.core.ratelimit.plan import RateDecision
from keyguard.core.ratelimit.windows import DEFAULT_WINDOWS, Window


@runtime_checkable
class RateLimiter(Protocol):
    """What every rate-limit backend offers. ``bucket`` is a key id or owner id, never a key."""

    def hit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        """Decide a request of ``cost`` units for ``bucket`` now, consuming on admission."""
        ...

    async def ahit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        """:meth:`hit` for async callers."""
        ...

    def hit_pair(
        self,
        key_bucket: str,
        key_windows: tuple[Window, ...],
        owner_bucket: str,
        owner_windows: tuple[Window, ...],
        cost: int = 1,
    ) -> RateDecision:
        """Decide a request against a key's bucket and its owner's at once (see
        :func:`decide_pair`): admitted iff both have room, consuming in both; a refusal
        consumes nothing in either. Atomic: no other decision on either bucket interleaves."""
        ...

    async def ahit_pair(
        self,
        key_bucket: str,
        key_windows: tuple[Window, ...],
        owner_bucket: str,
        owner_windows: tuple[Window, ...],
        cost: int = 1,
    ) -> RateDecision:
        """:meth:`hit_pair` for async callers."""
        ...

    def peek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        """Whether a request of ``cost`` would be admitted now; consumes nothing."""
        ...

    async def apeek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        """:meth:`peek` for async callers."""
        ...

    def reset(self, bucket: str) -> None:
        """Forget everything ``bucket`` consumed."""
        ...

    async def areset(self, bucket: str) -> None:
        """:meth:`reset` for async callers."""
        ...


class BackendDown(StoreUnavailable):
    """The backend refused or dropped the connection (after one immediate reconnect): it is
    down, not slow. :class:`~keyguard.core.ratelimit.ResilientLimiter` falls back at once and
    opens its breaker without waiting for more failures."""


class BackendSlow(StoreUnavailable):
    """The backend is up but did not answer within the decision's time budget, retry
    included. Counts towards the breaker's failure threshold like any other failure."""
