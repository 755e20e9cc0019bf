"""The in-process backend: :class:`MemoryRateLimiter`, striped LRU maps of bucket states decided
by the compiled plans."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit.decide import _run_pair, pair_plan
from keyguard.core.ratelimit.fused import BoundAdmit, _bad_cost, bound_admit_function
from keyguard.core.ratelimit.plan import RateDecision, WindowPlan, plan_for
from keyguard.core.ratelimit.state import RateState
from keyguard.core.ratelimit.windows import DEFAULT_WINDOWS, Window


class MemoryRateLimiter:
    """In-process rate limiter: exact per process, nothing shared between processes.

    State lives in ``stripes`` LRU maps, each behind its own lock (chosen by the bucket's
    hash), so threads working on different keys rarely contend and no background thread is
    needed. At most about ``max_keys`` buckets are kept; the least recently used is evicted
    first, which forgets its counts, so size ``max_keys`` above the number of keys active in
    a day (buckets are key ids, which only authenticated callers can make the limiter see).
    Measured with the default windows (``benchmarks/bench_memory.py``): about 1.4 KB per
    bucket, plus 40 bytes per unit in the minute log (4 KB more at the minute's limit) and 48
    per quarter hour of the day with admissions (4.6 KB more for a key used all day), so
    100,000 keys each used once need some 140 MB, and as many busy all day up to 1 GB.

    ``clock`` returns seconds from a monotonic source (default :func:`time.monotonic`): a wall
    clock that steps (NTP, an operator, a VM resumed) must neither grant a fresh burst when it
    jumps forward nor hold requests back when it jumps back. Counts are per process anyway,
    so nothing needs a clock shared with other machines; the day window's buckets are then
    aligned to the monotonic clock's origin rather than to midnight UTC (a unit still counts
    at most one bucket past its window). The Redis backend uses Redis's own clock, shared by
    every process. ``ahit`` runs inline: the work is under two
    microseconds of CPU and no lock is ever held across an ``await``.
    """

    __slots__ = (
        "_admitters",
        "_clock",
        "_last_pair",
        "_last_plan",
        "_locks",
        "_mask",
        "_per_stripe",
        "_stripes",
    )

    #: ``hit`` does no I/O, so callers on an event loop may call it without awaiting.
    in_process: Final = True

    def __init__(
        self,
        max_keys: int = 100_000,
        stripes: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        if (
            isinstance(stripes, bool)
            or not isinstance(stripes, int)
            or stripes < 1
            or stripes & (stripes - 1)
        ):
            raise ConfigurationError(f"stripes must be a power of two, got {stripes!r}")
        self._per_stripe = max(1, -(-max_keys // stripes))
        self._mask = stripes - 1
        self._locks = tuple(threading.Lock() for _ in range(stripes))
        # OrderedDict rather than cachetools.LRUCache: its C move_to_end is the cheapest
        # recency update, and the stripe lock already makes it thread-safe.
        self._stripes: tuple[OrderedDict[str, RateState], ...] = tuple(
            OrderedDict() for _ in range(stripes)
        )
        self._clock = clock
        self._last_plan: tuple[Sequence[Window], WindowPlan] = (
            DEFAULT_WINDOWS,
            plan_for(DEFAULT_WINDOWS),
        )
        self._last_pair: (
            tuple[Sequence[Window], Sequence[Window], WindowPlan, WindowPlan, WindowPlan] | None
        ) = None
        self._admitters: dict[tuple[WindowPlan, bool], BoundAdmit] = {}

    def hit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        # One attribute holds the pair, so concurrent callers never see a mismatched plan.
        last_windows, plan = self._last_plan
        if last_windows is not windows:
            plan = plan_for(windows)
            self._last_plan = (windows, plan)
        if cost.__class__ is not int or cost < 1:
            _bad_cost(cost)
        now = _floor(self._clock() * 1e6 + 0.5)
        i = hash(bucket) & self._mask
        lock = self._locks[i]
        lock.acquire()
        try:
            states = self._stripes[i]
            state = states.get(bucket)
            if state is None:
                state = states[bucket] = RateState()
                if len(states) > self._per_stripe:
                    states.popitem(last=False)
            else:
                states.move_to_end(bucket)
            return plan.run(state, now, cost, True)
        finally:
            lock.release()

    def admit(
        self,
        bucket: str,
        windows: tuple[Window, ...] = DEFAULT_WINDOWS,
        cost: int = 1,
        ietf: bool = True,
        legacy: bool = True,
        text: bool = False,
    ) -> list[tuple[bytes, bytes]] | tuple[tuple[str, str], ...] | RateDecision:
        """:meth:`hit`, and for an admitted request its rate-limit headers, in one call
        (:mod:`keyguard.core.ratelimit.fused`): when admitted, the headers as ASGI byte pairs
        (a list: what :func:`~keyguard.core.ratelimit.headers.admitted_headers_asgi` renders
        from the decision's counts) or, with ``text``, as text pairs (a tuple: what
        :func:`~keyguard.core.ratelimit.headers.admitted_headers` renders), empty with both
        header kinds off; the refusal's :class:`RateDecision` otherwise. :meth:`admitter`'s
        function for ``windows``, called once."""
        return self.admitter(windows, text)(bucket, cost, ietf, legacy)

    def admitter(self, windows: tuple[Window, ...], text: bool = False) -> BoundAdmit:
        """:meth:`admit` for one window set, as a function ``admit(bucket, cost, ietf,
        legacy)`` generated for this limiter (its stripe, lock and LRU steps are :meth:`hit`'s,
        written out again in it rather than shared through a call: keep the two in step) and
        kept: the verifier's fast path
        (:meth:`~keyguard.core.verifier.Verifier.fast_admit`) finds it once and calls it on
        nearly every request. A subclass that overrides :meth:`hit` or :meth:`admit` keeps the
        verifier on its own methods."""
        key = (plan_for(windows), text)
        admit = self._admitters.get(key)
        if admit is None:
            if len(self._admitters) >= 64:  # window sets are few; never an unbounded cache
                self._admitters.clear()
            admit = self._admitters[key] = bound_admit_function(key[0], self, text=text)
        return admit

    async def ahit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return self.hit(bucket, windows, cost)

    def _state(self, i: int, bucket: str, keep: str) -> RateState:
        """``bucket``'s state in stripe ``i`` (created if new), never evicting ``keep``."""
        states = self._stripes[i]
        state = states.get(bucket)
        if state is None:
            state = states[bucket] = RateState()
            if len(states) > self._per_stripe:
                oldest = next(iter(states))
                # The other half of the pair being decided stays (the stripe may then hold
                # one bucket too many until its next insertion).
                if oldest != keep:
                    del states[oldest]
        else:
            states.move_to_end(bucket)
        return state

    def hit_pair(
        self,
        key_bucket: str,
        key_windows: tuple[Window, ...],
        owner_bucket: str,
        owner_windows: tuple[Window, ...],
        cost: int = 1,
    ) -> RateDecision:
        pair = self._last_pair
        if pair is None or pair[0] is not key_windows or pair[1] is not owner_windows:
            pair = (
                key_windows,
                owner_windows,
                plan_for(key_windows),
                plan_for(owner_windows),
                pair_plan(key_windows, owner_windows),
            )
            self._last_pair = pair
        if cost.__class__ is not int or cost < 1:
            _bad_cost(cost)
        if key_bucket == owner_bucket:
            raise ConfigurationError("a key and its owner need two distinct rate-limit buckets")
        now = _floor(self._clock() * 1e6 + 0.5)
        mask = self._mask
        i = hash(key_bucket) & mask
        j = hash(owner_bucket) & mask
        # Both stripes' locks, in index order (one lock when they share a stripe), so two
        # pair decisions never wait on each other in a cycle.
        first = self._locks[min(i, j)]
        second = self._locks[max(i, j)] if i != j else None
        first.acquire()
        try:
            if second is not None:
                second.acquire()
            try:
                kstate = self._state(i, key_bucket, owner_bucket)
                ostate = self._state(j, owner_bucket, key_bucket)
                return _run_pair(pair[2], pair[3], pair[4], kstate, ostate, now, cost)
            finally:
                if second is not None:
                    second.release()
        finally:
            first.release()

    async def ahit_pair(
        self,
        key_bucket: str,
        key_windows: tuple[Window, ...],
        owner_bucket: str,
        owner_windows: tuple[Window, ...],
        cost: int = 1,
    ) -> RateDecision:
        return self.hit_pair(key_bucket, key_windows, owner_bucket, owner_windows, cost)

    def peek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        plan = plan_for(windows)
        if cost.__class__ is not int or cost < 1:
            _bad_cost(cost)
        now = _floor(self._clock() * 1e6 + 0.5)
        i = hash(bucket) & self._mask
        with self._locks[i]:
            # A copy: a peek changes nothing (see decide). An unknown bucket is not stored, so
            # peeking at many buckets cannot evict the state of active ones.
            state = self._stripes[i].get(bucket)
            return plan.run(RateState() if state is None else state.copy(), now, cost, False)

    async def apeek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        return self.peek(bucket, windows, cost)

    def reset(self, bucket: str) -> None:
        i = hash(bucket) & self._mask
        with self._locks[i]:
            self._stripes[i].pop(bucket, None)

    async def areset(self, bucket: str) -> None:
        self.reset(bucket)

    def __len__(self) -> int:
        return sum(len(s) for s in self._stripes)


_floor = math.floor
