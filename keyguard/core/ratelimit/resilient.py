"""The resilient wrapper: :class:`ResilientLimiter` puts a circuit breaker and a failure mode
(fail local, open or closed) around a remote backend, so a Redis outage never raises."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit.decide import pair_plan
from keyguard.core.ratelimit.memory import MemoryRateLimiter
from keyguard.core.ratelimit.plan import RateDecision, plan_for
from keyguard.core.ratelimit.protocol import RateLimiter
from keyguard.core.ratelimit.windows import DEFAULT_WINDOWS, Window

logger = logging.getLogger("keyguard.ratelimit")

Mode = Literal["local", "allow", "deny"]
_CLOSED: Final = "closed"
_OPEN: Final = "open"
_HALF_OPEN: Final = "half-open"


class ResilientLimiter:
    """A remote limiter that never raises: a circuit breaker and a failure mode around it.

    When ``primary`` fails (``StoreUnavailable``, timeouts, any error but misuse), the
    request is decided by ``mode``:

    - ``"local"`` (default): the in-process ``fallback`` limiter decides, flagged
      ``degraded=True``. Limits then hold per process rather than globally.
    - ``"allow"``: admitted, flagged ``degraded=True`` (fail open: availability first).
    - ``"deny"``: refused with ``unavailable=True``; the caller answers 503
      ``auth_unavailable`` with ``Retry-After``, never 429 (fail closed).

    After ``failure_threshold`` consecutive failures the circuit opens: ``primary`` is not
    called for ``cooldown`` seconds, so an unreachable Redis costs nothing per request. Then
    one request probes it (half-open); success closes the circuit, failure reopens it. Each
    transition is logged on ``keyguard.ratelimit`` (WARNING when degrading, INFO when
    probing or recovering), with the exception type only: no URLs, no keys. Misuse
    (:class:`ConfigurationError`, e.g. a bad cost) still raises: it is a bug to fix, not an
    outage to ride out.
    """

    def __init__(
        self,
        primary: RateLimiter,
        *,
        fallback: RateLimiter | None = None,
        mode: Mode = "local",
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("local", "allow", "deny"):
            raise ConfigurationError(f"mode must be 'local', 'allow' or 'deny', got {mode!r}")
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise ConfigurationError("failure_threshold must be an integer >= 1")
        if not cooldown > 0:
            raise ConfigurationError("cooldown must be > 0 seconds")
        self.primary = primary
        self.fallback: RateLimiter = fallback if fallback is not None else MemoryRateLimiter()
        self.mode: Mode = mode
        self.failure_threshold = failure_threshold
        self.cooldown = float(cooldown)
        self._clock = clock
        self._lock = threading.Lock()
        self._state: str = _CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """``"closed"`` (primary in use), ``"open"`` (bypassed) or ``"half-open"`` (probing)."""
        return self._state

    # -- breaker ----------------------------------------------------------------------------

    def _should_try(self) -> bool:
        if self._state is _CLOSED:
            return True
        with self._lock:
            if self._state is _CLOSED:
                return True
            if self._probing:
                return False
            if self._state is _OPEN and self._clock() - self._opened_at < self.cooldown:
                return False
            self._state = _HALF_OPEN
            self._probing = True
        logger.info("rate-limit backend: circuit half-open, probing")
        return True

    def _succeeded(self) -> None:
        if self._state is _CLOSED and not self._failures:
            return
        with self._lock:
            recovered = self._state is not _CLOSED
            self._state = _CLOSED
            self._failures = 0
            self._probing = False
        if recovered:
            logger.info("rate-limit backend: recovered, circuit closed")

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            was = self._state
            if was is _HALF_OPEN or (was is _CLOSED and self._failures >= self.failure_threshold):
                self._state = _OPEN
                self._opened_at = self._clock()
                self._probing = False
                opened = True
            else:
                opened = False
        if opened:
            logger.warning(
                "rate-limit backend unavailable (%s): circuit open for %.1fs, mode=%s%s",
                type(exc).__name__,
                self.cooldown,
                self.mode,
                " (probe failed)" if was is _HALF_OPEN else "",
            )
        else:
            logger.debug("rate-limit backend error (%s)", type(exc).__name__)

    def _abandoned(self) -> None:
        # A probe cancelled mid-flight must not leave the breaker waiting for it forever.
        with self._lock:
            self._probing = False

    def _degraded(self, windows: tuple[Window, ...]) -> RateDecision | None:
        if self.mode == "allow":
            return RateDecision(True, None, plan_for(windows), degraded=True)
        if self.mode == "deny":
            wait = self.cooldown - (self._clock() - self._opened_at)
            retry = max(1, math.ceil(wait)) if self._state is not _CLOSED else 1
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
        if self._should_try():
            try:
                decision = primary()
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
                return decision
        degraded = self._degraded(windows)
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
        if self._should_try():
            try:
                decision = await primary()
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
                return decision
        degraded = self._degraded(windows)
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
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()

    async def areset(self, bucket: str) -> None:
        await self.fallback.areset(bucket)
        if self._should_try():
            try:
                await self.primary.areset(bucket)
            except ConfigurationError:
                self._abandoned()
                raise
            except Exception as exc:
                self._failed(exc)
            except BaseException:
                self._abandoned()
                raise
            else:
                self._succeeded()
