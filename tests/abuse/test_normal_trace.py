"""The detectors stay quiet on a realistic trace of normal traffic, and each one fires on its
own pattern when that pattern is slipped into the same trace (and only that one fires)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import cache

import pytest

from keyguard.abuse.detectors import Detectors
from keyguard.observability.model import Event, EventKind
from tests.abuse import trace
from tests.abuse.trace import DAY, START


@cache
def normal() -> tuple[Event, ...]:
    return tuple(trace.normal_trace())


def replay(events: Iterable[Event]) -> list[Event]:
    found: list[Event] = []
    detectors = Detectors(found.append, background=False)  # every detector, its defaults
    try:
        for e in events:
            detectors(e)
    finally:
        detectors.close()
    return found


def with_attack(attack: Iterable[Event]) -> list[Event]:
    return sorted([*normal(), *attack], key=lambda e: e.at)


def test_the_trace_is_realistic_and_deterministic() -> None:
    events = normal()
    kinds = {k: sum(1 for e in events if e.kind is k) for k in EventKind}
    assert len(events) > 100_000
    assert kinds[EventKind.SCOPE_DENIED] > 20  # a few scope denials
    assert kinds[EventKind.RATE_LIMITED] > 100  # a batch job over its limit
    typos = [e for e in events if e.kind is EventKind.DENIED and e.reason != "wrong_secret"]
    assert len(typos) > 100  # keys pasted with typos: unknown ids, broken checksums
    assert sum(1 for e in events if e.reason == "wrong_secret") > 10  # old secrets pasted
    assert len(trace.trace_keys(list(events))) == 40
    late = trace.make_keys(__import__("random").Random(7), 40)[-3:]
    assert all(k.starts > START and k.moves_to for k in late)  # new /24s inside warm-up

    def digest(es: Iterable[Event]) -> str:
        return hashlib.sha256(repr(list(es)[:5000]).encode()).hexdigest()

    assert digest(trace.normal_trace(days=0.1)) == digest(trace.normal_trace(days=0.1))


def test_normal_traffic_raises_no_alert() -> None:
    assert replay(normal()) == []


def _fired(found: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.detail["detector"], e.key_id) for e in found]


@pytest.mark.slow
def test_each_detector_fires_on_its_pattern_within_normal_traffic() -> None:
    events = list(normal())
    busy, owner, clients = trace.busiest(events)
    quiet, quiet_owner, quiet_clients = trace.quietest_warm(events)
    at = START + DAY  # a day in: every key is warm
    attacks = [
        *trace.wrong_secret_attack(busy, owner, at),
        *trace.refused_use(quiet, quiet_owner, at + 3600, "revoked_api_key"),
        *trace.use_from(busy, owner, at + 7200, "192.0.2.44"),
        *trace.use_from(quiet, quiet_owner, at + 10_800, quiet_clients[0], n=400, spacing=0.1),
        *trace.scope_probe(busy, owner, at + 14_400, clients[0]),
        *trace.guessing(at + 18_000),
    ]
    found = replay(with_attack(attacks))
    assert sorted(_fired(found)) == sorted(
        [
            ("wrong_secret", busy),
            ("refused_key", quiet),
            ("new_network", busy),
            ("volume", quiet),
            ("scope_probe", busy),
            ("failed_auth", None),
        ]
    )
    # Each fired on its own pattern, at its time.
    when = {e.detail["detector"]: e.at - at for e in found}
    assert 0 < when["wrong_secret"] < 3600
    assert 3600 <= when["refused_key"] < 7200
    assert 7200 <= when["new_network"] < 10_800
    assert 10_800 <= when["volume"] < 14_400
    assert 14_400 <= when["scope_probe"] < 18_000
    assert when["failed_auth"] >= 18_000
