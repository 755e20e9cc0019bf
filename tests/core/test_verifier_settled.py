"""The cache's settled denials: a header value refused without I/O is refused again from memory.

What must hold: the answer is exactly the one judging would give (the twins in
test_verifier_twins.py compare every skin request by request); every repeat still counts
against the client address; nothing is remembered past the freshness of what it was judged
against, nor across an invalidation (a key created, updated); unknown ids and wrong secrets
are remembered alike; and the memory is bounded.
"""

from __future__ import annotations

from typing import Any

import pytest

from keyguard.core import decision as d
from keyguard.core import verifier as verifier_module
from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.errors import ErrorCode
from keyguard.core.hashing import Hasher
from keyguard.core.keycache import DENIALS_MAX
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore

T0 = 1_700_000_000.0
PEER = ("203.0.113.7", 4000)
FMT = KeyFormat()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingHasher(Hasher):
    """Counts digest comparisons: a remembered denial makes none."""

    def __init__(self) -> None:
        super().__init__(pepper_from_env=False)
        self.verifies = 0

    def verify(self, plaintext: str, digest: str) -> bool:
        self.verifies += 1
        return super().verify(plaintext, digest)


class World:
    def __init__(self, **options: Any) -> None:
        self.store = MemoryStore()
        self.hasher = CountingHasher()
        self.wall, self.mono = Clock(T0), Clock(1000.0)
        self.key = FMT.generate()
        self.wrong = FMT.generate(self.key.key_id).plaintext
        self.create(self.key.key_id, self.key.plaintext)
        self.unknown = FMT.generate()
        options.setdefault("brute_force", BruteForceGuard(1000, 60.0, clock=self.mono))
        self.verifier = Verifier(
            self.store,
            hasher=self.hasher,
            policy=RoutePolicy({"GET /agents": "agents:read"}),
            clock=self.wall,
            monotonic=self.mono,
            unknown_id_budget=None,
            cache_ttl=5.0,
            negative_cache_ttl=5.0,
            **options,
        )

    def create(self, key_id: str, plaintext: str, **fields: Any) -> None:
        self.store.create(
            KeyRecord(
                key_id=key_id,
                name="k",
                digest=self.hasher.digest(plaintext),
                scopes=frozenset({"agents:read"}),
                **fields,
            )
        )

    def nowait(self, plaintext: str, peer: Any = PEER) -> d.Decision | None:
        return self.verifier.verify_nowait(f"UserKey {plaintext}", "GET", "/agents", peer=peer)

    def judged(self, plaintext: str) -> d.Decision:
        """The request as the ASGI middleware makes it: verify_nowait, averify if it stands
        aside (here: synchronously, through verify)."""
        decision = self.nowait(plaintext)
        if decision is None:
            decision = self.verifier.verify(f"UserKey {plaintext}", "GET", "/agents", peer=PEER)
        return decision


@pytest.mark.parametrize("which", ["unknown-id", "wrong-secret", "malformed", "bearer"])
def test_a_repeated_bad_value_is_refused_from_memory_with_the_same_answer(which: str) -> None:
    w = World()
    value = {
        "unknown-id": w.unknown.plaintext,
        "wrong-secret": w.wrong,
        "malformed": "not-a-key",
        "bearer": "",
    }[which]
    first = w.judged(value)  # a store read (unknown id, or the record the first time)
    assert not first.allowed
    second = w.nowait(value)  # judged from the cache, and remembered
    assert second == first
    before = w.hasher.verifies
    hits = w.verifier.cache_stats().hits
    for _ in range(5):
        assert w.nowait(value) == first
    assert w.hasher.verifies == before  # no digest comparison, no parsing
    judged = which in ("unknown-id", "wrong-secret")
    # Counted as the cached lookups they stand for (parse-level denials look nothing up).
    assert w.verifier.cache_stats().hits == hits + (5 if judged else 0)


def test_unknown_ids_and_wrong_secrets_are_remembered_alike() -> None:
    """Timing must not tell which ids exist: both kinds take the same memory path."""
    w = World()
    for value in (w.unknown.plaintext, w.wrong):
        w.judged(value)
        w.nowait(value)
    memo = list(w.verifier._cache.denials.values())
    assert len(memo) == 2
    assert {entry[0].code for entry in memo} == {ErrorCode.INVALID_API_KEY}
    assert {entry[2] for entry in memo} == {True}
    assert len({entry[1] for entry in memo}) == 1  # the same freshness deadline


def test_every_repeat_still_counts_against_the_address() -> None:
    w = World(brute_force=BruteForceGuard(3, 60.0, clock=Clock(1000.0)))
    answers = [w.judged(w.unknown.plaintext) for _ in range(6)]
    assert [a.code for a in answers[:3]] == [ErrorCode.INVALID_API_KEY] * 3
    assert [a.code for a in answers[3:]] == [ErrorCode.RATE_LIMITED] * 3
    # Another address is not affected.
    other = w.nowait(w.unknown.plaintext, peer=("198.51.100.1", 1))
    assert other is not None
    assert other.code is ErrorCode.INVALID_API_KEY


def test_nothing_is_remembered_past_the_freshness_of_what_it_was_judged_against() -> None:
    w = World()
    for value in (w.unknown.plaintext, w.wrong):
        w.judged(value)
        assert w.nowait(value) is not None
        w.mono.now += 4.9
        assert w.nowait(value) is not None  # still fresh
        w.mono.now += 0.2
        # Stale: the store must be asked again (None: verify_nowait stands aside for averify).
        assert w.nowait(value) is None
        w.mono.now -= 5.1  # back, for the next value


def test_a_malformed_value_is_remembered_for_as_long_as_it_is_kept() -> None:
    w = World()
    w.judged("not-a-key")
    w.mono.now += 1e9
    before = w.hasher.verifies
    assert w.nowait("not-a-key") == d.BAD_FORMAT
    assert w.verifier._cache.denials  # still there
    assert w.hasher.verifies == before


def test_a_key_created_after_its_id_was_refused_works_at_once() -> None:
    """The unknown id was cached (negative) and its value remembered; creating the key through
    the store invalidates both in this process."""
    w = World()
    for _ in range(3):
        assert w.judged(w.unknown.plaintext).code is ErrorCode.INVALID_API_KEY
    w.create(w.unknown.key_id, w.unknown.plaintext)
    decision = w.judged(w.unknown.plaintext)
    assert decision.allowed, decision


def test_a_key_whose_expiry_is_extended_works_at_once() -> None:
    w = World()
    g = FMT.generate()
    w.create(g.key_id, g.plaintext, expires_at=T0 - 1)
    for _ in range(3):
        assert w.judged(g.plaintext).code is ErrorCode.EXPIRED_API_KEY
    record = w.store.get(g.key_id)
    assert record is not None
    w.store.update(record.evolve(expires_at=T0 + 3600))
    assert w.judged(g.plaintext).allowed


def test_every_invalidation_forgets_every_settled_denial() -> None:
    w = World()
    w.judged(w.unknown.plaintext)
    w.nowait(w.unknown.plaintext)
    w.judged("not-a-key")
    assert len(w.verifier._cache.denials) == 2
    w.verifier.invalidate(w.key.key_id)  # another key changed: forget them all the same
    assert not w.verifier._cache.denials
    w.judged("not-a-key")
    w.verifier.invalidate()
    assert not w.verifier._cache.denials


def test_a_denial_judged_before_an_invalidation_is_not_remembered_after_it() -> None:
    w = World()
    cache = w.verifier._cache
    generation = cache.generation
    cache.invalidate("someid")  # lands between the judging and the remembering
    cache.remember_denial(b"d" * 32, d.INVALID, 1e9, True, generation)
    assert not cache.denials
    cache.remember_denial(b"d" * 32, d.INVALID, 1e9, True, cache.generation)
    assert cache.denials


def test_the_memory_is_bounded() -> None:
    w = World(brute_force=None)
    for i in range(DENIALS_MAX + 10):
        assert w.nowait(f"not-a-key-{i}") == d.BAD_FORMAT
        assert len(w.verifier._cache.denials) <= DENIALS_MAX
    # A value repeated among the flood is still answered right.
    assert w.nowait("not-a-key-3") == d.BAD_FORMAT


def test_a_value_without_a_peer_is_not_settled_here() -> None:
    """verify_nowait() without a peer leaves failures to averify() (it cannot count them)."""
    w = World()
    w.judged(w.unknown.plaintext)
    w.nowait(w.unknown.plaintext)
    assert w.verifier.verify_nowait(f"UserKey {w.unknown.plaintext}", "GET", "/agents") is None


@pytest.mark.parametrize("origin", [-1e6, 0.0, 1000.0])
def test_staleness_does_not_depend_on_the_clock_origin(origin: float) -> None:
    """A monotonic clock may start anywhere, below zero too: nothing cached is fresh."""
    w = World()
    cache = w.verifier._cache
    assert cache.lookup("nosuchid0000", origin) == (None, False)
    assert cache.lookup_until("nosuchid0000", origin, False)[1] < origin
    w.mono.now = origin
    assert w.nowait(w.unknown.plaintext) is None  # the store must be asked
    assert w.judged(w.unknown.plaintext).code is ErrorCode.INVALID_API_KEY
    assert w.nowait(w.unknown.plaintext) is not None  # now fresh
    w.mono.now = origin + 5.1
    assert w.nowait(w.unknown.plaintext) is None


@pytest.mark.parametrize(
    "value", ["Bearer abc", "UserKey not-a-key", "UserKey a\x01b", "userkey ", "UserKey kg_x_y"]
)
def test_a_value_refused_by_its_header_alone_is_read_once(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[object] = []
    real = verifier_module.read_credential

    def counting(authorization: Any, max_length: int) -> Any:
        reads.append(authorization)
        return real(authorization, max_length)

    monkeypatch.setattr(verifier_module, "read_credential", counting)
    w = World()
    header = value
    first = w.verifier.verify_nowait(header, "GET", "/agents", peer=PEER)
    assert first is not None
    assert not first.allowed
    for _ in range(5):
        assert w.verifier.verify_nowait(header, "GET", "/agents", peer=PEER) == first
    assert reads == [header]  # read once, then answered from memory


def test_a_settled_denial_ends_exactly_when_its_entry_does() -> None:
    """The memory answers strictly before the deadline of what it was judged against, as the
    cache itself does (fresh while the deadline is ahead)."""
    for which in ("unknown", "wrong"):
        w = World()
        value = w.unknown.plaintext if which == "unknown" else w.wrong
        w.judged(value)  # read from the store at 1000.0: fresh until 1005.0
        assert w.nowait(value) is not None  # remembered
        w.mono.now = 1005.0 - 1e-9
        assert w.nowait(value) is not None
        w.mono.now = 1005.0
        assert w.nowait(value) is None
