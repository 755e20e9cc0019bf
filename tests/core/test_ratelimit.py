"""Rate-limit windows, the decision function, the memory backend, headers and the breaker.

The decision is checked against a brute-force reference that keeps every admitted unit and
applies the admission formula literally.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    EXACT_MAX_LIMIT,
    LONG_WINDOW_BUCKETS,
    BackendDown,
    BackendSlow,
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RateState,
    ResilientLimiter,
    Window,
    WindowStatus,
    decide,
    format_windows,
    parse_windows,
    plan_for,
    rate_limit_headers,
    validate_cost,
)

PROPS = settings(database=None, deadline=None, max_examples=200)
US = 1_000_000
T0 = 1_700_000_000  # a realistic epoch second: timestamps are ~2^50 µs, as in production


def to_us(seconds: float) -> int:
    return math.floor(seconds * 1e6 + 0.5)


def ceil_s(us: int) -> int:
    return -(-us // US)


# -- windows: construction, parsing, formatting --------------------------------------------------


def test_default_windows() -> None:
    expected = (Window(20, 10, "burst"), Window(100, 60, "minute"), Window(5000, 86400, "day"))
    assert expected == DEFAULT_WINDOWS
    assert [w.exact for w in DEFAULT_WINDOWS] == [True, True, False]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            "20/10s, 100/minute, 5000/day",
            (Window(20, 10), Window(100, 60), Window(5000, 86400)),
            id="issue-example",
        ),
        pytest.param("100/min", (Window(100, 60, "minute"),), id="min"),
        pytest.param("5000/1d", (Window(5000, 86400, "day"),), id="1d"),
        pytest.param("10/30s", (Window(10, 30, "30s"),), id="30s"),
        pytest.param("10/30", (Window(10, 30),), id="bare-seconds"),
        pytest.param("7 per hour", (Window(7, 3600, "hour"),), id="per-word"),
        pytest.param("3/0.5s", (Window(3, 0.5, "0.5s"),), id="fractional"),
        pytest.param("5/2h", (Window(5, 7200, "2h"),), id="2h"),
        pytest.param(
            " burst = 20 / 10s ,5/1W", (Window(20, 10, "burst"), Window(5, 604800)), id="ws"
        ),
        pytest.param("1/SECOND", (Window(1, 1, "second"),), id="case"),
    ],
)
def test_parse_windows(spec: str, expected: tuple[Window, ...]) -> None:
    assert parse_windows(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("", id="empty"),
        pytest.param("  ", id="blank"),
        pytest.param("100", id="no-period"),
        pytest.param("100/", id="no-unit"),
        pytest.param("0/minute", id="zero-limit"),
        pytest.param("-1/minute", id="negative"),
        pytest.param("10/fortnight", id="unknown-unit"),
        pytest.param("10/0s", id="zero-period"),
        pytest.param("10/minute,", id="trailing-comma"),
        pytest.param("a=1/s, a=2/m", id="duplicate-names"),
        pytest.param("1/minute, 2/minute", id="duplicate-derived-names"),
        pytest.param('"x=1/s', id="bad-name"),
        pytest.param("1.5/s", id="fractional-limit"),
    ],
)
def test_parse_windows_rejects(spec: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_windows(spec)


def test_parse_windows_is_cached_and_rejects_non_strings() -> None:
    assert parse_windows("1/s, 2/m") is parse_windows("1/s, 2/m")
    with pytest.raises(ConfigurationError):
        parse_windows(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "ok"),
    [
        pytest.param((1, 1), True, id="min"),
        pytest.param((0, 1), False, id="zero-limit"),
        pytest.param((True, 1), False, id="bool-limit"),
        pytest.param((1.0, 1), False, id="float-limit"),
        pytest.param((1, 0), False, id="zero-period"),
        pytest.param((1, float("inf")), False, id="inf-period"),
        pytest.param((1, float("nan")), False, id="nan-period"),
        pytest.param((1, "1"), False, id="str-period"),
        pytest.param((1, 1, 'a"b'), False, id="quote-in-name"),
        pytest.param((1, 1, "x" * 33), False, id="long-name"),
        pytest.param((2**40, 1), True, id="max-limit"),
        pytest.param((2**40 + 1, 1), False, id="limit-too-large"),
        pytest.param((1, 10 * 366 * 86400 + 1), False, id="period-too-long"),
    ],
)
def test_window_validation(args: tuple[object, ...], ok: bool) -> None:
    if ok:
        Window(*args)  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigurationError):
            Window(*args)  # type: ignore[arg-type]


def test_window_exactness() -> None:
    assert Window(10, 3600).exact
    assert not Window(10, 3601).exact
    assert Window(EXACT_MAX_LIMIT, 60).exact
    assert not Window(EXACT_MAX_LIMIT + 1, 60).exact


window_st = st.builds(
    Window,
    st.integers(1, 100_000),
    st.one_of(
        st.integers(1, 10**7),
        st.sampled_from([0.5, 1.5, 2.25, 0.001]),
    ),
    st.one_of(st.just(""), st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True)),
)


@PROPS
@given(st.lists(window_st, min_size=1, max_size=4, unique_by=lambda w: w.name))
def test_format_parse_roundtrip(windows: list[Window]) -> None:
    text = format_windows(windows)
    assert parse_windows(text) == tuple(windows)


def test_format_windows() -> None:
    assert format_windows(DEFAULT_WINDOWS) == "burst=20/10s, 100/minute, 5000/day"
    assert str(Window(5, 120)) == "5/2m"


def test_validate_cost() -> None:
    validate_cost(20)
    for bad in (21, 0, -1, True, 1.0):
        with pytest.raises(ConfigurationError):
            validate_cost(bad)  # type: ignore[arg-type]


# -- the brute-force reference -------------------------------------------------------------------


class Reference:
    """Every admitted unit, and the admission formula applied literally."""

    def __init__(self, windows: tuple[Window, ...]) -> None:
        self.specs = plan_for(windows).specs  # (limit, period µs, bucket width µs, kind)
        self.units: list[int] = []

    def used(self, now: int, period: int) -> int:
        return sum(1 for u in self.units if now - period < u <= now)

    def kth_in_window(self, now: int, period: int, k: int) -> int:
        inside = sorted(u for u in self.units if now - period < u <= now)
        return inside[k - 1]


# Exact windows with small limits, and bucketed windows (periods > 1 h) with small limits, so
# that traces hit every limit. Bucket widths (75 s, 900 s) are whole seconds.
exact_window = st.tuples(st.integers(1, 6), st.sampled_from([1, 2, 5, 10, 30, 60, 3600]))
long_window = st.tuples(st.integers(1, 12), st.sampled_from([7200, 86400]))
window_sets = st.lists(st.one_of(exact_window, long_window), min_size=1, max_size=3).map(
    lambda ws: tuple(Window(limit, period, f"w{i}") for i, (limit, period) in enumerate(ws))
)
# Steps in milliseconds: nothing, sub-second, around the window sizes, and backwards.
STEPS_MS = [0, 0, 1, 500, 1000, 1000, 2000, 7000, 59_000, 61_000, 900_000, 3_600_000]
STEPS_MS += [7_200_000, 86_400_000, -1000, -30_000]


class RateLimitMachine(RuleBasedStateMachine):
    """decide() against the reference, step by step, on one bucket."""

    @initialize(windows=window_sets)
    def setup(self, windows: tuple[Window, ...]) -> None:
        self.windows = windows
        self.ref = Reference(windows)
        self.state: RateState | None = None
        self.now_ms = T0 * 1000
        self.last = -(2**62)
        self.whole_seconds = True

    def effective_now(self) -> int:
        return max(self.now_ms * 1000, self.last)

    def _check(self, d: RateDecision, now: int, cost: int, admitted_before: list[int]) -> None:
        # Checks the decision against the units admitted *before* this request.
        self.ref.units = admitted_before
        assert len(d.counts) == 2 * len(self.ref.specs)
        late_violation = False
        for i, (limit, period, width, _kind) in enumerate(self.ref.specs):
            used = self.ref.used(now, period)
            remaining, reset = d.counts[2 * i], d.counts[2 * i + 1]
            bit = bool(d.violated_mask >> i & 1)
            if d.allowed:
                # Never over-admits, whatever the window kind.
                assert used + cost <= limit
                assert not bit
            if width == 0:
                # Exact windows: the same count, violation and header values as the formula.
                assert bit == (not d.allowed and used + cost > limit)
                assert remaining == max(0, limit - used - (cost if d.allowed else 0))
                if bit:
                    expected = (
                        ceil_s(period)
                        if cost > limit
                        else ceil_s(
                            self.ref.kth_in_window(now, period, used + cost - limit) + period - now
                        )
                    )
                elif used:
                    expected = ceil_s(self.ref.kth_in_window(now, period, 1) + period - now)
                else:
                    expected = ceil_s(period) if d.allowed else 0
                assert reset == expected
            else:
                # Buckets count at least the exact units, at most those of a window one
                # bucket longer.
                late = self.ref.used(now, period + width)
                taken = cost if d.allowed else 0
                assert limit - late - taken <= remaining or remaining == 0
                assert remaining <= max(0, limit - used - taken)
                if bit:
                    late_violation = late_violation or late + cost > limit
                # Never beyond the window, as its RateLimit-Policy states it (issue 8).
                assert 0 <= reset <= ceil_s(period)
        if not d.allowed:
            assert d.violated_mask, "a refusal names the windows that refused it"
            exact_violation = any(
                d.violated_mask >> i & 1 for i, s in enumerate(self.ref.specs) if s[2] == 0
            )
            assert exact_violation or late_violation
            never = any(cost > s[0] for s in self.ref.specs)
            assert (d.retry_after is None) == never
            if not never:
                assert d.retry_after is not None
                assert d.retry_after >= 1
        else:
            assert d.retry_after is None

    @rule(step=st.sampled_from(STEPS_MS), cost=st.sampled_from([1, 1, 1, 2, 3, 7, 13]))
    def hit(self, step: int, cost: int) -> None:
        self.now_ms += step
        self.whole_seconds = self.whole_seconds and self.now_ms % 1000 == 0
        now = self.effective_now()
        before_state = None if self.state is None else self.state.copy()
        before_units = list(self.ref.units)
        d, self.state = decide(self.state, self.now_ms / 1000, cost, self.windows)
        self.last = now
        self._check(d, now, cost, before_units)
        if d.allowed:
            self.ref.units = before_units + [now] * cost
            return
        self.ref.units = before_units
        # All-or-nothing: the refusal consumed nothing. The state answers every later
        # question exactly as before (peeks at a few future moments agree).
        if before_state is not None:
            for later in (0, 1, 10, 61, 3600, 86400):
                t = now / US + later
                a, _ = decide(before_state.copy(), t, 1, self.windows, consume=False)
                b, _ = decide(self.state.copy(), t, 1, self.windows, consume=False)
                assert a == b
        if d.retry_after is None:
            return
        # Retry-After is sound (admitted then, for the same request, if nothing else comes)
        # and tight (refused one second earlier; 1 ms earlier when all times are whole).
        r = d.retry_after
        at, _ = decide(self.state.copy(), now / US + r, cost, self.windows)
        assert at.allowed, (r, at)
        before, _ = decide(self.state.copy(), now / US + r - 1, cost, self.windows)
        assert not before.allowed
        if self.whole_seconds:
            just_before, _ = decide(self.state.copy(), now / US + r - 0.001, cost, self.windows)
            assert not just_before.allowed

    @precondition(lambda self: self.state is not None)
    @rule(step=st.sampled_from(STEPS_MS), cost=st.sampled_from([1, 2, 5]))
    def peek(self, step: int, cost: int) -> None:
        assert self.state is not None
        when = (self.now_ms + step) / 1000
        snapshot = self.state.copy()
        p, same = decide(self.state, when, cost, self.windows, consume=False)
        assert same is self.state
        assert self.state == snapshot, "a peek changes nothing"
        h, _ = decide(self.state.copy(), when, cost, self.windows)
        assert (p.allowed, p.retry_after, p.violated_mask) == (
            h.allowed,
            h.retry_after,
            h.violated_mask,
        )

    @invariant()
    def log_is_sorted_and_bounded(self) -> None:
        if getattr(self, "state", None) is None:
            return
        assert self.state is not None
        log = list(self.state.log)
        assert log == sorted(log)
        exact = [s for s in self.ref.specs if s[2] == 0]
        if exact:
            assert len(log) <= max(s[0] for s in exact if s[1] == max(e[1] for e in exact))


RateLimitMachine.TestCase.settings = settings(
    database=None, deadline=None, max_examples=150, stateful_step_count=40
)
TestRateLimitMachine = RateLimitMachine.TestCase


# -- the decision: examples ----------------------------------------------------------------------


def test_burst_then_retry_after_exact() -> None:
    state = None
    for i in range(20):
        d, state = decide(state, T0 + i * 0.1, 1)
        assert d.allowed
    d, state = decide(state, T0 + 2.0, 1)
    assert not d.allowed
    assert d.retry_after == 8  # the first unit (at T0) leaves the 10 s window at T0 + 10
    assert [s.name for s in d.violated] == ["burst"]
    refused_early, _ = decide(state.copy(), T0 + 9.999, 1)
    assert not refused_early.allowed
    ok, _ = decide(state, T0 + 10, 1)
    assert ok.allowed


def test_all_or_nothing_with_cost() -> None:
    windows = (Window(5, 10, "a"), Window(8, 60, "b"))
    d, state = decide(None, T0, 4, windows)
    assert d.allowed
    d, state = decide(state, T0 + 1, 2, windows)  # a: 4 + 2 > 5 -> refused, b untouched
    assert not d.allowed
    assert [s.name for s in d.violated] == ["a"]
    assert d.windows[1] == WindowStatus(8, 60, "b", 4, 59)
    d, state = decide(state, T0 + 1, 1, windows)
    assert d.allowed
    assert [s.remaining for s in d.windows] == [0, 3]


def test_cost_above_a_limit_is_never_admitted() -> None:
    d, state = decide(None, T0, 21)
    assert not d.allowed
    assert d.retry_after is None
    assert [s.name for s in d.violated] == ["burst"]
    assert not state.log
    d, _ = decide(state, T0 + 10**6, 21)
    assert not d.allowed


@pytest.mark.parametrize("cost", [0, -1, True, 1.5, "1"])
def test_bad_cost(cost: object) -> None:
    with pytest.raises(ConfigurationError):
        decide(None, T0, cost)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        MemoryRateLimiter().hit("k", cost=cost)  # type: ignore[arg-type]


def test_clock_going_backwards_admits_nothing_extra() -> None:
    windows = (Window(3, 10, "a"),)
    state = None
    for _ in range(3):
        d, state = decide(state, T0 + 100, 1, windows)
        assert d.allowed
    # The clock jumps back an hour: time is held at the last moment seen.
    d, state = decide(state, T0 + 100 - 3600, 1, windows)
    assert not d.allowed
    assert d.retry_after == 10
    d, state = decide(state, T0 + 105, 1, windows)
    assert not d.allowed
    d, state = decide(state, T0 + 110, 1, windows)
    assert d.allowed


def test_day_window_buckets_release_at_most_one_bucket_late() -> None:
    windows = (Window(2, 86400, "day"),)
    width = 86400 // LONG_WINDOW_BUCKETS  # 900 s
    start = (T0 // width) * width + 100  # 100 s into a bucket
    d, state = decide(None, start, 1, windows)
    assert d.allowed
    d, state = decide(state, start + 700, 1, windows)  # the same bucket
    assert d.allowed
    d, state = decide(state, start + 86400, 1, windows)  # exact rule: one unit free again
    assert not d.allowed
    # The bucket leaves the window with its latest unit: 700 s late, less than one bucket.
    assert d.retry_after == 700
    d, state = decide(state, start + 86400 + 700, 2, windows)
    assert d.allowed


def test_a_bucket_alone_is_released_exactly() -> None:
    windows = (Window(2, 86400, "day"),)
    d, state = decide(None, T0, 2, windows)
    d, state = decide(state, T0 + 86400 - 0.001, 1, windows)
    assert not d.allowed
    assert d.retry_after == 1
    d, state = decide(state, T0 + 86400, 2, windows)
    assert d.allowed


@pytest.mark.parametrize("offset", [0, 1, 100, 899, 899.999])
def test_reported_reset_never_exceeds_the_window(offset: float) -> None:
    """Issue 8: a fresh key's day window reported ``t=86710`` against ``w=86400``."""
    width = 86400 // LONG_WINDOW_BUCKETS
    now = (T0 // width) * width + offset
    d, state = decide(None, now, 1)
    assert [s.reset for s in d.windows] == [10, 60, 86400]
    h = headers_of(rate_limit_headers(d))
    assert h["RateLimit"] == '"burst";r=19;t=10, "minute";r=99;t=60, "day";r=4999;t=86400'
    # Refused by the day window: Retry-After and t stay within it too.
    windows = (Window(1, 86400, "day"),)
    d, state = decide(None, now, 1, windows)
    d, state = decide(state, now + 5, 1, windows)
    assert d.retry_after == 86400 - 5
    assert headers_of(rate_limit_headers(d))["RateLimit"] == '"day";r=0;t=86395'


def test_decide_is_deterministic() -> None:
    a = b = None
    for i in range(50):
        da, a = decide(a, T0 + i * 0.37, 1 + i % 3)
        db, b = decide(b, T0 + i * 0.37, 1 + i % 3)
        assert da == db
    assert a == b


def test_windows_may_be_any_sequence_and_plans_are_cached() -> None:
    d1, _ = decide(None, T0, 1, list(DEFAULT_WINDOWS))
    d2, _ = decide(None, T0, 1, DEFAULT_WINDOWS)
    assert d1 == d2
    assert plan_for(list(DEFAULT_WINDOWS)) is plan_for(DEFAULT_WINDOWS)
    with pytest.raises(ConfigurationError):
        plan_for(())
    with pytest.raises(ConfigurationError):
        plan_for((Window(1, 1, "a"), Window(2, 2, "a")))


def test_only_bucketed_windows_and_shared_periods() -> None:
    windows = (Window(3, 7200, "a"), Window(5, 7200, "b"), Window(4, 86400, "c"))
    state = None
    admitted = 0
    for i in range(10):
        d, state = decide(state, T0 + i, 1, windows)
        admitted += d.allowed
    assert admitted == 3
    assert not state.log


def test_decision_is_a_value() -> None:
    d, _ = decide(None, T0, 1)
    assert bool(d) is True
    assert d.policy == '"burst";q=20;w=10, "minute";q=100;w=60, "day";q=5000;w=86400'
    assert d.windows[0] == WindowStatus(20, 10, "burst", 19, 10)
    assert d.violated == ()
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]
    refused = RateDecision(False, 3)
    assert not refused
    assert refused.windows == ()
    assert refused.policy == ""


# -- headers ---------------------------------------------------------------------------------------


def headers_of(pairs: list[tuple[str, str]]) -> dict[str, str]:
    names = [n.lower() for n, _ in pairs]
    assert len(names) == len(set(names)), f"duplicate header field in {pairs}"
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in pairs)
    return dict(pairs)


def test_headers_when_admitted() -> None:
    # The day bucket leaves the day window with its latest unit, 86400 s after it.
    state = None
    for i in range(3):
        d, state = decide(state, T0 + i, 1)
    h = headers_of(rate_limit_headers(d))
    assert h == {
        "RateLimit-Policy": '"burst";q=20;w=10, "minute";q=100;w=60, "day";q=5000;w=86400',
        "RateLimit": '"burst";r=17;t=8, "minute";r=97;t=58, "day";r=4997;t=86400',
        "X-RateLimit-Limit": "20",
        "X-RateLimit-Remaining": "17",
        "X-RateLimit-Reset": "8",
    }


def test_headers_when_refused_report_only_violated_windows() -> None:
    windows = (Window(2, 10, "burst"), Window(3, 60, "minute"))
    state = None
    for t in (0, 20, 21):
        d, state = decide(state, T0 + t, 1, windows)
        assert d.allowed
    d, state = decide(state, T0 + 22, 1, windows)  # burst 2/2 used, minute 3/3 used
    assert not d.allowed
    h = headers_of(rate_limit_headers(d))
    assert h["Retry-After"] == "38"  # the minute window frees at T0 + 60
    assert h["RateLimit"] == '"burst";r=0;t=8, "minute";r=0;t=38'
    assert (h["X-RateLimit-Limit"], h["X-RateLimit-Remaining"], h["X-RateLimit-Reset"]) == (
        "3",
        "0",
        "38",
    )
    assert h["RateLimit-Policy"] == '"burst";q=2;w=10, "minute";q=3;w=60'


@pytest.mark.parametrize(
    ("ietf", "legacy", "expected"),
    [
        pytest.param(True, True, {"RateLimit-Policy", "RateLimit", "X-RateLimit-Limit"}, id="both"),
        pytest.param(True, False, {"RateLimit-Policy", "RateLimit"}, id="ietf"),
        pytest.param(False, True, {"X-RateLimit-Limit", "X-RateLimit-Remaining"}, id="legacy"),
        pytest.param(False, False, set(), id="none"),
    ],
)
def test_header_families_are_switchable(ietf: bool, legacy: bool, expected: set[str]) -> None:
    d, _ = decide(None, T0, 1)
    names = set(headers_of(rate_limit_headers(d, ietf=ietf, legacy=legacy)))
    assert expected <= names
    assert bool(names & {"RateLimit", "RateLimit-Policy"}) == ietf
    assert bool(names & {"X-RateLimit-Limit"}) == legacy
    refused, _ = decide(None, T0, 50)
    assert "Retry-After" not in headers_of(rate_limit_headers(refused))  # never admissible
    d, state = decide(None, T0, 20)
    d, _ = decide(state, T0, 1)
    h = headers_of(rate_limit_headers(d, ietf=False, legacy=False))
    assert h == {"Retry-After": "10"}


def test_headers_of_degraded_and_unavailable_decisions() -> None:
    plan = plan_for(DEFAULT_WINDOWS)
    allow = RateDecision(True, None, plan, degraded=True)
    assert headers_of(rate_limit_headers(allow)) == {"RateLimit-Policy": plan.policy}
    deny = RateDecision(False, 4, plan, unavailable=True)
    assert headers_of(rate_limit_headers(deny)) == {"Retry-After": "4"}


# -- the memory backend ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_memory_limiter_matches_decide() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    assert isinstance(limiter, RateLimiter)
    state = None
    for i in range(300):
        clock.t = T0 + i * 0.173
        expected, state = decide(state, clock.t, 1 + i % 2)
        assert limiter.hit("k", cost=1 + i % 2) == expected


def test_memory_peek_reset_and_buckets_are_independent() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    windows = (Window(2, 10, "a"),)
    assert limiter.peek("k", windows).allowed
    assert len(limiter) == 0, "peeking at an unknown bucket stores nothing"
    limiter.hit("k", windows)
    limiter.hit("k", windows)
    assert not limiter.peek("k", windows).allowed
    assert limiter.hit("other", windows).allowed
    limiter.reset("k")
    assert limiter.hit("k", windows).allowed


def test_memory_limiter_evicts_least_recently_used() -> None:
    limiter = MemoryRateLimiter(max_keys=4, stripes=1, clock=FakeClock())
    windows = (Window(1, 60, "a"),)
    for k in "abcd":
        assert limiter.hit(k, windows).allowed
    assert not limiter.hit("a", windows).allowed  # "a" is now the most recent
    assert limiter.hit("e", windows).allowed  # evicts "b"
    assert len(limiter) == 4
    assert limiter.hit("b", windows).allowed  # forgotten: admitted again
    assert not limiter.hit("a", windows).allowed


@pytest.mark.parametrize(
    "kwargs",
    [{"stripes": 3}, {"stripes": 0}, {"max_keys": 0}, {"max_keys": True}],
)
def test_memory_limiter_validates(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        MemoryRateLimiter(**kwargs)


async def test_memory_async_api() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    windows = (Window(1, 60, "a"),)
    assert (await limiter.apeek("k", windows)).allowed
    assert (await limiter.ahit("k", windows)).allowed
    assert not (await limiter.ahit("k", windows)).allowed
    await limiter.areset("k")
    assert (await limiter.ahit("k", windows)).allowed


def test_100_threads_on_one_key_admit_exactly_the_burst() -> None:
    limiter = MemoryRateLimiter()
    barrier = threading.Barrier(100)
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        d = limiter.hit("shared")
        with lock:
            results.append(d.allowed)

    threads = [threading.Thread(target=worker) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 100
    assert sum(results) == 20


async def test_100_tasks_on_one_key_admit_exactly_the_burst() -> None:
    limiter = MemoryRateLimiter()
    start = asyncio.Event()

    async def one() -> bool:
        await start.wait()
        return (await limiter.ahit("shared")).allowed

    tasks = [asyncio.create_task(one()) for _ in range(100)]
    await asyncio.sleep(0)
    start.set()
    assert sum(await asyncio.gather(*tasks)) == 20


# Runs in a fresh interpreter whose wall and monotonic clocks are replaced before keyguard is
# imported, so every default a limiter binds at import time is one of these two fakes.
_CLOCK_STEP_SCRIPT = """
import time
wall, mono = [1_700_000_000.0], [5_000.0]
time.time = lambda: wall[0]
time.monotonic = lambda: mono[0]

from keyguard.core.ratelimit import MemoryRateLimiter, ResilientLimiter
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore

limiters = {
    "MemoryRateLimiter()": MemoryRateLimiter(),
    "ResilientLimiter fallback": ResilientLimiter(MemoryRateLimiter()).fallback,
    "Verifier default": Verifier(MemoryStore()).limiter,
}
for name, lim in limiters.items():
    wall[0], mono[0] = 1_700_000_000.0, 5_000.0
    admitted = sum(lim.hit("k").allowed for _ in range(25))
    wall[0] += 86_400  # the wall clock steps forward a day; no real time passes
    mono[0] += 0.5
    after = sum(lim.hit("k").allowed for _ in range(25))
    wall[0] -= 3 * 86_400  # and back three days: no burst is held back either
    mono[0] += 10.5
    later = sum(lim.hit("k").allowed for _ in range(25))
    print(name, admitted, after, later)
"""


def test_a_wall_clock_step_grants_no_fresh_burst() -> None:
    """Issue 7 item 11: the in-process limiter runs on a monotonic clock."""
    out = subprocess.run(
        [sys.executable, "-c", _CLOCK_STEP_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert out == [
        f"{name} 20 0 20"
        for name in ("MemoryRateLimiter()", "ResilientLimiter fallback", "Verifier default")
    ]


# -- the resilient wrapper -------------------------------------------------------------------------


class Flaky:
    """A primary that fails while ``down`` is set, counting calls."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.inner = MemoryRateLimiter(clock=FakeClock())
        self.error: Exception = StoreUnavailable("Redis is unreachable (ConnectionError)")

    def _go(self) -> None:
        self.calls += 1
        if self.down:
            raise self.error

    def hit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        self._go()
        return self.inner.hit(bucket, windows, cost)

    async def ahit(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        self._go()
        return self.inner.hit(bucket, windows, cost)

    def peek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        self._go()
        return self.inner.peek(bucket, windows, cost)

    async def apeek(
        self, bucket: str, windows: tuple[Window, ...] = DEFAULT_WINDOWS, cost: int = 1
    ) -> RateDecision:
        self._go()
        return self.inner.peek(bucket, windows, cost)

    def reset(self, bucket: str) -> None:
        self._go()
        self.inner.reset(bucket)

    async def areset(self, bucket: str) -> None:
        self._go()
        self.inner.reset(bucket)


def make(mode: str, **kw: object) -> tuple[ResilientLimiter, Flaky, FakeClock]:
    primary = Flaky()
    clock = FakeClock(0.0)
    options: dict[str, object] = {"failure_threshold": 3, "cooldown": 5.0, **kw}
    limiter = ResilientLimiter(
        primary,
        fallback=MemoryRateLimiter(clock=FakeClock()),
        mode=mode,  # type: ignore[arg-type]
        clock=clock,
        **options,  # type: ignore[arg-type]
    )
    return limiter, primary, clock


WIN = (Window(2, 60, "a"),)


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        pytest.param(
            "local",
            lambda d: d.allowed and d.degraded and not d.unavailable and d.windows,
            id="local",
        ),
        pytest.param("allow", lambda d: d.allowed and d.degraded and not d.windows, id="allow"),
        pytest.param(
            "deny",
            lambda d: not d.allowed and d.unavailable and d.retry_after >= 1,
            id="deny",
        ),
    ],
)
def test_failure_modes(mode: str, check: Callable[[RateDecision], bool]) -> None:
    limiter, primary, _ = make(mode)
    first = limiter.hit("k", WIN)
    assert first.allowed
    assert not first.degraded
    primary.down = True
    d = limiter.hit("k", WIN)
    assert check(d), d


def test_local_mode_limits_in_process() -> None:
    limiter, primary, _ = make("local")
    primary.down = True
    assert [limiter.hit("k", WIN).allowed for _ in range(3)] == [True, True, False]


def test_breaker_opens_probes_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keyguard.ratelimit")
    limiter, primary, clock = make("deny")
    primary.down = True
    for _ in range(3):
        limiter.hit("k", WIN)
    assert limiter.state == "open"
    assert primary.calls == 3
    d = limiter.hit("k", WIN)
    assert primary.calls == 3, "an open circuit does not call the primary"
    assert d.unavailable
    assert d.retry_after == 5
    clock.t = 4.2
    assert limiter.hit("k", WIN).retry_after == 1
    # Cooldown over: one probe, which fails, reopens.
    clock.t = 5.0
    limiter.hit("k", WIN)
    assert primary.calls == 4
    assert limiter.state == "open"
    # Next probe succeeds: closed again, primary decides.
    primary.down = False
    clock.t = 10.5
    d = limiter.hit("k", WIN)
    assert d.allowed
    assert not d.degraded
    assert limiter.state == "closed"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [lvl for lvl, _ in messages] == [
        "WARNING",  # the first fallback, at once
        "WARNING",  # the circuit opens
        "INFO",  # probing
        "WARNING",  # the probe failed
        "INFO",  # probing
        "WARNING",  # the fallbacks not yet reported
        "INFO",  # recovered
    ]
    assert "request decided by mode=deny" in messages[0][1]
    assert "StoreUnavailable" in messages[0][1]
    assert "circuit open" in messages[1][1]
    assert "probe failed" in messages[3][1]
    assert "5 request(s) decided by mode=deny" in messages[5][1]
    assert "recovered" in messages[-1][1]
    assert limiter.stats.snapshot() == {
        "decided": 1,
        "fallbacks": 6,
        "fallbacks_down": 0,
        "fallbacks_slow": 0,
        "fallbacks_error": 4,
        "fallbacks_open": 2,
        "circuit_opened": 2,
    }


def _logged_fallbacks(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The number of fallbacks each WARNING line of the fallback log accounts for."""
    counts = []
    for r in caplog.records:
        text = r.getMessage()
        if r.levelno == logging.WARNING and "decided by mode=" in text:
            found = re.search(r"(\d+) request", text)
            counts.append(int(found[1]) if found else 1)
    return counts


def test_every_fallback_is_logged_at_warning_but_the_log_is_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 8: one slow reply switched a request to the fallback, logged at DEBUG only."""
    caplog.set_level(logging.WARNING, logger="keyguard.ratelimit")
    limiter, primary, clock = make("local", failure_threshold=10**9, log_interval=10.0)
    primary.error = BackendSlow("no reply within 0.5s")
    primary.down = True
    for i in range(1000):
        clock.t = i * 0.025  # 1000 fallbacks over 25 s
        assert limiter.hit(f"k{i}", WIN).degraded
    counts = _logged_fallbacks(caplog)
    assert 2 <= len(counts) <= 4, "a few lines, not one per request"
    assert counts[0] == 1, "the first fallback is reported at once"
    primary.down = False
    clock.t = 40.0
    assert not limiter.hit("k", WIN).degraded
    assert sum(_logged_fallbacks(caplog)) == 1000, "every fallback accounted for"
    assert limiter.stats["fallbacks_slow"] == limiter.stats["fallbacks"] == 1000
    assert limiter.state == "closed", "slow replies below the threshold leave the circuit closed"


def test_a_down_backend_opens_the_circuit_at_once() -> None:
    limiter, primary, _ = make("local")
    primary.error = BackendDown("connection refused")
    primary.down = True
    assert limiter.hit("k", WIN).degraded
    assert limiter.state == "open"
    assert primary.calls == 1
    assert limiter.hit("k", WIN).degraded
    assert primary.calls == 1, "an open circuit does not call the primary"
    assert limiter.stats["fallbacks_down"] == 1
    assert limiter.stats["fallbacks_open"] == 1
    assert limiter.stats["circuit_opened"] == 1


def test_slow_failures_open_the_circuit_only_at_the_threshold() -> None:
    limiter, primary, _ = make("local")
    primary.error = BackendSlow("no reply")
    primary.down = True
    limiter.hit("k", WIN)
    limiter.hit("k", WIN)
    assert limiter.state == "closed"
    limiter.hit("k", WIN)
    assert limiter.state == "open"


def test_breaker_counts_consecutive_failures_only() -> None:
    limiter, primary, _ = make("allow")
    for _ in range(5):
        primary.down = True
        limiter.hit("k", WIN)
        limiter.hit("k", WIN)
        primary.down = False
        limiter.hit("k", WIN)
    assert limiter.state == "closed"


def test_resilient_never_raises_but_misuse_does() -> None:
    limiter, primary, _ = make("local")
    primary.error = RuntimeError("driver bug")
    primary.down = True
    assert limiter.hit("k", WIN).degraded
    assert limiter.peek("k", WIN).degraded
    limiter.reset("k")
    primary.down = False
    with pytest.raises(ConfigurationError):
        limiter.hit("k", WIN, cost=0)
    with pytest.raises(ConfigurationError):
        ResilientLimiter(primary, mode="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ResilientLimiter(primary, failure_threshold=0)
    with pytest.raises(ConfigurationError):
        ResilientLimiter(primary, cooldown=0)
    with pytest.raises(ConfigurationError):
        ResilientLimiter(primary, log_interval=-1)


async def test_resilient_async_path() -> None:
    limiter, primary, clock = make("local")
    assert not (await limiter.ahit("k", WIN)).degraded
    primary.down = True
    for _ in range(3):
        d = await limiter.ahit("k", WIN)
        assert d.degraded
    assert limiter.state == "open"
    assert (await limiter.apeek("k", WIN)).degraded
    await limiter.areset("k")
    primary.down = False
    clock.t = 6
    d = await limiter.apeek("k", WIN)
    assert not d.degraded
    assert limiter.state == "closed"


async def test_cancelled_probe_does_not_wedge_the_breaker() -> None:
    limiter, primary, clock = make("allow")
    primary.down = True
    for _ in range(3):
        limiter.hit("k", WIN)
    clock.t = 6

    async def hang(*args: object) -> RateDecision:
        await asyncio.sleep(3600)
        raise AssertionError  # pragma: no cover

    primary.ahit = hang  # type: ignore[method-assign]
    task = asyncio.create_task(limiter.ahit("k", WIN))
    await asyncio.sleep(0)
    assert limiter.hit("k", WIN).degraded, "others fall back while the probe is in flight"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    primary.down = False
    assert not limiter.hit("k", WIN).degraded, "the next request probes again"


def test_resilient_wraps_any_rate_limiter() -> None:
    limiter = ResilientLimiter(MemoryRateLimiter())
    assert isinstance(limiter, RateLimiter)
    assert limiter.hit("k").allowed
