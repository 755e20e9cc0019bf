"""MemoryRateLimiter.admit / admitter(): the generated function the verifier's fast path calls
must be the limiter's own hit() followed by the header renderer — the same clock reading, the
same bucket state (created, moved to the LRU end, evicted), the same refusals and errors."""

from __future__ import annotations

import linecache
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    MemoryRateLimiter,
    RateDecision,
    admitted_headers,
    admitted_headers_asgi,
    parse_windows,
    plan_for,
)

WINDOW_SETS = [
    DEFAULT_WINDOWS,
    parse_windows("2/second, 4/10s, 6/2h"),  # two exact windows and a bucketed one
    parse_windows("3/minute"),
    parse_windows("3/hour, 5/day"),  # bucketed only
]


class Clock:
    """A settable clock (seconds), read by both limiters of a twin."""

    def __init__(self) -> None:
        self.now = 1_700_000.0

    def __call__(self) -> float:
        return self.now


def twins(clock: Clock, max_keys: int, stripes: int) -> tuple[MemoryRateLimiter, ...]:
    return tuple(MemoryRateLimiter(max_keys=max_keys, stripes=stripes, clock=clock) for _ in "ab")


steps = st.lists(
    st.tuples(
        st.integers(0, 5),  # which bucket (more buckets than the small limiters hold)
        st.integers(1, 3),  # cost
        # seconds to the next request: sub-microsecond parts, bursts, gaps, a step back
        st.one_of(
            st.floats(0, 2, allow_nan=False),
            st.sampled_from([0.0, 0.0000004, 0.0000006, 10.0, 3600.0, -1.5]),
        ),
    ),
    min_size=1,
    max_size=80,
)


@given(
    windows=st.sampled_from(WINDOW_SETS),
    ops=steps,
    size=st.sampled_from([(2, 1), (3, 1), (4, 2), (100, 4)]),
    ietf=st.booleans(),
    legacy=st.booleans(),
    text=st.booleans(),
)
def test_admit_is_hit_then_the_headers(
    windows: tuple[object, ...],
    ops: list[tuple[int, int, float]],
    size: tuple[int, int],
    ietf: bool,
    legacy: bool,
    text: bool,
) -> None:
    clock = Clock()
    fused, plain = twins(clock, *size)
    plan = plan_for(windows)  # type: ignore[arg-type]
    render = admitted_headers if text else admitted_headers_asgi
    for bucket, cost, dt in ops:
        clock.now += dt
        name = f"key-{bucket}"
        got = fused.admit(name, windows, cost, ietf, legacy, text)  # type: ignore[arg-type]
        want = plain.hit(name, windows, cost)  # type: ignore[arg-type]
        if want.allowed:
            assert got == render(plan, want.counts, ietf, legacy)
        else:
            assert type(got) is RateDecision
            assert got == want
        assert len(fused) == len(plain)
    # The same buckets kept (the same evicted), in the same state.
    for bucket in range(6):
        name = f"key-{bucket}"
        assert fused.peek(name, windows) == plain.peek(name, windows)  # type: ignore[arg-type]


def test_the_least_recently_used_bucket_is_the_one_evicted() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(max_keys=2, stripes=1, clock=clock)
    admit = limiter.admitter(DEFAULT_WINDOWS)
    for name in ("a", "b", "a"):  # a is used again: b is now the least recent
        assert type(admit(name, 1, True, True)) is list
    assert type(admit("c", 1, True, True)) is list  # one bucket too many: b goes
    assert len(limiter) == 2
    assert limiter.peek("a").counts[0] == 18  # a keeps its two units
    assert limiter.peek("b").counts[0] == 20  # b was forgotten
    assert limiter.peek("c").counts[0] == 19


def test_a_unit_counts_from_the_rounded_microsecond() -> None:
    """The clock is rounded to the nearest microsecond, as hit() rounds it: a unit taken at
    0.6 µs counts from 1 µs, so it is still in a 10 s window at exactly 10 s."""

    def readings() -> Iterator[float]:
        yield 1_000.0000006
        yield 1_010.0

    for call in ("admit", "hit"):
        limiter = MemoryRateLimiter(clock=readings().__next__)
        windows = parse_windows("1/10s")
        first = getattr(limiter, call)("k", windows)
        second = getattr(limiter, call)("k", windows)
        assert not isinstance(first, RateDecision) or first.allowed, call
        assert isinstance(second, RateDecision), call
        assert not second.allowed, call


class _One(int):
    """An int subclass equal to 1, but not CPython's cached 1."""


@pytest.mark.parametrize("cost", [0, -1, 1.5, "1", None, True, 1.0, _One(1)])
def test_a_bad_cost_is_refused_before_anything_is_counted(cost: object) -> None:
    """Nothing but an int >= 1: not even what equals 1 (a bool, a float, an int subclass),
    which the function's identity fast pass for a cost of 1 must not let through."""
    limiter = MemoryRateLimiter()
    admit = limiter.admitter(DEFAULT_WINDOWS)
    with pytest.raises(ConfigurationError, match="cost"):
        admit("k", cost, True, True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cost"):
        limiter.admit("k", DEFAULT_WINDOWS, cost)  # type: ignore[arg-type]
    assert len(limiter) == 0


@pytest.mark.parametrize("text", [False, True], ids=["asgi", "text"])
def test_a_cost_of_one_runs_the_unit_body_and_any_other_the_general_one(text: bool) -> None:
    """The admitter runs its own body, generated for a cost of 1 (``used < limit``), for a
    cost of 1, and hands every other cost to the body generated for any cost: both count
    alike (the differential test above holds the answers equal)."""
    limiter = MemoryRateLimiter(clock=lambda: 1_000.0)
    admit = limiter.admitter(DEFAULT_WINDOWS, text)
    general = admit.__globals__["any_cost"]
    handed: list[int] = []

    def spy(bucket: str, cost: int, ietf: bool, legacy: bool) -> Any:
        handed.append(cost)
        return general(bucket, cost, ietf, legacy)

    admit.__globals__["any_cost"] = spy
    try:
        assert type(admit("k", 1, True, True)) is not RateDecision
        assert type(admit("k", 3, True, True)) is not RateDecision
        assert type(admit("k", 1, True, True)) is not RateDecision
    finally:
        admit.__globals__["any_cost"] = general
    assert handed == [3]
    assert limiter.peek("k", DEFAULT_WINDOWS).counts[0] == 20 - 5  # 1 + 3 + 1 units taken
    lines = linecache.getlines(admit.__code__.co_filename)
    unit = lines[admit.__code__.co_firstlineno - 1 :]
    assert any("u0 < 20" in line for line in unit)
    assert not any("cost <= 20" in line for line in unit)


def test_a_traceback_through_generated_code_shows_its_lines() -> None:
    """The generated functions' source is registered with linecache: a traceback (and a
    profiler or tracer) shows the generated line, not an empty one."""
    limiter = MemoryRateLimiter()
    plan = plan_for(DEFAULT_WINDOWS)
    cases: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: limiter.admitter(DEFAULT_WINDOWS)("k", 0, True, True), ConfigurationError, "cost"),
        (
            lambda: limiter.admitter(DEFAULT_WINDOWS, True)("k", 0, True, True),
            ConfigurationError,
            "cost",
        ),
        (lambda: plan.run(None, 1, 1, True), AttributeError, "state.last"),  # type: ignore[arg-type]
        (lambda: admitted_headers_asgi(plan, None), TypeError, "c[0]"),  # type: ignore[arg-type]
        (lambda: admitted_headers(plan, None), TypeError, "c[0]"),  # type: ignore[arg-type]
    ]
    for call, error, text in cases:
        with pytest.raises(error) as info:
            call()
        frames = traceback.extract_tb(info.value.__traceback__)
        generated = [f for f in frames if f.filename.startswith("<keyguard.ratelimit")]
        assert generated, [f.filename for f in frames]
        assert text in (generated[-1].line or ""), generated[-1]


def test_one_function_per_window_set_and_kind_named_after_both() -> None:
    limiter = MemoryRateLimiter()
    windows = parse_windows("9/second, 11/minute")
    asgi, text = limiter.admitter(windows), limiter.admitter(windows, True)
    assert limiter.admitter(windows) is asgi
    assert limiter.admitter(parse_windows("9/second, 11/minute")) is asgi  # by value
    assert text is not asgi
    named = "WindowPlan('9/second, 11/minute')>"
    assert asgi.__code__.co_filename == f"<keyguard.ratelimit bound asgi admit {named}"
    assert text.__code__.co_filename == f"<keyguard.ratelimit bound text admit {named}"
    # Another limiter has functions of its own (they hold its stripes).
    assert MemoryRateLimiter().admitter(windows) is not asgi


def test_the_functions_kept_are_bounded() -> None:
    """admit() takes any window set: the functions kept for them never grow without bound."""
    limiter = MemoryRateLimiter()
    for limit in range(1, 200):
        assert type(limiter.admit("k", parse_windows(f"{limit}/hour"))) is list
    assert 0 < len(limiter._admitters) <= 64
