"""The pure rate-limit decision, pinned where the reference model of test_ratelimit.py is
loose: the exact bucketing of long windows, peeks, key+owner pairs, the state's equality and
the exact messages of misuse."""

from __future__ import annotations

from importlib import import_module

import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    LONG_WINDOW_BUCKETS,
    RateDecision,
    RateState,
    Window,
    admitted_headers,
    admitted_headers_asgi,
    decide,
    decide_pair,
    pair_plan,
    plan_for,
)
from keyguard.core.ratelimit.state import _Ring
from keyguard.core.ratelimit.windows import MAX_LIMIT

decide_module = import_module("keyguard.core.ratelimit.decide")  # not the function
plan_module = import_module("keyguard.core.ratelimit.plan")
T0 = 1_700_000_000
DAY = 86400
WIDTH_2H = 7200 // LONG_WINDOW_BUCKETS  # 75 s: the bucket width of a two-hour window


# -- long windows: one bucket per aligned slice, released with its latest unit --------------------


def test_a_bucket_is_one_aligned_slice_of_time() -> None:
    """Units admitted in two slices sit in two buckets, even a moment apart: the earlier
    bucket leaves the window with its own latest unit, not with the later one's."""
    windows = (Window(4, 7200, "two-hours"),)
    slice_end = T0 - T0 % WIDTH_2H + WIDTH_2H  # the start of the next slice
    d, state = decide(None, slice_end - 1, 2, windows)  # the last second of a slice
    assert d.allowed
    d, state = decide(state, slice_end + 1, 2, windows)  # the first seconds of the next
    assert d.allowed
    d, state = decide(state, slice_end - 1 + 7200 - 0.001, 2, windows)
    assert not d.allowed
    assert d.retry_after == 1
    # The first slice's units leave at (their time + period); the second's are still in.
    d, state = decide(state, slice_end - 1 + 7200, 2, windows)
    assert d.allowed
    d, state = decide(state, slice_end - 1 + 7200, 1, windows)
    assert not d.allowed
    assert d.retry_after == 2


def test_units_within_one_slice_share_a_bucket() -> None:
    windows = (Window(4, 7200, "two-hours"),)
    start = T0 - T0 % WIDTH_2H  # the start of a slice
    d, state = decide(None, start, 2, windows)
    d, state = decide(state, start + WIDTH_2H - 1, 2, windows)  # the same slice
    ring = state.rings[7200 * 10**6]
    assert ring.buckets[1::2] == [4]  # one bucket: (last, units) pairs, flat
    # The whole bucket leaves with its latest unit: one bucket late at most.
    d, state = decide(state, start + 7200, 1, windows)
    assert not d.allowed
    assert d.retry_after == WIDTH_2H - 1


def test_a_bucket_of_huge_counts_leaves_on_time() -> None:
    """Counts up to 2**40 and timestamps near zero (a test clock, a fresh monotonic clock):
    a bucket's release time is its latest unit's time plus the period, never its count."""
    windows = (Window(MAX_LIMIT, 7200, "huge"),)
    d, state = decide(None, 0.0, 1, windows)  # bucket A at 0 s
    assert d.allowed
    d, state = decide(state, WIDTH_2H, 10**9, windows)  # bucket B at 75 s: 10^9 units
    assert d.allowed
    d, state = decide(state, 7200.000001, 1, windows)  # A leaves; B is still in
    assert d.allowed
    assert d.counts == (MAX_LIMIT - 10**9 - 1, WIDTH_2H)
    d, state = decide(state, 7200 + WIDTH_2H, MAX_LIMIT - 1, windows)  # B and the unit left
    assert d.allowed


def test_reset_values_are_whole_seconds() -> None:
    """A sub-second window reports whole seconds, rounded up, as integers (header values)."""
    d, state = decide(None, T0, 1, (Window(5, 0.5, "half"), Window(7, 1.5, "one-and-a-half")))
    assert d.counts == (4, 1, 6, 2)
    assert all(type(c) is int for c in d.counts)
    d, state = decide(state, T0 + 0.25, 5, (Window(5, 0.5, "half"),))
    assert not d.allowed
    assert d.retry_after == 1
    assert all(type(c) is int for c in d.counts)


# -- peeks ---------------------------------------------------------------------------------------


def test_a_peek_reports_the_counts_without_this_request() -> None:
    """``consume=False`` answers whether the request would be admitted, and reports what
    the windows hold now: nothing taken, no reset for a window this request would start."""
    windows = (Window(20, 10, "burst"), Window(5000, DAY, "day"))
    peek, state = decide(None, T0, 3, windows, consume=False)
    assert peek.allowed
    assert peek.counts == (20, 0, 5000, 0)
    assert state == RateState()
    hit, state = decide(state, T0, 3, windows)
    assert hit.counts == (17, 10, 4997, DAY)
    peek, state = decide(state, T0 + 1, 3, windows, consume=False)
    assert peek.counts == (17, 9, 4997, DAY - 1)


# -- key and owner together ----------------------------------------------------------------------


def test_a_refused_pair_is_neither_degraded_nor_unavailable() -> None:
    key = (Window(1, 10, "burst"),)
    owner = (Window(5, 10, "burst"),)
    d, ks, os_ = decide_pair(None, None, T0, 1, key, owner)
    assert d.allowed
    d, ks, os_ = decide_pair(ks, os_, T0 + 1, 1, key, owner)
    assert d == RateDecision(False, 9, pair_plan(key, owner), (0, 9, 4, 9), 0b01, False, False)
    assert d.degraded is False
    assert d.unavailable is False


def _owner_names(key: tuple[Window, ...], owner: tuple[Window, ...]) -> list[str]:
    return [w.name for w in pair_plan(key, owner).windows[len(key) :]]


def test_owner_window_names_up_to_32_characters_are_kept() -> None:
    key = (Window(10, 1, "burst"),)
    name26 = "n" * 26  # "owner-" + 26 = 32 characters: the longest window name
    name27 = "n" * 27
    assert _owner_names(key, (Window(5, 1, name26),)) == ["owner-" + name26]
    assert _owner_names(key, (Window(5, 1, name27),)) == ["owner-0"]


def test_fallback_owner_names_never_clash_with_each_other() -> None:
    key = (Window(10, 1, "burst"),)
    # The first owner window falls back to "owner-0"; the second is named "0", which would
    # become "owner-0" too: it must fall back to its own positional name.
    owner = (Window(5, 1, "n" * 27), Window(50, 60, "0"))
    assert _owner_names(key, owner) == ["owner-0", "owner-1"]
    # And a key window named like a renamed owner window pushes that one aside.
    assert _owner_names((Window(10, 1, "owner-burst"),), (Window(5, 1, "burst"),)) == ["owner-0"]


def test_pair_plans_are_cached_by_value_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict[object, object] = {}
    monkeypatch.setattr(decide_module, "_PAIR_PLANS", cache)
    key = (Window(10, 1, "burst"),)
    first = pair_plan(key, (Window(5, 1, "burst"),))
    assert pair_plan(list(key), [Window(5, 1, "burst")]) is first
    for limit in range(1, 1100):
        pair_plan(key, (Window(limit, 1, "burst"),))
        assert len(cache) <= 1024
    assert len(cache) == 1099 - 1024


# -- the state -----------------------------------------------------------------------------------


def _state(last: int, log: list[int], ring: list[list[int]] | None = None) -> RateState:
    state = RateState()
    state.last = last
    state.log.extend(log)
    if ring is not None:
        r = state.rings[DAY * 10**6] = _Ring()
        for last, units in ring:
            r.buckets.extend((last, units))
        r.total = sum(b[1] for b in ring)
    return state


def test_states_are_equal_only_when_every_part_is() -> None:
    base = _state(5, [1, 2], [[3, 1]])
    assert base == _state(5, [1, 2], [[3, 1]])
    assert base != _state(6, [1, 2], [[3, 1]])  # last
    assert base != _state(5, [1, 3], [[3, 1]])  # log
    assert base != _state(5, [1, 2], [[3, 2]])  # ring units
    assert base != _state(5, [1, 2], [[4, 1]])  # ring time
    assert base != _state(5, [1, 2])  # no ring
    # Empty rings are not part of the state: a window that never counted anything.
    assert _state(5, [], []) == _state(5, [])
    assert base.__eq__(object()) is NotImplemented


# -- misuse ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cost", [0, -1, True, 1.5])
def test_bad_cost_message(cost: object) -> None:
    message = f"rate-limit cost must be an integer >= 1, got {cost!r}"
    with pytest.raises(ConfigurationError) as info:
        decide(None, T0, cost)  # type: ignore[arg-type]
    assert str(info.value) == message
    with pytest.raises(ConfigurationError) as info:
        decide_pair(None, None, T0, cost)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_pair_needs_two_states() -> None:
    state = RateState()
    with pytest.raises(ConfigurationError) as info:
        decide_pair(state, state, T0, 1)
    assert str(info.value) == "a key and its owner need two distinct rate-limit states"


# -- the compiled plan: what the Redis script is given ------------------------------------------


def test_redis_script_arguments_are_exact() -> None:
    """The Lua script decides from these strings alone (TTL ms, longest exact period µs, the
    window count, then limit, period µs and bucket width µs per window; width 0 = exact), so
    they must be exactly the integers the in-process decision uses."""
    assert plan_for(DEFAULT_WINDOWS).redis_args == (
        "87301000", "60000000", "3",
        "20", "10000000", "0",
        "100", "60000000", "0",
        "5000", "86400000000", "900000000",
    )  # fmt: skip
    # A period that 96 buckets do not divide: the width is rounded up, so that 96 buckets
    # always cover the period. No exact window: the longest exact period is 0.
    odd = plan_for((Window(3, 3601, "odd"),))
    assert odd.redis_args == ("3639510", "0", "1", "3", "3601000000", "37510417")
    assert odd.specs == ((3, 3601 * 10**6, 37510417, 2),)
    assert odd.max_exact == 0


def test_long_windows_alone_keep_no_log() -> None:
    windows = (Window(3, 7200, "a"), Window(20_000, 60, "b"))  # both bucketed
    d, state = decide(None, T0, 2, windows)
    assert d.allowed
    assert not state.log


# -- the compiled plan: header fragments ---------------------------------------------------------


def test_policy_field_states_whole_seconds_of_at_least_one() -> None:
    plan = plan_for((Window(5, 0.5, "half"), Window(7, 1, "second"), Window(9, 2.5, "odd")))
    assert plan.policy == '"half";q=5;w=1, "second";q=7;w=1, "odd";q=9;w=3'
    assert plan.header_policy == ("RateLimit-Policy", plan.policy)


@pytest.mark.parametrize("ietf", [True, False])
@pytest.mark.parametrize("legacy", [True, False])
def test_asgi_headers_are_the_text_headers_as_bytes(ietf: bool, legacy: bool) -> None:
    """The ASGI fragments are built apart (so a response pays no encoding): they must say
    exactly what the text headers say, with lower-case names."""
    windows = (Window(20, 10, "burst"), Window(100, 60, "minute"), Window(5000, DAY, "day"))
    state = None
    for step in range(25):
        d, state = decide(state, T0 + step * 0.3, 1 + step % 2, windows)
        if not d.allowed:
            continue
        plan = d.plan
        assert plan is not None
        text = admitted_headers(plan, d.counts, ietf, legacy)
        expected = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in text]
        assert admitted_headers_asgi(plan, d.counts, ietf, legacy) == expected


def test_a_cost_above_a_limit_reports_the_period_in_whole_seconds() -> None:
    d, _ = decide(None, T0, 2, (Window(1, 0.5, "half"), Window(9, 10, "ten")))
    assert not d.allowed
    assert d.retry_after is None  # never admitted
    assert d.counts == (1, 1, 9, 0)
    assert all(type(c) is int for c in d.counts)


# -- refusals: every window's count, not only the refusing one's ---------------------------------


def test_a_refusal_reports_every_window() -> None:
    """Refused by the burst window: the other windows still report their remaining units and
    when their oldest unit leaves (a day window's bucket too), as whole seconds."""
    windows = (Window(2, 10, "burst"), Window(50, DAY, "day"), Window(30_000, 7200, "two-h"))
    d, state = decide(None, T0, 2, windows)
    d, state = decide(state, T0 + 4, 1, windows)
    assert d == RateDecision(
        False, 6, plan_for(windows), (0, 6, 48, DAY - 4, 29_998, 7200 - 4), 0b001, False, False
    )
    assert all(type(c) is int for c in d.counts)
    # With nothing counted yet in the long windows, their reset is 0.
    windows = (Window(1, 10, "burst"), Window(50, DAY, "day"))
    d, state = decide(None, T0, 2, windows)
    assert d.counts == (1, 10, 50, 0)
    assert d.degraded is False


def test_a_lowered_limit_reports_no_negative_remaining() -> None:
    """A key's limit lowered below what its state already holds (an operator tightening a
    plan): the refusal reports 0 remaining, never a negative number, in every window kind."""
    before = (Window(10, 10, "burst"), Window(20_000, DAY, "day"))
    after = (Window(3, 10, "burst"), Window(12_000, DAY, "day"))
    _, state = decide(None, T0, 15_000, before[1:])  # the day window alone first
    for _ in range(5):
        _, state = decide(state, T0, 1, before)
    d, state = decide(state, T0 + 1, 1, after)
    assert not d.allowed
    assert d.counts == (0, 9, 0, DAY - 1)
    assert d.violated_mask == 0b11


def test_times_before_zero_are_times_too() -> None:
    """A test clock may start anywhere: a fresh state has seen no time at all, so the first
    decision happens at the time it is given, even a negative one."""
    windows = (Window(1, 10, "burst"),)
    d, state = decide(None, -1.0, 1, windows)
    assert d.allowed
    assert d.counts == (0, 10)
    d, state = decide(state, -0.5, 1, windows)
    assert d.retry_after == 10  # the unit at -1.0 s leaves at 9.0 s: 9.5 s from now
    d, state = decide(state, 9.0, 1, windows)
    assert d.allowed


# -- plans are cached, and the caches are bounded ------------------------------------------------


def test_a_recycled_id_never_returns_another_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans are cached by id() of the window tuple for speed; an id may be reused once its
    tuple is freed, so a cached plan is used only for the very tuple it was made for."""
    by_id: dict[int, object] = {}
    monkeypatch.setattr(plan_module, "_PLANS_BY_ID", by_id)
    a = (Window(5, 10, "a"),)
    b = (Window(7, 60, "b"),)
    by_id[id(b)] = plan_for(a)  # as if b now lived where a freed tuple lived
    assert plan_for(b).windows == b
    assert by_id[id(b)] is plan_for(b)  # b's own plan replaced the stale entry
    assert plan_for(list(b)) is plan_for(b)  # by value too
    assert id(list(b)) not in by_id or by_id[id(list(b))] is not None


def test_plan_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    by_value: dict[object, object] = {}
    by_id: dict[int, object] = {}
    monkeypatch.setattr(plan_module, "_PLANS", by_value)
    monkeypatch.setattr(plan_module, "_PLANS_BY_ID", by_id)
    kept = []
    for limit in range(1, 1100):
        windows = (Window(limit, 1, "w"),)
        kept.append(windows)  # alive, so that no id() is reused during the test
        assert plan_for(windows).windows is windows
        assert len(by_value) <= 1024
        assert len(by_id) <= 1024
    assert len(by_value) == len(by_id) == 1099 - 1024


@pytest.mark.parametrize("spec", ["20/10s, 100/minute, 5000/day", "5/second", "7/hour, 9/day"])
def test_asgi_header_fragments_are_the_text_ones_lower_cased_and_encoded(spec: str) -> None:
    """ASGI servers take header names as lower-case bytes. Built inside the test (not from a
    cached plan made at import) so that mutation testing maps WindowPlan.__init__ to it."""
    from keyguard.core.ratelimit import parse_windows

    plan = plan_module.WindowPlan(parse_windows(spec))
    name, value = plan.header_policy
    assert plan.asgi_policy == (b"ratelimit-policy", value.encode("latin-1"))
    assert name.lower() == "ratelimit-policy"
    assert plan.asgi_ratelimit == plan.header_ratelimit.encode("latin-1")
    assert plan.asgi_limits == tuple(s.encode("latin-1") for s in plan.header_limits)
