"""Detector memory is bounded: a flood of 100,000 distinct key ids and addresses, through every
detector at once, fills their caps and then stops growing; and the per-entry costs that
docs/detectors.md states hold."""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator

from keyguard.abuse.detectors import (
    Detectors,
    FailedAuthDetector,
    NewNetworkDetector,
    RefusedKeyDetector,
    ScopeProbeDetector,
    VolumeDetector,
    WrongSecretDetector,
)
from keyguard.core.detector_counters import MemoryDetectorCounters, Window
from keyguard.observability.model import Event, EventKind
from tests.abuse.detector_support import T0, ev, ok, wrong

CAP = 2_000
FLOOD = 100_000


def _address(i: int) -> str:
    if i % 2:
        return f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1"  # a distinct /64 (and /48 often)
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def flood(start: int, stop: int) -> Iterator[Event]:
    """Every event a distinct key id and a distinct address, every detector's kinds in turn."""
    for i in range(start, stop):
        key_id, client, at = f"k{i:011d}", _address(i), T0 + i * 0.01
        match i % 5:
            case 0:
                yield wrong(at, key_id, client)
            case 1:
                yield ev(EventKind.DENIED, at, code="invalid_api_key", client=client)
            case 2:
                yield ok(at, client, key_id)
            case 3:
                yield ev(EventKind.SCOPE_DENIED, at, key_id=key_id, route=f"/r{i}", client=client)
            case _:
                yield ev(EventKind.KEY_REFUSED, at, code="revoked_api_key", key_id=key_id)


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _detectors(cap: int, emit: Callable[[Event], object]) -> Detectors:
    return Detectors(
        emit,
        detectors=[
            WrongSecretDetector(),
            RefusedKeyDetector(),
            NewNetworkDetector(warmup=0, max_keys=cap),
            VolumeDetector(max_keys=cap),
            ScopeProbeDetector(),
            FailedAuthDetector(),
        ],
        max_counters=cap,
        max_latches=cap,
        background=False,
    )


def test_a_flood_of_distinct_ids_and_addresses_is_held_within_the_caps() -> None:
    fired: Counter[str] = Counter()
    detectors = _detectors(CAP, lambda e: fired.update([e.detail["detector"]]))
    try:
        for e in flood(0, FLOOD):
            detectors(e)
    finally:
        detectors.close()
    sizes = detectors.state_size()
    assert sizes["latches"] == CAP
    for name in ("wrong_secret", "refused_key", "scope_probe", "failed_auth"):
        assert sizes[name] == CAP, name  # counters only, at their cap
    for name in ("new_network", "volume"):
        assert sizes[name] == 2 * CAP, name  # keys remembered + counters, each at its cap
    # Every refused key fires (its first use is the news); no other detector does: a flood of
    # strangers is not one key's anomaly.
    assert fired == {"refused_key": FLOOD // 5}


def test_once_the_caps_are_full_memory_stops_growing() -> None:
    cap = 300
    detectors = _detectors(cap, lambda e: None)
    tracemalloc.start()
    try:
        base = _traced()
        for e in flood(0, 10 * cap):  # 2 x cap distinct ids and addresses per detector
            detectors(e)
        full = _traced()
        for e in flood(10 * cap, 20 * cap):  # as many again, all new
            detectors(e)
        later = _traced()
    finally:
        tracemalloc.stop()
        detectors.close()
    held = full - base
    assert later - full < 0.05 * held + 32 * 1024, (base, full, later)
    # What is held is what docs/detectors.md says: at most about 1.2 KB per capped entry
    # (six detectors' counters, two detectors' keys, the claims).
    assert held < 9 * cap * 1200, held


def test_the_stated_cost_of_an_in_process_counter() -> None:
    counters = MemoryDetectorCounters(max_counters=20_000)
    window = Window(600)
    tracemalloc.start()
    try:
        base = _traced()
        for i in range(20_000):
            counters.add(f"wrong_secret:k{i:011d}", window, T0)  # 24-character names
        per_counter = (_traced() - base) / 20_000
    finally:
        tracemalloc.stop()
    assert len(counters) == 20_000
    assert per_counter < 400, per_counter  # the docstring says 300 to 320 bytes
