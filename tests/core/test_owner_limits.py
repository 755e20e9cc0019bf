"""Per-owner (tenant) rate limits: a key's windows and its owner's, all-or-nothing.

The pair decision is checked against a brute-force reference that keeps two logs (the key's
and the owner's, which every key of the owner feeds) and applies the admission formula to the
union of both window sets; the memory backend must reach the same decisions.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.ratelimit import (
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RateState,
    ResilientLimiter,
    Window,
    decide,
    decide_pair,
    pair_plan,
    plan_for,
    rate_limit_headers,
)
from keyguard.core.verifier import Verifier, owner_bucket
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory

US = 1_000_000
T0 = 1_700_000_000


def ceil_s(us: int) -> int:
    return -(-us // US)


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- the brute-force reference -------------------------------------------------------------------


class Bucket:
    """One bucket's admitted units and last-seen time, with the formula applied literally."""

    def __init__(self, windows: tuple[Window, ...]) -> None:
        self.specs = plan_for(windows).specs  # (limit, period µs, bucket width µs, kind)
        self.units: list[int] = []
        self.last = -(2**62)

    def used(self, now: int, period: int) -> int:
        return sum(1 for u in self.units if now - period < u <= now)

    def kth(self, now: int, period: int, k: int) -> int:
        return sorted(u for u in self.units if now - period < u <= now)[k - 1]


def check_bucket(
    b: Bucket, now: int, d: RateDecision, offset: int, cost: int
) -> tuple[bool, bool, list[int]]:
    """Checks one bucket's share of a pair decision against the reference.

    Returns (some exact window violated, some bucketed window violated even one bucket late,
    the expected waits of the violated exact windows)."""
    exact_violation = late_violation = False
    waits = []
    taken = cost if d.allowed else 0
    for i, (limit, period, width, _kind) in enumerate(b.specs):
        used = b.used(now, period)
        remaining, reset = d.counts[2 * (offset + i)], d.counts[2 * (offset + i) + 1]
        bit = bool(d.violated_mask >> (offset + i) & 1)
        if d.allowed:
            assert used + cost <= limit, "never over-admits"
            assert not bit
        if width == 0:
            assert bit == (not d.allowed and used + cost > limit)
            assert remaining == max(0, limit - used - taken)
            if bit:
                exact_violation = True
                expected = (
                    ceil_s(period)
                    if cost > limit
                    else ceil_s(b.kth(now, period, used + cost - limit) + period - now)
                )
                waits.append(expected)
            elif used:
                expected = ceil_s(b.kth(now, period, 1) + period - now)
            else:
                expected = ceil_s(period) if d.allowed else 0
            assert reset == expected
        else:
            late = b.used(now, period + width)
            assert limit - late - taken <= remaining or remaining == 0
            assert remaining <= max(0, limit - used - taken)
            if bit:
                late_violation = late_violation or late + cost > limit
            assert 0 <= reset <= ceil_s(period + width)
    return exact_violation, late_violation, waits


def future_answers(state: RateState, windows: tuple[Window, ...], now: int) -> list[Any]:
    out = []
    for later in (0, 1, 10, 61, 3600, 86400):
        d, _ = decide(state.copy(), now / US + later, 1, windows, consume=False)
        out.append((d.allowed, d.retry_after, d.counts, d.violated_mask))
    return out


def same_decision(a: RateDecision, b: RateDecision) -> bool:
    assert a.plan is not None
    assert b.plan is not None
    return a._replace(plan=None) == b._replace(plan=None) and a.plan.windows == b.plan.windows


exact_window = st.tuples(st.integers(1, 6), st.sampled_from([1, 2, 5, 10, 30, 60, 3600]))
long_window = st.tuples(st.integers(1, 12), st.sampled_from([7200, 86400]))


def window_sets(kinds: Any) -> Any:
    return st.lists(kinds, min_size=1, max_size=3).map(
        lambda ws: tuple(Window(limit, period, f"w{i}") for i, (limit, period) in enumerate(ws))
    )


# The owner's limits are a little larger so that both kinds of refusal happen.
owner_exact = st.tuples(st.integers(2, 12), st.sampled_from([1, 5, 10, 60, 3600]))
owner_long = st.tuples(st.integers(2, 20), st.sampled_from([7200, 86400]))
STEPS_MS = [0, 0, 1, 500, 1000, 1000, 2000, 7000, 59_000, 61_000, 900_000, 3_600_000]
STEPS_MS += [7_200_000, 86_400_000, -1000, -30_000]
events = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(STEPS_MS), st.sampled_from([1, 1, 1, 2, 3, 7])),
    min_size=1,
    max_size=40,
)


@settings(database=None, deadline=None, max_examples=200)
@given(
    key_windows=st.lists(window_sets(st.one_of(exact_window, long_window)), min_size=3, max_size=3),
    owner_windows=window_sets(st.one_of(owner_exact, owner_long)),
    trace=events,
    stripes=st.sampled_from([1, 2, 64]),
)
def test_pair_decision_matches_the_reference(
    key_windows: list[tuple[Window, ...]],
    owner_windows: tuple[Window, ...],
    trace: list[tuple[int, int, int]],
    stripes: int,
) -> None:
    keys = [Bucket(w) for w in key_windows]
    owner = Bucket(owner_windows)
    key_states: list[RateState | None] = [None, None, None]
    owner_state: RateState | None = None
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, stripes=stripes)
    now_ms = T0 * 1000
    whole_seconds = True
    for k, step, cost in trace:
        now_ms += step
        whole_seconds = whole_seconds and now_ms % 1000 == 0
        kw, key = key_windows[k], keys[k]
        tk, to = max(now_ms * 1000, key.last), max(now_ms * 1000, owner.last)
        before = [None if s is None else s.copy() for s in (key_states[k], owner_state)]
        d, kstate, owner_state = decide_pair(
            key_states[k], owner_state, now_ms / 1000, cost, kw, owner_windows
        )
        key_states[k] = kstate
        clock.t = now_ms / 1000
        assert same_decision(limiter.hit_pair(f"k{k}", kw, "owner:acme", owner_windows, cost), d)

        assert d.plan is pair_plan(kw, owner_windows)
        assert len(d.counts) == 2 * (len(kw) + len(owner_windows))
        kx, kl, kwaits = check_bucket(key, tk, d, 0, cost)
        ox, ol, owaits = check_bucket(owner, to, d, len(kw), cost)
        exact_only = all(s[2] == 0 for s in key.specs + owner.specs)
        never = any(cost > s[0] for s in key.specs + owner.specs)
        if exact_only:
            # Exact windows only: admitted iff every window of both buckets has room.
            fits = all(
                b.used(t, s[1]) + cost <= s[0] for b, t in ((key, tk), (owner, to)) for s in b.specs
            )
            assert d.allowed == fits
        if d.allowed:
            assert d.retry_after is None
            assert d.violated_mask == 0
            key.units += [tk] * cost
            owner.units += [to] * cost
        else:
            assert d.violated_mask, "a refusal names the windows that refused it"
            assert kx or kl or ox or ol
            assert (d.retry_after is None) == never
            if exact_only and not never:
                assert d.retry_after == max(1, *kwaits, *owaits)
        key.last, owner.last = tk, to  # both buckets record the time, admitted or not
        if d.allowed:
            continue

        # Refused: nothing consumed in either bucket.
        for old, new, windows, t in (
            (before[0], kstate, kw, tk),
            (before[1], owner_state, owner_windows, to),
        ):
            if old is not None:
                assert len(new.log) <= len(old.log)
                assert future_answers(old, windows, t) == future_answers(new, windows, t)
        if d.retry_after is None:
            continue
        # Retry-After is sound (the same request is admitted then, if nothing else comes) and,
        # when both buckets share one clock reading, tight.
        r = d.retry_after
        pair = (kstate, owner_state, cost, kw, owner_windows)
        assert admitted_at(max(tk, to) + r * US, *pair)
        if tk == to:
            assert not admitted_at(tk + (r - 1) * US, *pair)
            if whole_seconds:
                assert not admitted_at(tk + r * US - 1000, *pair)


def admitted_at(
    when_us: int,
    key_state: RateState,
    owner_state: RateState,
    cost: int,
    key_windows: tuple[Window, ...],
    owner_windows: tuple[Window, ...],
) -> bool:
    """Whether the pair admits ``cost`` at ``when_us`` (on copies: changes nothing)."""
    d, _, _ = decide_pair(
        key_state.copy(), owner_state.copy(), when_us / US, cost, key_windows, owner_windows
    )
    return d.allowed


# -- examples ------------------------------------------------------------------------------------

KEY = (Window(5, 60, "minute"),)
OWNER = (Window(3, 60, "minute"),)


def test_owner_limit_is_shared_by_the_owners_keys() -> None:
    clock = FakeClock()
    lim = MemoryRateLimiter(clock=clock)
    assert isinstance(lim, RateLimiter)
    got = [lim.hit_pair(k, KEY, "owner:acme", OWNER).allowed for k in ("a", "b", "a", "b")]
    assert got == [True, True, True, False]
    # Another owner, and a key alone, are unaffected.
    assert lim.hit_pair("c", KEY, "owner:other", OWNER).allowed
    assert lim.hit("d", KEY).allowed
    clock.t += 60
    assert lim.hit_pair("b", KEY, "owner:acme", OWNER).allowed


def test_refusal_reports_the_violated_windows_and_the_latest_wait() -> None:
    state_k, state_o = RateState(), RateState()
    key = (Window(2, 10, "burst"), Window(10, 60, "minute"))
    owner = (Window(3, 60, "minute"),)
    decide_pair(state_k, state_o, T0, 1, key, owner)  # owner's first unit at T0
    decide_pair(state_k, state_o, T0 + 5, 1, key, owner)
    # Now the key's burst is full (frees at T0 + 10) and the owner has 1 unit left.
    d, _, _ = decide_pair(state_k, state_o, T0 + 6, 1, key, owner)
    assert not d.allowed
    assert d.retry_after == 4
    assert [w.name for w in d.violated] == ["burst"]
    # Both violated: the latest of the two waits (the key's T0 + 5 unit leaves its burst at
    # T0 + 15; the owner's T0 unit leaves at T0 + 60).
    d, _, _ = decide_pair(state_k, state_o, T0 + 6, 2, key, owner)
    assert [w.name for w in d.violated] == ["burst", "owner-minute"]
    assert d.retry_after == 54
    assert [w.name for w in d.windows] == ["burst", "minute", "owner-minute"]
    headers = dict(rate_limit_headers(d))
    assert headers["Retry-After"] == "54"
    assert headers["RateLimit"] == '"burst";r=0;t=9, "owner-minute";r=1;t=54'
    assert headers["RateLimit-Policy"] == (
        '"burst";q=2;w=10, "minute";q=10;w=60, "owner-minute";q=3;w=60'
    )
    # A cost above an owner limit can never pass.
    d, _, _ = decide_pair(None, None, T0, 4, (Window(9, 60),), owner)
    assert not d.allowed
    assert d.retry_after is None


def test_admitted_headers_report_both_window_sets() -> None:
    lim = MemoryRateLimiter(clock=FakeClock())
    d = lim.hit_pair("a", KEY, "owner:acme", OWNER)
    headers = dict(rate_limit_headers(d))
    assert headers["RateLimit"] == '"minute";r=4;t=60, "owner-minute";r=2;t=60'
    assert headers["X-RateLimit-Limit"] == "3"  # the owner's is the most constraining
    assert headers["X-RateLimit-Remaining"] == "2"


def test_pair_plan_names() -> None:
    plan = pair_plan(KEY, OWNER)
    assert [w.name for w in plan.windows] == ["minute", "owner-minute"]
    assert pair_plan(list(KEY), list(OWNER)) is plan, "cached by value"
    clash = (Window(1, 1, "owner-minute"),)
    long = (Window(5, 60, "a" * 30), Window(6, 60, "minute"))
    names = [w.name for w in pair_plan(clash, long).windows]
    assert names == ["owner-minute", "owner-0", "owner-1"]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("cost", [0, -1, True, 1.0])
def test_bad_cost_and_same_bucket_are_misuse(cost: Any) -> None:
    lim = MemoryRateLimiter()
    with pytest.raises(ConfigurationError):
        lim.hit_pair("a", KEY, "owner:acme", OWNER, cost)
    with pytest.raises(ConfigurationError):
        decide_pair(None, None, T0, cost, KEY, OWNER)
    with pytest.raises(ConfigurationError):
        lim.hit_pair("a", KEY, "a", OWNER)
    s = RateState()
    with pytest.raises(ConfigurationError):
        decide_pair(s, s, T0, 1, KEY, OWNER)


def test_pair_never_evicts_its_other_half() -> None:
    lim = MemoryRateLimiter(max_keys=1, stripes=1, clock=FakeClock())
    owner = (Window(2, 60, "m"),)
    assert lim.hit_pair("a", KEY, "owner:acme", owner).allowed
    assert lim.hit_pair("b", KEY, "owner:acme", owner).allowed
    assert not lim.hit_pair("c", KEY, "owner:acme", owner).allowed


def test_threads_across_keys_and_owners_admit_exactly_the_owner_limit() -> None:
    # Many stripes and pairs that cross them in both orders: the ordered locks never deadlock,
    # and the owner's limit holds exactly.
    lim = MemoryRateLimiter(stripes=8)
    key = (Window(1000, 60, "m"),)
    owner = (Window(25, 60, "m"),)
    barrier = threading.Barrier(64)
    results: dict[str, list[bool]] = {"owner:x": [], "owner:y": []}
    lock = threading.Lock()

    def worker(n: int) -> None:
        o = "owner:x" if n % 2 else "owner:y"
        barrier.wait()
        for i in range(10):
            d = lim.hit_pair(f"key{(n + i) % 13}", key, o, owner)
            with lock:
                results[o].append(d.allowed)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "deadlock"
    assert sum(results["owner:x"]) == 25
    assert sum(results["owner:y"]) == 25


async def test_async_pair() -> None:
    lim = MemoryRateLimiter(clock=FakeClock())
    got = [(await lim.ahit_pair(k, KEY, "owner:acme", OWNER)).allowed for k in "abab"]
    assert got == [True, True, True, False]


# -- the resilient wrapper -----------------------------------------------------------------------


class FlakyPair:
    def __init__(self) -> None:
        self.down = False
        self.inner = MemoryRateLimiter(clock=FakeClock())

    def hit_pair(self, *args: Any) -> RateDecision:
        if self.down:
            raise StoreUnavailable("Redis is unreachable (ConnectionError)")
        return self.inner.hit_pair(*args)

    async def ahit_pair(self, *args: Any) -> RateDecision:
        return self.hit_pair(*args)


@pytest.mark.parametrize("mode", ["local", "allow", "deny"])
async def test_resilient_pair(mode: str) -> None:
    primary = FlakyPair()
    lim = ResilientLimiter(
        primary,  # type: ignore[arg-type]
        fallback=MemoryRateLimiter(clock=FakeClock()),
        mode=mode,  # type: ignore[arg-type]
        clock=FakeClock(0.0),
    )
    d = lim.hit_pair("a", KEY, "owner:acme", OWNER)
    assert d.allowed
    assert not d.degraded
    primary.down = True
    sync = lim.hit_pair("a", KEY, "owner:acme", OWNER)
    for d in (sync, await lim.ahit_pair("a", KEY, "owner:acme", OWNER)):
        if mode == "local":
            assert d.allowed
            assert d.degraded
            assert [w.name for w in d.windows] == ["minute", "owner-minute"]
        elif mode == "allow":
            assert d.allowed
            assert d.degraded
            assert dict(rate_limit_headers(d))["RateLimit-Policy"].endswith(
                '"owner-minute";q=3;w=60'
            )
        else:
            assert not d.allowed
            assert d.unavailable


# -- the verifier --------------------------------------------------------------------------------


def world(**options: Any) -> tuple[Verifier, KeyFactory, FakeClock]:
    clock = FakeClock()
    store = MemoryStore()
    options.setdefault("limiter", MemoryRateLimiter(clock=clock))
    verifier = Verifier(store, clock=clock, monotonic=clock, brute_force=None, **options)
    return verifier, KeyFactory(store), clock


def test_verifier_paths_share_the_owner_limit() -> None:
    verifier, keys, _ = world(rate_limits="10/minute", owner_rate_limits="4/minute")
    assert verifier.owner_rate_limits == (Window(4, 60, "minute"),)
    a = keys.issue("agents:read", owner="acme")
    b = keys.issue("agents:read", owner="acme")
    lone = keys.issue("agents:read")
    other = keys.issue("agents:read", owner="globex")
    assert verifier.verify(f"UserKey {a.plaintext}").allowed
    assert verifier.verify_nowait(f"UserKey {a.plaintext}") is not None  # inline, memory
    assert asyncio.run(verifier.averify(f"UserKey {b.plaintext}")).allowed
    allowed = verifier.authenticate(f"UserKey {b.plaintext}")
    assert verifier.rate_limit(allowed).allowed  # the 4th unit of acme
    refused = asyncio.run(verifier.arate_limit(allowed))
    assert refused.code == "rate_limited"
    assert refused.retry_after == 60
    assert "owner" in refused.detail
    headers = dict(refused.extra_headers)
    assert headers["RateLimit"].startswith('"owner-minute";r=0;t=60')
    # Another owner has its own 4; a key without an owner only its own 10.
    assert [verifier.verify(f"UserKey {other.plaintext}").allowed for _ in range(5)] == [
        True,
        True,
        True,
        True,
        False,
    ]
    assert all(verifier.verify(f"UserKey {lone.plaintext}").allowed for _ in range(10))


def test_verifier_owner_cost_above_the_owner_limit() -> None:
    verifier, keys, _ = world(rate_limits="10/minute", owner_rate_limits="2/hour")
    a = keys.issue("agents:read", owner="acme")
    d = verifier.rate_limit(verifier.authenticate(f"UserKey {a.plaintext}"), cost=3)
    assert not d.allowed
    assert d.retry_after == 3600
    assert "owner" in d.detail


def test_verifier_owner_limit_configuration() -> None:
    with pytest.raises(ConfigurationError):
        world(rate_limits=None, limiter=None, owner_rate_limits="3/minute")

    class HitOnly:
        def hit(self, *args: Any) -> RateDecision:
            raise AssertionError

    with pytest.raises(ConfigurationError):
        world(limiter=HitOnly(), owner_rate_limits="3/minute")
    with pytest.raises(ConfigurationError):
        world(owner_rate_limits="3/fortnight")
    # A window name too long for the "owner-" prefix, or clashing, gets a positional name.
    verifier, _, _ = world(
        owner_rate_limits=[Window(3, 60, "a" * 30)], rate_limits=[Window(1, 1, "owner-0")]
    )
    assert verifier.rate_limits is not None
    assert verifier.owner_rate_limits is not None
    plan = pair_plan(verifier.rate_limits, verifier.owner_rate_limits)
    assert [w.name for w in plan.windows] == ["owner-0", "owner-0-2"]


def test_owner_bucket_is_injective_and_redis_safe() -> None:
    assert owner_bucket("acme") == "owner:acme"
    odd = owner_bucket("Acme Corp {eu}")
    assert not any(c in odd for c in "{} \t")
    assert owner_bucket("a b") != owner_bucket("a%20b")
