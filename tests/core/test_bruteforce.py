"""The brute-force guard (failed authentications per address) and client address resolution."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core import bruteforce
from keyguard.core.addresses import (
    MAX_ADDRESS_LENGTH,
    canonical_address,
    client_address,
    join_field_lines,
    network_key,
    peer_address,
)
from keyguard.core.bruteforce import (
    UNKNOWN_CLIENT,
    BruteForceGuard,
    ajudge_failure,
    client_bucket,
    judge_failure,
)
from keyguard.core.decision import Decision
from keyguard.core.errors import ConfigurationError, ErrorCode
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore

PROPS = settings(database=None, deadline=None, max_examples=300)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- client_address ------------------------------------------------------------------------------

SCOPED_64 = "fe80::1%" + "a" * 56  # a valid address exactly MAX_ADDRESS_LENGTH long


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
        pytest.param("10.0.0.2", "198.51.100.1, 10.0.0.9", 2, "198.51.100.1", id="two-exact"),
        pytest.param(
            "10.0.0.2", "1.1.1.1, 6.6.6.6, 198.51.100.1", 1, "198.51.100.1", id="one-of-three"
        ),
        pytest.param(
            "10.0.0.2",
            "1.1.1.1, 2.2.2.2, 6.6.6.6, 198.51.100.1, 10.0.0.9",
            2,
            "198.51.100.1",
            id="two-of-five",
        ),
        pytest.param("10.0.0.2", "198.51.100.1", 2, "10.0.0.2", id="too-few-entries"),
        pytest.param("10.0.0.2", "", 1, "10.0.0.2", id="empty-header"),
        pytest.param("10.0.0.2", "unknown", 1, "10.0.0.2", id="garbage-entry-falls-back"),
        pytest.param("10.0.0.2", "198.51.100.1,", 1, "10.0.0.2", id="empty-entry-falls-back"),
        pytest.param(
            "10.0.0.2", "198.51.100.1, garbage", 1, "10.0.0.2", id="garbage-last-falls-back"
        ),
        pytest.param("10.0.0.2", " 198.51.100.1 ", 1, "198.51.100.1", id="whitespace"),
        pytest.param("10.0.0.2", "[2001:DB8::1]:4711", 1, "2001:db8::1", id="v6-port"),
        pytest.param("10.0.0.2", "198.51.100.1:4711", 1, "198.51.100.1", id="v4-port"),
        pytest.param("10.0.0.2", "::ffff:198.51.100.1", 1, "198.51.100.1", id="xff-v4-mapped"),
        pytest.param("2001:0db8:0000::0001", None, 0, "2001:db8::1", id="v6-canonical"),
        pytest.param("::ffff:198.51.100.1", None, 0, "198.51.100.1", id="v4-mapped"),
        pytest.param("[2001:db8::1]:443", None, 0, "2001:db8::1", id="peer-with-port"),
        # The address is what the first pair of brackets encloses; the rest is the port's.
        pytest.param("[2001:db8::1]]:443", None, 0, "2001:db8::1", id="bracket-closes-first"),
        pytest.param("testclient", None, 0, "testclient", id="non-ip-peer"),
        pytest.param("  ", None, 0, None, id="blank-peer"),
        pytest.param(None, None, 0, None, id="no-peer"),
        pytest.param(None, "198.51.100.1", 1, "198.51.100.1", id="xff-without-peer"),
        pytest.param(None, "garbage", 1, None, id="garbage-xff-without-peer"),
        pytest.param("1.2.3.4", "x" * 100, 1, "1.2.3.4", id="oversized-entry-falls-back"),
        pytest.param("1.2.3.4", SCOPED_64, 1, SCOPED_64, id="entry-at-the-length-cap"),
        pytest.param("1.2.3.4", SCOPED_64 + "a", 1, "1.2.3.4", id="entry-past-the-length-cap"),
        pytest.param("x" * 100, None, 0, "x" * MAX_ADDRESS_LENGTH, id="long-peer-cut"),
        pytest.param("x" * 64, None, 0, "x" * 64, id="peer-at-the-cap-kept"),
    ],
)
def test_client_address(
    peer: str | None, xff: str | None, proxies: int, expected: str | None
) -> None:
    assert client_address(peer, xff, trusted_proxies=proxies) == expected


def test_client_address_trusts_no_forwarded_header_by_default() -> None:
    # Called without trusted_proxies: the documented safe default (0) must be what applies.
    assert client_address("203.0.113.7", "198.51.100.1") == "203.0.113.7"
    assert client_address(None, "198.51.100.1") is None
    assert client_address("203.0.113.7", "garbage") == "203.0.113.7"


@pytest.mark.parametrize("proxies", [-1, True, 1.0, "1"])
def test_client_address_rejects_bad_trusted_proxies(proxies: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        client_address("1.2.3.4", None, trusted_proxies=proxies)  # type: ignore[arg-type]
    assert str(info.value) == "trusted_proxies must be an integer >= 0"


def test_canonical_address_length_cap() -> None:
    assert MAX_ADDRESS_LENGTH == 64
    assert canonical_address(SCOPED_64) == SCOPED_64
    assert canonical_address(SCOPED_64 + "a") is None
    # Whitespace around the value does not count towards the cap.
    assert canonical_address(f" {SCOPED_64} ") == SCOPED_64


def _peer_address_by_parsing(peer: str) -> str | None:
    """peer_address() as it was before its IPv4 shortcut: always parsed."""
    address = canonical_address(peer)
    if address is not None:
        return address
    return peer.strip()[:MAX_ADDRESS_LENGTH] or None


_ADDRESSY = st.text(alphabet="0123456789.:[] \t\n\x1c\u3000abcdefx%１", max_size=70)


@given(st.one_of(_ADDRESSY, st.text(max_size=80), st.ip_addresses().map(str)))
@settings(max_examples=600, deadline=None)
def test_peer_address_shortcut_answers_as_parsing_does(peer: str) -> None:
    """An IPv4 peer is not parsed (the path of every refused guess): the answer must be the
    one parsing gives, whatever the text."""
    assert peer_address(peer) == _peer_address_by_parsing(peer)


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        pytest.param("203.0.113.7", "203.0.113.7", id="v4"),
        pytest.param(" 203.0.113.7\n", "203.0.113.7", id="v4-padded"),
        pytest.param("[203.0.113.7]", "203.0.113.7", id="v4-bracketed"),
        pytest.param(" [203.0.113.7]x", "203.0.113.7", id="v4-bracketed-junk"),
        pytest.param("203.0.113.7:8080", "203.0.113.7", id="v4-port"),
        pytest.param("::ffff:203.0.113.7", "203.0.113.7", id="v4-mapped"),
        pytest.param("2001:DB8::1", "2001:db8::1", id="v6-upper"),
        pytest.param("01.2.3.4", "01.2.3.4", id="not-canonical-kept-as-text"),
        pytest.param("testclient", "testclient", id="a-name"),
        pytest.param("x" * 70, "x" * MAX_ADDRESS_LENGTH, id="long-name-cut"),
        pytest.param(" \t", None, id="blank"),
        pytest.param("", None, id="empty"),
    ],
)
def test_peer_address(peer: str, expected: str | None) -> None:
    assert peer_address(peer) == expected == _peer_address_by_parsing(peer)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([], None, id="none"),
        pytest.param([b"198.51.100.1"], b"198.51.100.1", id="one"),
        pytest.param([b"6.6.6.6", b"198.51.100.1"], b"6.6.6.6, 198.51.100.1", id="two-in-order"),
        pytest.param([b"a, b", b"c", b"d"], b"a, b, c, d", id="three"),
    ],
)
def test_join_field_lines(lines: list[bytes], expected: bytes | None) -> None:
    assert join_field_lines(lines) == expected


def test_all_forwarded_lines_count_not_the_first_one() -> None:
    """A client writes the first line; the proxy's line comes last: joined, the proxy's
    entry is the rightmost one, whichever way the proxy added it."""
    joined = join_field_lines([b"6.6.6.6", b"198.51.100.1"])
    assert joined is not None
    assert client_address("10.0.0.2", joined.decode(), trusted_proxies=1) == "198.51.100.1"
    joined = join_field_lines([b"6.6.6.6", b"203.0.113.9", b"10.0.0.9"])
    assert joined is not None
    assert client_address("10.0.0.2", joined.decode(), trusted_proxies=2) == "203.0.113.9"


@pytest.mark.parametrize(
    ("address", "prefix", "expected"),
    [
        pytest.param("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64", id="v6-64"),
        pytest.param("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48", id="v6-48"),
        pytest.param("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128", id="v6-128"),
        pytest.param("2001:db8:1:2:3:4:5:6", 1, "::/1", id="v6-1"),
        pytest.param("fe80::1%eth0", 64, "fe80::/64", id="scoped"),
        pytest.param("::ffff:198.51.100.1", 64, "198.51.100.1", id="v4-mapped"),
        pytest.param("198.51.100.1", 64, "198.51.100.1", id="v4"),
        pytest.param("testclient", 64, "testclient", id="name"),
        pytest.param("not:an:address", 64, "not:an:address", id="name-with-colons"),
        pytest.param("[2001:db8::1]:80", 64, "[2001:db8::1]:80", id="bracketed-is-a-name"),
        pytest.param("é::1", 64, "é::1", id="non-ascii-name"),
        pytest.param("a\x00::1", 64, "a\x00::1", id="nul-name"),
        pytest.param("y" * 80, 64, "y" * 64, id="long-name-cut"),
    ],
)
def test_network_key(address: str, prefix: int, expected: str) -> None:
    assert network_key(address, prefix) == expected


def test_network_key_default_prefix_is_64() -> None:
    assert network_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


# -- the guard: defaults, boundary, Retry-After --------------------------------------------------


def test_guard_defaults() -> None:
    guard = BruteForceGuard()
    assert guard.threshold == 100
    assert guard.window == 60.0
    assert guard.max_clients == 100_000
    assert guard.ipv6_prefix == 64
    assert guard.clock is time.monotonic
    assert len(guard) == 0


def test_default_guard_answers_100_failures_and_blocks_the_101st() -> None:
    guard = BruteForceGuard()  # the real monotonic clock (the exact values: below)
    for i in range(100):
        assert guard.record_failure("203.0.113.7") is None, i
    assert guard.is_blocked("203.0.113.7") is None
    retry = guard.record_failure("203.0.113.7")
    assert retry is not None
    assert 1 <= retry <= 60  # never longer than the default window
    assert guard.is_blocked("203.0.113.7") is not None


def test_threshold_failures_are_answered_the_next_one_blocked() -> None:
    clock = FakeClock(1000.0)
    guard = BruteForceGuard(threshold=3, window=60, clock=clock)
    assert guard.is_blocked("1.2.3.4") is None
    assert [guard.record_failure("1.2.3.4") for _ in range(3)] == [None, None, None]
    assert guard.is_blocked("1.2.3.4") is None  # exactly at the threshold: not blocked
    # The 4th: sub-windows are 7.5 s long; 1000 s lies in [997.5, 1005), which stops
    # counting at 997.5 + 60 = 1057.5, so Retry-After is ceil(57.5) = 58.
    assert guard.record_failure("1.2.3.4") == 58
    assert guard.is_blocked("1.2.3.4") == 58
    assert guard.record_failure("1.2.3.4") == 58  # later failures stay blocked
    clock.t = 1057.0
    assert guard.is_blocked("1.2.3.4") == 1
    clock.t = 1057.5
    assert guard.is_blocked("1.2.3.4") is None
    assert guard.record_failure("1.2.3.4") is None  # a fresh start


@pytest.mark.parametrize("origin", [-1000.0, -3.75, 0.0, 1000.0])
def test_the_clock_origin_changes_nothing(origin: float) -> None:
    """A monotonic clock may start anywhere, below zero too: the guard answers the same
    failures the same way (the sub-window numbers, stored in each record, go negative)."""
    clock = FakeClock(origin)
    guard = BruteForceGuard(threshold=3, window=60, clock=clock)
    assert [guard.record_failure("1.2.3.4") for _ in range(3)] == [None, None, None]
    first = guard.record_failure("1.2.3.4")  # the 4th, in the same sub-window
    assert first is not None
    assert 53 <= first <= 60
    clock.t += 7.5  # the next sub-window: still blocked until the same moment
    assert first - 8 <= guard.record_failure("1.2.3.4") <= first - 7
    clock.t = origin + 60.0
    assert guard.is_blocked("1.2.3.4") is None


def test_retry_after_is_when_enough_failures_leave_the_window() -> None:
    clock = FakeClock(1000.0)
    guard = BruteForceGuard(threshold=2, window=60, clock=clock)
    guard.record_failure("a")  # sub-window [997.5, 1005): leaves at 1057.5
    clock.t = 1010.0
    guard.record_failure("a")  # [1005, 1012.5): leaves at 1065
    clock.t = 1020.0
    assert guard.record_failure("a") == 38  # 3 > 2 until the first leaves: 1057.5 - 1020
    assert guard.record_failure("a") == 45  # 4: two must leave, the second at 1065
    clock.t = 1064.0
    assert guard.is_blocked("a") == 1
    clock.t = 1065.0
    assert guard.is_blocked("a") is None


def test_continued_failures_keep_an_address_blocked() -> None:
    clock = FakeClock(1000.0)
    guard = BruteForceGuard(threshold=2, window=8, clock=clock)  # sub-windows of 1 s
    assert guard.record_failure("a") is None
    assert guard.record_failure("a") is None
    for _ in range(20):
        clock.t += 3
        # Every failure (429s too) counts: the two before it are still in the window.
        assert guard.record_failure("a") is not None


def test_guard_is_per_address_never_per_key() -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=2, window=60, clock=clock)
    for _ in range(3):
        guard.record_failure("6.6.6.6")
    assert guard.is_blocked("6.6.6.6") is not None
    # The owner of the key the attacker tried, calling from anywhere else, is unaffected.
    assert guard.is_blocked("198.51.100.1") is None
    assert guard.record_failure("198.51.100.1") is None
    guard.reset("6.6.6.6")
    assert guard.is_blocked("6.6.6.6") is None


def test_reset_of_an_unknown_client_changes_nothing() -> None:
    guard = BruteForceGuard(threshold=1, window=60, clock=FakeClock())
    guard.record_failure("a")
    guard.record_failure("a")
    guard.reset("never-seen")
    guard.reset("2001:db8::1")
    assert len(guard) == 1
    assert guard.is_blocked("a") is not None


# -- clock steps ---------------------------------------------------------------------------------


def test_clock_stepping_back_never_unblocks_early() -> None:
    clock = FakeClock(1000.0)
    guard = BruteForceGuard(threshold=1, window=10, clock=clock)  # sub-windows of 1.25 s
    guard.record_failure("a")
    assert guard.record_failure("a") == 10  # [1000, 1001.25) leaves at 1010
    clock.t = 900.0
    # The guard's time stays at 1000 until the clock catches up: still blocked, and the
    # wait is counted on the clock that stepped back.
    assert guard.is_blocked("a") == 110
    assert guard.record_failure("a") == 110
    clock.t = 1009.5
    assert guard.is_blocked("a") == 1
    clock.t = 1010.0
    assert guard.is_blocked("a") is None


def test_clock_stepping_back_never_blocks_below_the_threshold() -> None:
    clock = FakeClock(1000.0)
    guard = BruteForceGuard(threshold=2, window=10, clock=clock)
    assert guard.record_failure("a") is None
    clock.t = -5e6  # far back, even negative: nothing crashes, nothing is blocked early
    assert guard.record_failure("a") is None
    assert guard.is_blocked("a") is None
    assert guard.is_blocked("b") is None
    assert guard.record_failure("a") is not None  # the third failure, at the guard's time


def test_clock_stepping_forward_expires_everything() -> None:
    clock = FakeClock(1000.0)
    guard = BruteForceGuard(threshold=1, window=10, clock=clock)
    guard.record_failure("a")
    assert guard.record_failure("a") is not None
    clock.t += 1e6
    assert guard.is_blocked("a") is None
    assert guard.record_failure("a") is None


# -- validation ----------------------------------------------------------------------------------


THRESHOLD_RULE = "threshold must be an integer from 1 to 4294967294, got "
WINDOW_RULE = "window must be a number of seconds > 0, got "
MAX_CLIENTS_RULE = "max_clients must be an integer >= 1, got "
PREFIX_RULE = "ipv6_prefix must be an integer from 1 to 128, got "


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"threshold": 0}, THRESHOLD_RULE + "0", id="threshold-0"),
        pytest.param({"threshold": -1}, THRESHOLD_RULE + "-1", id="threshold-negative"),
        pytest.param({"threshold": True}, THRESHOLD_RULE + "True", id="threshold-bool"),
        pytest.param({"threshold": 1.5}, THRESHOLD_RULE + "1.5", id="threshold-float"),
        pytest.param(
            {"threshold": 2**32 - 1}, THRESHOLD_RULE + "4294967295", id="threshold-too-large"
        ),
        pytest.param({"window": 0}, WINDOW_RULE + "0", id="window-0"),
        pytest.param({"window": -1.0}, WINDOW_RULE + "-1.0", id="window-negative"),
        pytest.param({"window": float("inf")}, WINDOW_RULE + "inf", id="window-inf"),
        pytest.param({"window": float("nan")}, WINDOW_RULE + "nan", id="window-nan"),
        pytest.param({"window": "1"}, WINDOW_RULE + "'1'", id="window-str"),
        pytest.param({"window": True}, WINDOW_RULE + "True", id="window-bool"),
        pytest.param({"max_clients": 0}, MAX_CLIENTS_RULE + "0", id="max-clients-0"),
        pytest.param({"max_clients": -1}, MAX_CLIENTS_RULE + "-1", id="max-clients-negative"),
        pytest.param({"max_clients": True}, MAX_CLIENTS_RULE + "True", id="max-clients-bool"),
        pytest.param({"max_clients": 1.5}, MAX_CLIENTS_RULE + "1.5", id="max-clients-float"),
        pytest.param({"ipv6_prefix": 0}, PREFIX_RULE + "0", id="prefix-0"),
        pytest.param({"ipv6_prefix": 129}, PREFIX_RULE + "129", id="prefix-129"),
        pytest.param({"ipv6_prefix": True}, PREFIX_RULE + "True", id="prefix-bool"),
        pytest.param({"ipv6_prefix": 64.0}, PREFIX_RULE + "64.0", id="prefix-float"),
    ],
)
def test_guard_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        BruteForceGuard(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1},
        {"threshold": 2**32 - 2},
        {"window": 1},
        {"max_clients": 1},
        {"ipv6_prefix": 1},
        {"ipv6_prefix": 128},
    ],
)
def test_guard_accepts_the_limits(kwargs: dict[str, Any]) -> None:
    BruteForceGuard(**kwargs)


# -- memory --------------------------------------------------------------------------------------


def test_guard_memory_is_bounded_by_max_clients() -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=1, window=60, max_clients=3, clock=clock)
    for addr in "abcd":
        guard.record_failure(addr)
        guard.record_failure(addr)
    assert len(guard) == 3
    assert guard.is_blocked("a") is None  # evicted first
    assert guard.is_blocked("d") is not None
    guard.record_failure("b")  # b is now the most recently failing: c goes next
    guard.record_failure("e")
    assert guard.is_blocked("b") is not None
    assert guard.is_blocked("c") is None


def _bytes_per_client(address: Callable[[int], str], n: int = 2000) -> float:
    clock = FakeClock()
    guard = BruteForceGuard(clock=clock)  # the default threshold (100) and bound
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(8):  # a failure in every sub-window: every counter in use
            # Addresses made afresh for every call, inside the measurement: the guard keeps
            # the first string of each as its key, so that string is part of the cost.
            for i in range(n):
                guard.record_failure(address(i))
            clock.t += guard.window / 8
        # Far over the threshold: counters are fixed-size, the cost does not grow.
        for _ in range(200):
            guard.record_failure(address(0))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(guard) == n
    assert guard.is_blocked(address(0)) is not None
    return (after - before) / n


def test_memory_per_tracked_address_is_small() -> None:
    """The default bound (100,000 addresses) must cost tens of MB at most, not the ~434 MB a
    list of failure times cost (about 250 bytes per address, measured at 100,000; the bound
    here leaves room for the hash table's growth steps at this smaller size)."""
    v4 = _bytes_per_client(lambda i: str(ipaddress.IPv4Address(0x0A000000 + 7919 * i)))
    # Made once, outside: the guard keeps its own key (the /64), never the address given.
    v6_addresses = [
        str(ipaddress.IPv6Address((0x20010DB8 << 96) + (i << 64) + 1)) for i in range(2000)
    ]
    v6 = _bytes_per_client(v6_addresses.__getitem__)
    assert v4 < 350, v4
    assert v6 < 350, v6
    assert max(v4, v6) * 100_000 < 35e6


def test_a_counter_at_its_ceiling_does_not_overflow() -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=2**32 - 2, clock=clock)
    # White box: no test can fail four billion times, so put a full counter in place.
    current = math.floor(clock.t / (guard.window / 8))
    counts = [0] * 8
    counts[current % 8] = 2**32 - 1
    guard._records["a"] = [current, *counts]
    assert guard.record_failure("a") is not None
    assert guard.record_failure("a") is not None


# -- IPv6 grouping and IPv4-mapped addresses -----------------------------------------------------


def test_a_thousand_guesses_from_one_ipv6_64_are_blocked() -> None:
    guard = BruteForceGuard(clock=FakeClock())  # default prefix /64, threshold 100
    base = int(ipaddress.IPv6Address("2001:db8:1:2::"))
    answers = [
        guard.record_failure(client_address(str(ipaddress.IPv6Address(base + i * 7919)), None))
        for i in range(1, 1001)
    ]
    assert answers[:100] == [None] * 100
    assert all(a is not None for a in answers[100:])
    assert len(guard) == 1
    # Any address of that /64 is blocked; the neighbouring /64 is not.
    assert guard.is_blocked("2001:db8:1:2:ffff:ffff:ffff:ffff") is not None
    assert guard.is_blocked("2001:db8:1:3::1") is None
    assert guard.record_failure("2001:db8:1:3::1") is None
    guard.reset("2001:db8:1:2::abcd")  # an operator unblocks the whole /64
    assert guard.is_blocked("2001:db8:1:2::1") is None


def test_ipv6_prefix_is_configurable() -> None:
    wide = BruteForceGuard(threshold=1, ipv6_prefix=48, clock=FakeClock())
    wide.record_failure("2001:db8:1:2::1")
    assert wide.record_failure("2001:db8:1:3::1") is not None  # same /48
    assert wide.is_blocked("2001:db8:2::1") is None
    exact = BruteForceGuard(threshold=1, ipv6_prefix=128, clock=FakeClock())
    exact.record_failure("2001:db8::1")
    assert exact.record_failure("2001:db8::2") is None
    assert exact.record_failure("2001:db8::1") is not None


def test_client_bucket_is_shared_by_guards() -> None:
    assert client_bucket("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert client_bucket("2001:db8:1:2::9", 48) == "2001:db8:1::/48"
    assert client_bucket("198.51.100.1") == "198.51.100.1"
    guard = BruteForceGuard(ipv6_prefix=56)
    assert guard.bucket("2001:db8:1:2ff::1") == client_bucket("2001:db8:1:2ff::1", 56)


def test_ipv4_mapped_ipv6_is_the_ipv4_host() -> None:
    guard = BruteForceGuard(threshold=1, clock=FakeClock())
    guard.record_failure("::ffff:198.51.100.1")
    assert guard.record_failure("198.51.100.1") is not None
    assert guard.is_blocked("198.51.100.2") is None
    assert guard.bucket("::ffff:198.51.100.1") == "198.51.100.1"


# -- requests without an address -----------------------------------------------------------------


def test_requests_without_an_address_share_one_bucket_and_warn_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bruteforce, "_unknown_warned", False)
    guard = BruteForceGuard(threshold=2, window=60, clock=FakeClock())
    other = BruteForceGuard(threshold=2, window=60, clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="keyguard.bruteforce"):
        assert guard.record_failure(None) is None
        assert guard.record_failure(None) is None
        assert guard.record_failure(None) == 58  # not silently ignored: blocked like any
        assert guard.is_blocked(None) == 58
        assert other.is_blocked(None) is None
        other.record_failure(None)
    warnings = [r for r in caplog.records if r.name == "keyguard.bruteforce"]
    assert len(warnings) == 1  # once per process, not per request or per guard
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].getMessage() == (
        "brute-force guard: a request carried no client address (a Unix socket?); all such "
        "requests share one failure counter ('unknown'), so their failures can block each "
        "other. Pass the peer address, or set trusted_proxies behind a proxy that sends "
        "X-Forwarded-For. Logged once per process."
    )
    assert guard.bucket(None) == UNKNOWN_CLIENT
    assert guard.is_blocked(UNKNOWN_CLIENT) == 58
    assert guard.is_blocked("198.51.100.1") is None
    guard.reset(None)
    assert guard.is_blocked(None) is None


# -- judging a failed authentication -------------------------------------------------------------


def _failure(code: ErrorCode) -> Decision:
    return Decision(False, None, code, "no")


def test_judge_failure_counts_only_guesses() -> None:
    guard = BruteForceGuard(threshold=1, window=60, clock=FakeClock())
    expired = _failure(ErrorCode.EXPIRED_API_KEY)
    for _ in range(3):  # a real key, expired: not a guess
        assert judge_failure(guard, expired, "a") is expired
    assert len(guard) == 0
    wrong = _failure(ErrorCode.INVALID_API_KEY)
    assert judge_failure(guard, wrong, "a") is wrong
    blocked = judge_failure(guard, _failure(ErrorCode.INVALID_API_KEY_FORMAT), "a")
    assert blocked.code is ErrorCode.RATE_LIMITED
    assert blocked.status == 429
    assert blocked.retry_after == 58
    assert not blocked.allowed
    assert judge_failure(guard, wrong, "b") is wrong


@pytest.mark.parametrize(
    ("given", "expected"),
    [(-5, 1), (0, 1), (1, 1), (2, 2), (58, 58)],
)
def test_blocked_is_the_whole_429_answer(given: int, expected: int) -> None:
    """The whole Decision: refused, no principal, the code, the message the client reads,
    and a Retry-After of at least one second (RFC 9110 allows 0; 0 invites a retry storm)."""
    assert bruteforce.blocked(given) == Decision(
        False,
        None,
        ErrorCode.RATE_LIMITED,
        "Too many failed authentication attempts from this address.",
        retry_after=expected,
    )
    assert bruteforce.blocked(given).allowed is False


async def test_async_judging_counts_each_client_apart() -> None:
    guard = BruteForceGuard(threshold=1, window=8, clock=FakeClock())
    wrong = _failure(ErrorCode.INVALID_API_KEY)
    assert await ajudge_failure(guard, wrong, "198.51.100.1") is wrong
    assert await ajudge_failure(guard, wrong, "198.51.100.2") is wrong
    assert await guard.ais_blocked("198.51.100.1") is None
    assert await guard.ais_blocked(None) is None
    assert len(guard) == 2
    blocked = await ajudge_failure(guard, wrong, "198.51.100.1")
    assert blocked == bruteforce.blocked(8)


async def test_guard_async_api() -> None:
    guard = BruteForceGuard(threshold=1, window=8, clock=FakeClock())  # sub-windows of 1 s
    assert await guard.ais_blocked("a") is None
    assert await guard.arecord_failure("a") is None
    assert await guard.arecord_failure("a") == 8
    assert await guard.ais_blocked("a") == 8
    await guard.areset("a")
    assert await guard.ais_blocked("a") is None
    wrong = _failure(ErrorCode.INVALID_API_KEY)
    assert await ajudge_failure(guard, wrong, "b") is wrong
    assert (await ajudge_failure(guard, wrong, "b")).retry_after == 8
    revoked = _failure(ErrorCode.REVOKED_API_KEY)
    assert await ajudge_failure(guard, revoked, "b") is revoked


# -- through the Verifier ------------------------------------------------------------------------


def _verifier(guard: BruteForceGuard, **options: Any) -> Verifier:
    return Verifier(
        MemoryStore(),
        hasher=Hasher(pepper_from_env=False),
        brute_force=guard,
        rate_limits=None,
        **options,
    )


def _guess() -> str:
    return "UserKey " + KeyFormat().generate().plaintext


def test_verifier_trusts_no_forwarded_header_by_default() -> None:
    guard = BruteForceGuard(threshold=2, window=60, clock=FakeClock())
    verifier = _verifier(guard)  # trusted_proxies not given: 0
    codes = [
        verifier.verify(_guess(), peer=("192.0.2.1", 5000), forwarded_for=f"198.51.100.{i}").code
        for i in range(3)
    ]
    # A fresh X-Forwarded-For per guess changes nothing: the peer is counted.
    assert codes == [ErrorCode.INVALID_API_KEY] * 2 + [ErrorCode.RATE_LIMITED]
    other = verifier.verify(_guess(), peer=("192.0.2.2", 5000), forwarded_for="198.51.100.0")
    assert other.code is ErrorCode.INVALID_API_KEY


def test_verifier_429_carries_retry_after() -> None:
    guard = BruteForceGuard(threshold=1, window=60, clock=FakeClock())
    verifier = _verifier(guard)
    assert verifier.verify(_guess(), peer="192.0.2.1").code is ErrorCode.INVALID_API_KEY
    blocked = verifier.verify(_guess(), peer="192.0.2.1")
    assert blocked.code is ErrorCode.RATE_LIMITED
    assert blocked.retry_after == 58
    blocked = asyncio.run(verifier.averify(_guess(), peer="192.0.2.1"))
    assert blocked.retry_after == 58


def test_verifier_counts_requests_without_a_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bruteforce, "_unknown_warned", True)  # the warning is tested above
    guard = BruteForceGuard(threshold=2, window=60, clock=FakeClock())
    verifier = _verifier(guard, trusted_proxies=1)
    codes = [verifier.verify(_guess(), forwarded_for="garbage").code for _ in range(3)]
    assert codes == [ErrorCode.INVALID_API_KEY] * 2 + [ErrorCode.RATE_LIMITED]
    assert guard.is_blocked(UNKNOWN_CLIENT) is not None


def test_verifier_groups_ipv6_guesses_by_64() -> None:
    verifier = Verifier(MemoryStore(), hasher=Hasher(pepper_from_env=False), rate_limits=None)
    guard = verifier.brute_force
    assert isinstance(guard, BruteForceGuard)
    base = int(ipaddress.IPv6Address("2001:db8:aa:bb::"))
    codes = [
        verifier.verify(_guess(), peer=(str(ipaddress.IPv6Address(base + i)), 443)).code
        for i in range(1, 102)
    ]
    assert codes[:100] == [ErrorCode.INVALID_API_KEY] * 100
    assert codes[100] is ErrorCode.RATE_LIMITED
    assert verifier.verify(_guess(), peer="2001:db8:aa:bc::1").code is ErrorCode.INVALID_API_KEY


# -- the model -----------------------------------------------------------------------------------


@PROPS
@given(
    threshold=st.integers(1, 5),
    window=st.sampled_from([1.0, 8.0, 60.0]),
    events=st.lists(
        # Steps exact in binary floating point, backwards too: the model and the guard then
        # agree on which failures sit exactly on a sub-window's edge.
        st.tuples(
            st.sampled_from([0.0, 0.125, 0.5, 1.0, 2.5, 7.5, 61.0, -0.5, -8.0, -100.0]),
            st.booleans(),
        ),
        max_size=50,
    ),
)
def test_guard_matches_the_sub_window_model(
    threshold: int, window: float, events: list[tuple[float, bool]]
) -> None:
    clock = FakeClock()
    guard = BruteForceGuard(threshold=threshold, window=window, clock=clock)
    step = window / 8
    latest = -math.inf  # the guard's own time: the highest clock reading it has seen
    failures: list[float] = []  # at the guard's time
    for delta, fail in events:
        clock.t += delta
        now = clock.t
        latest = max(latest, now)
        if fail:
            recorded = guard.record_failure("x")
            failures.append(latest)
        retry = guard.is_blocked("x")
        if fail:
            assert recorded == retry
        current = math.floor(latest / step)
        live = sorted(f for f in failures if math.floor(f / step) > current - 8)
        # The documented guarantees, against exact sliding windows at the guard's time:
        in_window = [f for f in failures if f > latest - window]
        in_seven_eighths = [f for f in failures if f > latest - 7 * step]
        if retry is not None:
            assert len(in_window) > threshold  # never blocks at or below the threshold
        if len(in_seven_eighths) > threshold:
            assert retry is not None  # always blocks past it
        # And the exact model: blocked while more than threshold failures are live, until
        # enough of the oldest sub-windows have left.
        if len(live) > threshold:
            leaving = live[len(live) - threshold - 1]
            release = (math.floor(leaving / step) + 8) * step
            assert retry == max(1, math.ceil(release - now))
            assert retry >= release - now  # waiting Retry-After seconds is always enough
        else:
            assert retry is None
