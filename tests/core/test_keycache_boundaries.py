"""KeyCache's freshness boundaries, exactly: an entry is fresh strictly before its deadline
and stale at it (a record and an unknown id alike), so that a revocation bound of ``ttl``
seconds is never exceeded by the instant of the deadline itself."""

from __future__ import annotations

import math

from keyguard.core.keycache import KeyCache
from keyguard.core.records import KeyRecord


def cache() -> KeyCache:
    return KeyCache(
        size=8,
        ttl=5.0,
        negative_size=8,
        negative_ttl=3.0,
        implications=None,
        dummy_digest="sha256$00",
    )


def test_a_record_is_fresh_until_just_before_its_deadline_and_stale_at_it() -> None:
    c = cache()
    record = KeyRecord(key_id="k1", name="n", digest="sha256$00")
    entry = c.put(record, "k1", 100.0)
    assert entry.fresh_until == 105.0
    assert c.lookup("k1", 104.999) == (entry, True)
    assert c.lookup_until("k1", 104.999, False) == (entry, 105.0)
    assert c.lookup("k1", 105.0) == (entry, False)
    assert c.lookup_until("k1", 105.0, False) == (entry, -math.inf)


def test_an_unknown_id_is_known_until_just_before_its_deadline_and_asked_again_at_it() -> None:
    c = cache()
    assert c.put(None, "u1", 100.0) is c.unknown
    assert c.lookup("u1", 102.999) == (c.unknown, True)
    assert c.lookup_until("u1", 102.999, False) == (c.unknown, 103.0)
    assert c.lookup("u1", 103.0) == (None, False)
    assert c.lookup_until("u1", 103.0, False) == (None, -math.inf)
    assert (c.hits, c.misses) == (1, 1)
