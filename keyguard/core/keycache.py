"""The verifier's memory: cached records, cached unknown ids, and the fast-path index.

* **records** — an LRU of :class:`CacheEntry` (a record plus what is derived from it once: the
  principal and its allowed decision), each trusted until ``fresh_until`` (monotonic).
* **unknown ids** — an LRU of key id → monotonic deadline (the negative cache), so that a
  repeated unknown id does not hit the store each time. A lookup always consults both LRUs, so
  that a known and an unknown id cost the same (timing must not reveal which ids exist).
* **the fast-path index** — BLAKE2s of an ``Authorization`` value → (authentication decision,
  monotonic deadline, lane): the lane is the decision's principal when nothing about the key
  itself keeps it off the verifier's fused path (see :func:`lane_principal`), else ``None``,
  judged once when the entry is made rather than on every request. Only the canonical spelling
  (``"UserKey " + key``) of a key that authenticated in full is indexed, at most
  :data:`MAX_SPELLINGS` per record (its current and its previous secret): every other spelling
  takes the slow path, so header variants cannot grow the index. What is indexed is
  authentication only, which does not depend on the route or the time beyond the deadline:
  scopes and rate limits are checked on every request, fast path or not. So a request refused
  by scope or rate limit may index its key like an admitted one (at most those two entries),
  and a key over its limit is refused cheaply. A plain dict read with one atomic ``dict.get``
  per request, bounded FIFO (insertion order). BLAKE2s rather than SHA-256: equally
  collision-resistant, and Python's built-in BLAKE2 costs markedly less than OpenSSL's SHA-256
  inside a real request (measured with benchmarks/bench_*.py).
* **settled denials** — BLAKE2s of an ``Authorization`` value → (denial, monotonic deadline,
  whether it was judged against a cached record): a header value that was refused without I/O
  (malformed, an unknown id, a wrong secret, a revoked or expired key) is refused again from
  here until the record or unknown id it was judged against goes stale (a malformed value: for
  as long as it is remembered), so a client stuck on a bad key costs one dict read instead of
  parsing, checksumming and two digest comparisons per request. The brute-force guard still
  counts every one of them. Only denials settled from a *fresh* cache entry are remembered,
  every invalidation forgets them all, and a denial judged before an invalidation is never
  remembered after it (:attr:`generation`). Unknown ids and wrong secrets are remembered
  alike, so timing still does not tell which ids exist. Bounded (:data:`DENIALS_MAX`),
  emptied when full: a guesser sending a fresh value each time only refills it.

cachetools caches are not thread-safe (even a get reorders the LRU list), and WSGI servers
call the verifier from many threads: every access but the index read holds :attr:`lock`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cachetools import LRUCache

from keyguard.core import decision as d
from keyguard.core.decision import Decision, Principal
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import DEFAULT_PRIVILEGED, Grants

__all__ = ["DENIALS_MAX", "MAX_SPELLINGS", "CacheEntry", "CacheStats", "KeyCache", "lane_principal"]

#: Index entries per cached record: the canonical spelling of its current secret and of its
#: previous one (inside its rotation grace).
MAX_SPELLINGS: Final = 2
#: Settled denials remembered per verifier (some 200 bytes each).
DENIALS_MAX: Final = 4096
_STALE: Final = -math.inf


def lane_principal(decision: Decision) -> Principal | None:
    """An indexed decision's principal when the verifier's fused path
    (:meth:`~keyguard.core.verifier.Verifier.fast_admit`) may answer for it, as far as the key
    itself decides: not suspended, no network restriction, no per-key rate limit of its own
    and no extra response header (``API-Key-Expires``); else ``None``."""
    principal = decision.principal
    if principal is None:
        return None
    record = principal.record
    if (
        record.suspended_at is not None
        or record.allowed_networks
        or record.rate_limit
        or decision.extra_headers
    ):
        return None
    return principal


class CacheEntry:
    """A cached record plus what was derived from it once: the principal, the allowed decision,
    and the BLAKE2s digests under which it is indexed for the fast path."""

    __slots__ = ("allowed", "fresh_until", "principal", "record", "verified")

    def __init__(
        self, record: KeyRecord, principal: Principal | None, allowed: Decision, fresh_until: float
    ) -> None:
        self.record = record
        self.principal = principal
        self.allowed = allowed
        self.fresh_until = fresh_until
        self.verified: set[bytes] = set()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counts since the cache was made (for metrics): requests answered by the fast-path
    index, record lookups answered from memory (``hits``: a fresh record or a known-unknown
    id) and those that had to ask the store (``misses``), and the current sizes."""

    index_hits: int
    hits: int
    misses: int
    records: int
    unknown: int
    indexed: int

    @property
    def hit_ratio(self) -> float | None:
        """Requests that needed no store read, over all that needed a record (``None``
        before the first)."""
        total = self.index_hits + self.hits + self.misses
        return None if total == 0 else (self.index_hits + self.hits) / total


class KeyCache:
    """Records, unknown ids and the fast-path index of one verifier (see the module docstring).

    ``unknown`` is the entry returned for an unknown id: a record with ``dummy_digest`` (which
    no key matches) and no principal, so that judging an unknown id runs exactly the code that
    judges a wrong secret for a known one.
    """

    __slots__ = (
        "denials",
        "generation",
        "hits",
        "implications",
        "index",
        "index_hits",
        "index_size",
        "lock",
        "misses",
        "negative",
        "negative_ttl",
        "privileged",
        "records",
        "ttl",
        "unknown",
    )

    def __init__(
        self,
        *,
        size: int,
        ttl: float,
        negative_size: int,
        negative_ttl: float,
        implications: Mapping[str, frozenset[str]] | None,
        dummy_digest: str,
        privileged: frozenset[str] = DEFAULT_PRIVILEGED,
    ) -> None:
        self.lock = threading.RLock()
        self.records: LRUCache[str, CacheEntry] = LRUCache(maxsize=size)
        self.negative: LRUCache[str, float] = LRUCache(maxsize=negative_size)
        self.index: dict[bytes, tuple[Decision, float, Principal | None]] = {}
        self.index_size = size
        self.denials: dict[bytes, tuple[Decision, float, bool]] = {}
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.implications = implications
        self.privileged = privileged
        #: Bumped by every invalidation (see :meth:`put`).
        self.generation = 0
        # Counters for :meth:`stats`: plain ints, bumped without a lock (a lost increment
        # under a thread race is an acceptable error for a metric; a lock is not free).
        self.index_hits = 0
        self.hits = 0
        self.misses = 0
        dummy = KeyRecord(key_id="", name="", digest=dummy_digest)
        self.unknown: Final = CacheEntry(dummy, None, d.INVALID, 0.0)

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget one key id (or everything), index entries included."""
        with self.lock:
            # A record read from the store before this moment must not be cached after it
            # (see :meth:`put`'s ``since``).
            self.generation += 1
            self.denials.clear()  # in place too; rare (a key changed): every one of them
            if key_id is None:
                self.records.clear()
                self.negative.clear()
                self.index.clear()  # in place: the verifier holds this dict
                return
            entry = self.records.pop(key_id, None)
            self.negative.pop(key_id, None)
            if entry is not None:
                for digest in entry.verified:
                    self.index.pop(digest, None)

    def lookup(
        self, key_id: str, now_mono: float, counted: bool = True
    ) -> tuple[CacheEntry | None, bool]:
        """``(entry, True)`` for a fresh record, ``(unknown, True)`` for a known-unknown id;
        otherwise the store must be asked: ``(stale entry or None, False)``.

        ``counted=False`` leaves the hit and miss counters alone (a look-ahead whose request
        may be looked up again: count it with :meth:`count_hit` if it is answered)."""
        entry, until = self.lookup_until(key_id, now_mono, counted)
        return entry, until > now_mono

    def lookup_until(
        self, key_id: str, now_mono: float, counted: bool
    ) -> tuple[CacheEntry | None, float]:
        """:meth:`lookup`, with until when the answer is fresh (monotonic) instead of whether
        it is: ``(entry, until)``, ``(unknown, until)``, or ``(stale entry or None, -inf)`` (stale
        whatever the clock's origin)."""
        with self.lock:
            # Both LRUs every time: a known and an unknown id do the same work.
            entry = self.records.get(key_id)
            until = self.negative.get(key_id)
        if entry is not None and entry.fresh_until > now_mono:
            if counted:
                self.hits += 1
            return entry, entry.fresh_until
        if until is not None and until > now_mono:
            if counted:
                self.hits += 1
            return self.unknown, until
        if counted:
            self.misses += 1
        return entry, _STALE

    def remember_denial(
        self, digest: bytes, denial: Decision, until: float, judged: bool, generation: int
    ) -> None:
        """Remember that the value of BLAKE2s ``digest`` is refused with ``denial`` until
        ``until`` (monotonic); ``judged``: against a cached record (a lookup, for the
        counters). Not if anything was invalidated since ``generation`` was read."""
        with self.lock:
            if self.generation != generation:
                return
            denials = self.denials
            if len(denials) >= DENIALS_MAX and digest not in denials:
                denials.clear()
            denials[digest] = (denial, until, judged)

    def count_hit(self) -> None:
        """Count a request answered from memory after an uncounted :meth:`lookup`."""
        self.hits += 1

    def put(
        self,
        record: KeyRecord | None,
        key_id: str,
        now_mono: float,
        since: int | None = None,
    ) -> CacheEntry:
        """Cache what the store answered for ``key_id`` (``None``: unknown) and return the
        entry to judge against.

        ``since`` is :attr:`generation` read before the store was asked. If an invalidation
        arrived in between (a revocation published while this read was in flight), the answer
        may predate it: it is used for this request only and not cached, so the next request
        reads the store again (revoke-while-filling never leaves a stale "valid" entry)."""
        with self.lock:
            if since is not None and since != self.generation:
                if record is None:
                    return self.unknown
                return self._entry(record, now_mono)  # stale at once, and not stored
            if record is None:
                self.invalidate(key_id)
                self.negative[key_id] = now_mono + self.negative_ttl
                return self.unknown
            self.negative.pop(key_id, None)
            old = self.records.get(key_id)
            if old is not None and old.record.version == record.version:
                # Same record: keep the principal (and its allowed decision); just refresh.
                old.fresh_until = now_mono + self.ttl
                return old
            if old is not None:
                self.invalidate(key_id)
            entry = self._entry(record, now_mono + self.ttl)
            self.records[key_id] = entry
            return entry

    def _entry(self, record: KeyRecord, fresh_until: float) -> CacheEntry:
        grants = Grants(record.scopes, self.implications, privileged=self.privileged)
        principal = Principal(record.key_id, record.name, record.owner, grants, record)
        return CacheEntry(record, principal, Decision(True, principal), fresh_until)

    def remember(
        self,
        digest: bytes,
        entry: CacheEntry,
        deadline: float,
        decision: Decision | None = None,
    ) -> None:
        """Index the canonical header digest of a key that verified, until ``deadline``
        (monotonic), answering ``decision`` (default: the entry's allowed decision). Nothing
        for an entry that already has :data:`MAX_SPELLINGS` others, or
        that is no longer the cached one for its key id (a newer version replaced it)."""
        with self.lock:
            if self.records.get(entry.record.key_id) is not entry:
                return  # replaced or invalidated while this request was being judged
            verified = entry.verified
            if digest not in verified:
                if len(verified) >= MAX_SPELLINGS:
                    return
                verified.add(digest)
            index = self.index
            if digest not in index and len(index) >= self.index_size:
                del index[next(iter(index))]
            answer = entry.allowed if decision is None else decision
            index[digest] = (answer, deadline, lane_principal(answer))

    def stats(self) -> CacheStats:
        """The counters and sizes (see :class:`CacheStats`)."""
        return CacheStats(
            self.index_hits,
            self.hits,
            self.misses,
            len(self.records),
            len(self.negative),
            len(self.index),
        )

    def __repr__(self) -> str:
        return (
            f"KeyCache(records={len(self.records)}, unknown={len(self.negative)}, "
            f"index={len(self.index)})"
        )
