"""When to retry a request, and how long to wait: one decision for every HTTP client skin.

:class:`RetryPolicy` retries responses whose status is in ``retry_statuses`` (429 and 503 by
default: keyguard's ``rate_limited`` and ``auth_unavailable``, both answered before the
application ran). The wait is what ``Retry-After`` says — whole seconds or an HTTP-date — when
the response has one (keyguard's limiter admits a waiting client exactly then), otherwise
exponential backoff with *full jitter*: a uniformly random wait between 0 and
``min(backoff_max, backoff_base * 2 ** retry)``, so clients refused together do not come back
together. Retrying is bounded twice: by ``max_attempts`` (the first try included) and by
``max_elapsed`` seconds, waits included; a wait that would end past the budget is not started
(a ``Retry-After`` of an hour ends the retries at once instead of blocking for an hour).

Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) are retried by default; a
request carrying an ``Idempotency-Key`` header is always retryable (the server deduplicates
it), and ``retry_non_idempotent=True`` opts every method in. A request whose body cannot be
sent twice (a stream) is never retried.

Time is injectable — ``sleep``/``async_sleep`` to wait, ``clock`` (monotonic) to bound the
total, ``wall_clock`` to read HTTP-dates, ``random`` for the jitter — so tests need not wait.
:class:`RetryState` is the per-request bookkeeping the client skins drive.
"""

from __future__ import annotations

import asyncio
import math
import random as _random
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Final

from keyguard.core.errors import ConfigurationError

__all__ = [
    "IDEMPOTENT_METHODS",
    "NO_RETRY",
    "RetryPolicy",
    "RetryState",
    "parse_retry_after",
]

#: RFC 9110 §9.2.2: repeating one of these has the effect of sending it once.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP-date), never
    negative; ``None`` when absent or unreadable. ``now`` is the wall clock (epoch seconds)
    an HTTP-date is measured from."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are always GMT
        return None
    base = time.time() if now is None else now
    return max(0.0, when.timestamp() - base)


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries refused requests. See the module docstring for the rules.

    * ``max_attempts`` — attempts in all, the first included (1 disables retrying).
    * ``max_elapsed`` — seconds from the first attempt beyond which no wait is started.
    * ``backoff_base``/``backoff_max`` — the full-jitter backoff's scale and cap (seconds),
      used when a response has no ``Retry-After``.
    * ``retry_statuses`` — the statuses worth retrying.
    * ``respect_retry_after`` — wait as ``Retry-After`` says (on by default, as it should be).
    * ``retry_non_idempotent`` — retry POST and PATCH too, without an ``Idempotency-Key``.
    """

    max_attempts: int = 4
    max_elapsed: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_statuses: Collection[int] = frozenset({429, 503})
    respect_retry_after: bool = True
    retry_non_idempotent: bool = False
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    async_sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)
    # Jitter is not a security decision: a pseudo-random source is the right tool.
    random: Callable[[], float] = field(default=_random.random, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigurationError("max_attempts must be an integer >= 1")
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be an integer >= 1")
        for name in ("max_elapsed", "backoff_base", "backoff_max"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"{name} must be a finite number of seconds >= 0")

    def backoff(self, retry: int) -> float:
        """The full-jitter wait before retry number ``retry`` (1 for the first retry)."""
        ceiling: float = min(self.backoff_max, self.backoff_base * 2 ** (retry - 1))
        return float(self.random() * ceiling)

    def may_retry(self, method: str, has_idempotency_key: bool) -> bool:
        """Whether a request with this method may be sent again at all."""
        return (
            self.retry_non_idempotent or has_idempotency_key or method.upper() in IDEMPOTENT_METHODS
        )

    def start(
        self, method: str, *, has_idempotency_key: bool = False, replayable: bool = True
    ) -> RetryState:
        """Bookkeeping for one request about to be sent for the first time."""
        return RetryState(
            self, self.may_retry(method, has_idempotency_key) and replayable, self.clock()
        )


#: A policy that never retries (one attempt).
NO_RETRY: Final = RetryPolicy(max_attempts=1)


class RetryState:
    """One request's retries: call :meth:`next_delay` with each response.

    ``attempts`` counts the responses seen; ``gave_up`` says, once retrying stopped on a
    retryable status, why (attempt limit, time budget, method not idempotent...).
    """

    __slots__ = ("attempts", "gave_up", "policy", "retryable", "started", "waited")

    def __init__(self, policy: RetryPolicy, retryable: bool, started: float) -> None:
        self.policy = policy
        self.retryable = retryable
        self.started = started
        self.attempts = 0
        self.waited = 0.0
        self.gave_up: str | None = None

    def next_delay(self, status: int, retry_after: str | None) -> float | None:
        """Seconds to wait before sending the request again, or ``None`` to stop here."""
        self.attempts += 1
        policy = self.policy
        if status not in policy.retry_statuses:
            return None
        if not self.retryable:
            self.gave_up = (
                "not retried: the method is not idempotent (send an Idempotency-Key, or opt in "
                "with retry_non_idempotent=True) or its body cannot be sent twice"
                if policy.max_attempts > 1
                else None
            )
            return None
        if self.attempts >= policy.max_attempts:
            if policy.max_attempts > 1:
                self.gave_up = f"attempt limit of {policy.max_attempts} reached"
            return None
        delay = None
        if policy.respect_retry_after:
            delay = parse_retry_after(retry_after, now=policy.wall_clock())
        if delay is None:
            delay = policy.backoff(self.attempts)
        elapsed = policy.clock() - self.started
        if elapsed + delay > policy.max_elapsed:
            self.gave_up = (
                f"waiting {delay:.1f} s more would pass the time budget of "
                f"{policy.max_elapsed:g} s ({elapsed:.1f} s spent)"
            )
            return None
        self.waited += delay
        return delay
