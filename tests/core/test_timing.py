"""Timing must not reveal whether a key id exists, or what state its key is in (issue 7, item 5).

A client without the secret sends well-formed keys with wrong secrets; the verifier must do the
same work for an unknown id and for a known id whether the key is active, rotated (inside or
past its grace), revoked (with or without a previous secret) or expired.

The statistic, built to hold on a noisy shared 2-core machine: every class is timed in small
batches, the classes interleaved in a fresh random order in each of many rounds, so that load
from other processes falls on all of them alike; each class is compared with the active-key
class by the **median of the per-round differences** (robust to the rounds a neighbour
disturbed). The yardstick is measured in the same rounds: the cost of one digest computation.
A class leaks when it costs more than half a digest more or less than an active key.

The positive control is a verifier that does one extra digest for unknown ids — the leak this
issue found, in its smallest form. The same statistic must flag it, so the test cannot pass
vacuously (a statistic too noisy to see anything would fail the control). Each verdict takes
the best of three measurements, so one unlucky stretch of machine load cannot flip it.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from keyguard.core.decision import Decision
from keyguard.core.hashing import Hasher
from keyguard.core.keycache import CacheEntry
from keyguard.core.keys import KeyFormat
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory

ROUNDS = 300
BATCH = 8
IDS_PER_CLASS = 4
NOW = 2_000_000_000.0


class LeakyVerifier(Verifier):
    """The positive control: one extra digest when the key id is unknown."""

    def _judge(self, credential: str, entry: CacheEntry, now: float) -> tuple[Decision, float]:
        if entry is self._cache.unknown:
            self.hasher.digest(credential)
        return super()._judge(credential, entry, now)


def wrong_secret(key_id: str) -> str:
    return "UserKey " + KeyFormat().generate(key_id).plaintext


def classes(store: MemoryStore, hasher: Hasher) -> dict[str, list[str]]:
    """Headers with wrong secrets, ``IDS_PER_CLASS`` key ids per class."""
    factory = KeyFactory(store, hasher)
    out: dict[str, list[str]] = {}

    def add(name: str, make: Callable[[], Any]) -> None:
        out[name] = [wrong_secret(make().key_id) for _ in range(IDS_PER_CLASS)]

    def rotated(grace_until: float) -> Any:
        key = factory.issue()
        return factory.rotate(key, grace_until=grace_until)

    def revoked_after_rotation() -> Any:
        key = rotated(NOW + 3600)
        factory.change(key, revoked_at=NOW - 1)  # previous_digest kept
        return key

    add("active", factory.issue)
    add("unknown", lambda: KeyFormat().generate())
    add("rotated in grace", lambda: rotated(NOW + 3600))
    add("rotated past grace", lambda: rotated(NOW - 3600))
    add("revoked", lambda: factory.issue(revoked_at=NOW - 1))
    add("revoked after rotation", revoked_after_rotation)
    add("expired", lambda: factory.issue(expires_at=NOW - 1))
    return out


def measure(v: Verifier, headers: dict[str, list[str]], seed: int) -> dict[str, float]:
    """For each class: median over rounds of (class - active) ns per call; and ``"digest"``:
    the median ns of one digest computation, measured in the same rounds."""
    rng = random.Random(seed)
    authenticate = v.authenticate
    digest = v.hasher.digest
    credential = headers["active"][0][len("UserKey ") :]
    names = [*headers, "digest"]
    for hs in headers.values():  # warm the caches: records and unknown ids
        for h in hs:
            assert authenticate(h).allowed is False
    samples: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(ROUNDS):
            rng.shuffle(names)
            for name in names:
                if name == "digest":
                    start = clock()
                    for _ in range(BATCH):
                        digest(credential)
                    samples[name].append((clock() - start) / BATCH)
                    continue
                batch = headers[name] * (BATCH // IDS_PER_CLASS)
                start = clock()
                for h in batch:
                    authenticate(h)
                samples[name].append((clock() - start) / len(batch))
    finally:
        if gc_was:
            gc.enable()
    base = samples["active"]
    out = {
        name: statistics.median(s - b for s, b in zip(samples[name], base, strict=True))
        for name in headers
        if name != "active"
    }
    out["digest"] = statistics.median(samples["digest"])
    return out


def leaks(result: dict[str, float]) -> dict[str, float]:
    """The classes whose median difference exceeds half a digest, in digests."""
    unit = result["digest"]
    return {
        name: round(diff / unit, 2)
        for name, diff in result.items()
        if name != "digest" and abs(diff) > unit / 2
    }


def build(cls: type[Verifier], hasher: Hasher) -> tuple[Verifier, dict[str, list[str]]]:
    store = MemoryStore()
    headers = classes(store, hasher)
    v = cls(
        store,
        hasher=hasher,
        cache_ttl=3600,
        negative_cache_ttl=3600,
        rate_limits=None,
        brute_force=None,
        clock=lambda: NOW,
    )
    return v, headers


HASHERS = [
    pytest.param(lambda: Hasher(pepper_from_env=False), id="sha256"),
    pytest.param(lambda: Hasher("p" * 32, pepper_from_env=False), id="hmac-pepper"),
]


@pytest.mark.parametrize("hasher", HASHERS)
def test_every_kind_of_id_costs_the_same(hasher: Callable[[], Hasher]) -> None:
    v, headers = build(Verifier, hasher())
    attempts = []
    for seed in range(3):
        found = leaks(measure(v, headers, seed))
        if not found:
            return
        attempts.append(found)
    pytest.fail(f"timing differs by class (in digests, three measurements): {attempts}")


@pytest.mark.parametrize("hasher", HASHERS)
def test_the_statistic_detects_one_extra_digest(hasher: Callable[[], Hasher]) -> None:
    v, headers = build(LeakyVerifier, hasher())
    attempts = []
    for seed in range(3):
        result = measure(v, headers, seed)
        found = leaks(result)
        if set(found) == {"unknown"}:
            return
        attempts.append((found, result))
    pytest.fail(f"the positive control went unnoticed (three measurements): {attempts}")
