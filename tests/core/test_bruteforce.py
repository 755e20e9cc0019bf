"""The brute-force guard (failed authentications per address) and client address resolution."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.bruteforce import BruteForceGuard, client_address
from keyguard.core.errors import ConfigurationError

PROPS = settings(database=None, deadline=None, max_examples=200)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- client_address ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "xff", "proxies", "expected"),
    [
        pytest.param("203.0.113.7", None, 0, "203.0.113.7", id="peer"),
        pytest.param("203.0.113.7", "198.51.100.1", 0, "203.0.113.7", id="xff-untrusted"),
        pytest.param("10.0.0.2", "198.51.100.1", 1, "198.51.100.1", id="one-proxy"),
        pytest.param(
            "10.0.0.2", "6.6.6.6, 198.51.100.1", 1, "198.51.100.1", id="spoofed-left-ignored"
        ),
        pytest.param("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.9", 2, "198.51.100.1", id="two"),
        pytest.param("10.0.0.2", "198.51.100.1", 2, "10.0.0.2", id="too-few-entries"),
        pytest.param("10.0.0.2", "", 1, "10.0.0.2", id="empty-header"),
        pytest.param("10.0.0.2", "unknown", 1, None, id="garbage-entry"),
        pytest.param("10.0.0.2", " 198.51.100.1 ", 1, "198.51.100.1", id="whitespace"),
        pytest.param("10.0.0.2", "[2001:DB8::1]:4711", 1, "2001:db8::1", id="v6-port"),
        pytest.param("10.0.0.2", "198.51.100.1:4711", 1, "198.51.100.1", id="v4-port"),
        pytest.param("2001:0db8:0000::0001", None, 0, "2001:db8::1", id="v6-canonical"),
        pytest.param("::ffff:198.51.100.1", None, 0, "198.51.100.1", id="v4-mapped"),
        pytest.param("testclient", None, 0, "testclient", id="non-ip-peer"),
        pytest.param(None, None, 0, None, id="no-peer"),
        pytest.param(None, "198.51.100.1", 1, "198.51.100.1", id="xff-without-peer"),
        pytest.param("1.2.3.4", "x" * 100, 1, None, id="oversized-entry"),
    ],
)
def test_client_address(peer: str | None, xff: str | None, proxies: int, expected: str) -> None:
    assert client_address(peer, xff, trusted_proxies=proxies) == expected


@pytest.mark.parametrize("proxies", [-1, True, 1.0])
def test_client_address_rejects_bad_trusted_proxies(proxies: object) -> None:
    with pytest.raises(ConfigurationError):
        client_address("1.2.3.4", None, trusted_proxies=proxies)  # type: ignore[arg-type]


# -- the guard -----------------------------------------------------------------------------------


def test_blocks_after_threshold_failures_in_window() -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=3, window=60, clock=clock)
    assert guard.is_blocked("1.2.3.4") is None
    assert guard.record_failure("1.2.3.4") is None
    clock.t += 10
    assert guard.record_failure("1.2.3.4") is None
    clock.t += 10
    assert guard.record_failure("1.2.3.4") == 40  # the first failure leaves at +60
    assert guard.is_blocked("1.2.3.4") == 40
    clock.t += 39.5
    assert guard.is_blocked("1.2.3.4") == 1
    clock.t += 0.5
    assert guard.is_blocked("1.2.3.4") is None


def test_guard_is_per_address_never_per_key() -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=2, window=60, clock=clock)
    guard.record_failure("6.6.6.6")
    guard.record_failure("6.6.6.6")
    assert guard.is_blocked("6.6.6.6") is not None
    # The owner of the key the attacker tried, calling from anywhere else, is unaffected.
    assert guard.is_blocked("198.51.100.1") is None
    # An unknown address is never counted or blocked.
    assert guard.record_failure(None) is None
    assert guard.is_blocked(None) is None
    guard.reset("6.6.6.6")
    assert guard.is_blocked("6.6.6.6") is None


def test_continued_failures_keep_an_address_blocked() -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=2, window=10, clock=clock)
    assert guard.record_failure("a") is None
    for _ in range(10):
        clock.t += 4
        # Each new failure refreshes the block: the previous one is still in the window.
        assert guard.record_failure("a") == 6


def test_clock_backwards_keeps_order() -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=2, window=10, clock=clock)
    guard.record_failure("a")
    clock.t -= 100
    assert guard.record_failure("a") == 110


def test_guard_memory_is_bounded() -> None:
    guard = BruteForceGuard(threshold=1, window=60, max_clients=3, clock=FakeClock())
    for addr in "abcd":
        guard.record_failure(addr)
    assert len(guard) == 3
    assert guard.is_blocked("a") is None  # evicted first
    assert guard.is_blocked("d") is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0},
        {"threshold": True},
        {"window": 0},
        {"window": float("inf")},
        {"window": "1"},
        {"max_clients": 0},
    ],
)
def test_guard_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        BruteForceGuard(**kwargs)  # type: ignore[arg-type]


async def test_guard_async_api() -> None:
    guard = BruteForceGuard(threshold=1, window=5, clock=FakeClock())
    assert await guard.ais_blocked("a") is None
    assert await guard.arecord_failure("a") == 5
    assert await guard.ais_blocked("a") == 5
    await guard.areset("a")
    assert await guard.ais_blocked("a") is None


@PROPS
@given(
    threshold=st.integers(1, 5),
    window=st.sampled_from([1.0, 5.0, 60.0]),
    events=st.lists(
        # Steps exact in binary floating point (0.125, not 0.1): the model and the guard then
        # agree on which failures sit exactly on the window's edge.
        st.tuples(st.sampled_from([0.0, 0.125, 0.5, 1.0, 2.5, 5.0, 61.0]), st.booleans()),
        max_size=40,
    ),
)
def test_guard_matches_sliding_window_model(
    threshold: int, window: float, events: list[tuple[float, bool]]
) -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=threshold, window=window, clock=clock)
    failures: list[float] = []
    for step, fail in events:
        clock.t += step
        if fail:
            guard.record_failure("x")
            failures.append(clock.t)
        now = clock.t
        inside = sorted(f for f in failures if f > now - window)
        retry = guard.is_blocked("x")
        if len(inside) >= threshold:
            # Unblocked once enough of the oldest failures have left the window.
            release = inside[len(inside) - threshold] + window
            assert retry is not None
            assert retry >= 1
            assert retry - 1 < release - now <= retry
        else:
            assert retry is None
