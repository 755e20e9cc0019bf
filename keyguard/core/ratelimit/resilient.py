"""The resilient wrapper: :class:`ResilientLimiter` puts a circuit breaker and a failure mode
(fail local, open or closed) around a remote backend, so a Redis outage never raises."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit.breaker import CircuitBreaker, FallbackLog, logger
from keyguard.core.ratelimit.decide import pair_plan
from keyguard.core.ratelimit.memory import MemoryRateLimiter
from keyguard.core.ratelimit.plan import RateDecision, plan_for
from keyguard.core.ratelimit.protocol import BackendDown, BackendSlow, RateLimiter
from keyguard.core.ratelimit.stats import Counters
from keyguard.core.ratelimit.windows import DEFAULT_WINDOWS, Window

Mode = Literal["local", "allow", "deny"]
MODES: Final = ("local", "allow", "deny")

#: What :attr:`ResilientLimiter.stats` counts.
STATS: Final = (
    "decided",  # requests the primary decided
    "fallbacks",  # requests decided by the mode instead (the sum of the four below)
    "fallbacks_down",  # ... because the primary was down (connection refused or lost)
    "fallbacks_slow",  # ... because it did not answer within its time budget
    "fallbacks_error",  # ... because of another error
    "fallbacks_open",  # ... because the circuit was open (the primary was not asked)
    "circuit_opened",  # times the circuit opened
)


def _cause(exc: BaseException) -> tuple[str, str]:
    # (stats suffix, log text). The exception type only: driver messages can carry hosts.
    if isinstance(exc, BackendDown):
        return "down", f"down: {type(exc).__name__}"
    if isinstance(exc, BackendSlow):
        return "slow", f"no reply within its time budget: {type(exc).__name__}"
    return "error", type(exc).__name__


class ResilientLimiter:
    """A remote limiter that never raises: a circuit breaker and a failure mode around it.

    When ``primary`` fails (``StoreUnavailable``, timeouts, any error but misuse), the
    request is decided by ``mode``. What each admits while Redis is down, measured with
    ``benchmarks/bench_outage.py`` (``keyguard demo``, one key, its burst quota 20 per 10 s,
    80 requests over 2 workers, 160 over 4):

    - ``"local"`` (default): the in-process ``fallback`` limiter decides, flagged
      ``degraded=True``. Limits then hold per process rather than globally: N worker
      processes admit N times the quota (40 with 2 workers, 80 with 4), the rest get 429.
    - ``"allow"``: admitted, flagged ``degraded=True`` (fail open: availability first; no
      limit at all while the backend is out: 80 of 80, 160 of 160).
    - ``"deny"``: refused with ``unavailable=True``; the caller answers 503
      ``auth_unavailable`` with ``Retry-After``, never 429 (fail closed: nothing is admitted
      beyond the quota because nothing is admitted at all: 0 of 80, all 503).

    A slow backend is not a failed one: the Redis backend retries a late reply inside its own
    time budget (without counting a request twice) and only then raises
    :class:`~keyguard.core.ratelimit.BackendSlow`. A backend that refuses or drops the
    connection raises :class:`~keyguard.core.ratelimit.BackendDown`, which opens the circuit
    at once; other failures open it after ``failure_threshold`` consecutive ones. An open
    circuit does not call ``primary`` for ``cooldown`` seconds, so an unreachable Redis costs
    nothing per request; then one request probes it (half-open), and success closes the
    circuit, failure reopens it.

    Every request decided without the backend is logged on ``keyguard.ratelimit`` at WARNING,
    rate-limited to one line per ``log_interval`` seconds that counts the requests since the
    last (see :class:`~keyguard.core.ratelimit.breaker.FallbackLog`); transitions are logged
    too (WARNING when the circuit opens, INFO when probing or recovering), with exception
    types only: no URLs, no keys. :attr:`stats` counts decisions and fallbacks by cause for
    export to metrics. Misuse (:class:`ConfigurationError`, e.g. a bad cost) still raises: it
    is a bug to fix, not an outage to ride out.
    """

    def __init__(
        self,
        primary: RateLimiter,
        *,
        fallback: RateLimiter | None = None,
        mode: Mode = "local",
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"mode must be 'local', 'allow' or 'deny', got {mode!r}")
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise ConfigurationError("failure_threshold must be an integer >= 1")
        if not cooldown > 0:
            raise ConfigurationError("cooldown must be > 0 seconds")
        if not log_interval >= 0:
            raise ConfigurationError("log_interval must be >= 0 seconds")
        self.primary = primary
        self.fallback: RateLimiter = fallback if fallback is not None else MemoryRateLimiter()
        self.mode: Mode = mode
        self.failure_threshold = failure_threshold
        self.cooldown = float(cooldown)
        self.log_interval = float(log_interval)
        #: Counters of :data:`STATS`, for metrics (``stats.snapshot()``).
        self.stats = Counters(STATS)
        self._breaker = CircuitBreaker(failure_threshold, self.cooldown, clock)
        self._log = FallbackLog(mode, self.log_interval, clock)

    @property
    def state(self) -> str:
        """``"closed"`` (primary in use), ``"open"`` (bypassed) or ``"half-open"`` (probing)."""
        return self._breaker.state

    def __repr__(self) -> str:
        return (
            f"ResilientLimiter({type(self.primary).__name__}, mode={self.mode!r}, "
            f"state={self.state!r})"
        )

    # -- breaker ----------------------------------------------------------------------------

    def _should_try(self) -> bool:
        return self._breaker.allow()

    def _succeeded(self) -> None:
        self.stats.incr("decided")
        recovered = self._breaker.succeeded()
        self._log.succeeded(recovered)

    def _failed(self, exc: BaseException) -> str:
        """Record a failure of the primary; returns the cause for the fallback log."""
        kind, cause = _cause(exc)
        opened, was = self._breaker.failed(down=kind == "down")
        if opened:
            self.stats.incr("circuit_opened")
            logger.warning(
                "rate-limit backend unavailable (%s): circuit open for %.1fs, mode=%s%s",
                type(exc).__name__,
                self.cooldown,
                self.mode,
                " (probe failed)" if was == "half-open" else "",
            )
        self.stats.incr(f"fallbacks_{kind}")
        return cause

    def _abandoned(self) -> None:
        self._breaker.abandoned()

    def _reset_failed(self, exc: BaseException) -> None:
        # A reset decides no request: the breaker learns of the failure, nothing falls back.
        opened, _was = self._breaker.failed(down=isinstance(exc, BackendDown))
        if opened:
            self.stats.incr("circuit_opened")
            logger.warning(
                "rate-limit backend unavailable (%s): circuit open for %.1fs, mode=%s",
                type(exc).__name__,
                self.cooldown,
                self.mode,
            )

    def _degraded(self, windows: tuple[Window, ...], cause: str | None) -> RateDecision | None:
        """The decision of ``mode`` without the primary (None: ask the fallback)."""
        self.stats.incr("fallbacks")
        if cause is None:
            self.stats.incr("fallbacks_open")
            cause = "circuit open"
        self._log.fell_back(cause)
        if self.mode == "allow":
            return RateDecision(True, None, plan_for(windows), degraded=True)
        if self.mode == "deny":
            retry = self._breaker.retry_after()
            return RateDecision(False, retry, plan_for(windows), unavailable=True)
        return None

    # -- limiter ----------------------------------------------------------------------------

    def _guarded(
        self,
        primary: Callable[[], RateDecision],
        fallback: Callable[[], RateDecision],
        windows: tuple[Window, ...],
    ) -> RateDecision:
        """Ask the primary unless the breaker is open; on failure, degrade per ``mode``."""
        cause = None
        if self._should_try():
            try:
                decision = primary()
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                cause = self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
                return decision
        degraded = self._degraded(windows, cause)
        if degraded is not None:
            return degraded
        return fallback()._replace(degraded=True)

    async def _aguarded(
        self,
        primary: Callable[[], Awaitable[RateDecision]],
        fallback: Callable[[], Awaitable[RateDecision]],
        windows: tuple[Window, ...],
    ) -> RateDecision:
        """Async :meth:`_guarded`."""
        cause = None
        if self._should_try():
            try:
                decision = await primary()
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                cause = self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
                return decision
        degraded = self._degraded(windows, cause)
        if degraded is not None:
            return degraded
        return (await fallback())._replace(degraded=True)

    def hit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return self._guarded(
            lambda: self.primary.hit(bucket, windows, cost),
            lambda: self.fallback.hit(bucket, windows, cost),
            windows,
        )

    async def ahit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return await self._aguarded(
            lambda: self.primary.ahit(bucket, windows, cost),
            lambda: self.fallback.ahit(bucket, windows, cost),
            windows,
        )

    def hit_pair(
        self,
        key_bucket: str,
        key_windows: tuple[Window, ...],
        owner_bucket: str,
        owner_windows: tuple[Window, ...],
        cost: int = 1,
    ) -> RateDecision:
        args = (key_bucket, key_windows, owner_bucket, owner_windows, cost)
        return self._guarded(
            lambda: self.primary.hit_pair(*args),
            lambda: self.fallback.hit_pair(*args),
            pair_plan(key_windows, owner_windows).windows,
        )

    async def ahit_pair(
        self,
        key_bucket: str,
        key_windows: tuple[Window, ...],
        owner_bucket: str,
        owner_windows: tuple[Window, ...],
        cost: int = 1,
    ) -> RateDecision:
        args = (key_bucket, key_windows, owner_bucket, owner_windows, cost)
        return await self._aguarded(
            lambda: self.primary.ahit_pair(*args),
            lambda: self.fallback.ahit_pair(*args),
            pair_plan(key_windows, owner_windows).windows,
        )

    def peek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return self._guarded(
            lambda: self.primary.peek(bucket, windows, cost),
            lambda: self.fallback.peek(bucket, windows, cost),
            windows,
        )

    async def apeek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return await self._aguarded(
            lambda: self.primary.apeek(bucket, windows, cost),
            lambda: self.fallback.apeek(bucket, windows, cost),
            windows,
        )

    def reset(self, bucket: str) -> None:
        self.fallback.reset(bucket)
        if self._should_try():
            try:
                self.primary.reset(bucket)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._reset_failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._breaker.succeeded()

    async def areset(self, bucket: str) -> None:
        await self.fallback.areset(bucket)
        if self._should_try():
            try:
                await self.primary.areset(bucket)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._reset_failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._breaker.succeeded()
