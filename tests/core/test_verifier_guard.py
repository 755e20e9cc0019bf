"""The brute-force guard and the lookup budget before the store (issue 7, item 4): a blocked
address causes no store reads, a flood of fresh key ids from one address cannot turn into store
load, and a key's owner who shares the address is not locked out while the key is cached."""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.addresses import peer_address
from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.lookup_budget import LookupBudget
from keyguard.core.records import AuditEvent, IdempotencyEntry, KeyRecord, Page
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory

A = "203.0.113.7"
B = "198.51.100.9"


class CountingWrapper(KeyStore):
    """Wraps a store and counts every key read, sync and async."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner = inner
        self.reads = 0

    def get(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        return self.inner.get(key_id)

    async def aget(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        return await self.inner.aget(key_id)

    def touch(self, key_id: str, at: float) -> None:
        self.inner.touch(key_id, at)

    def create(self, record: KeyRecord, **kw: Any) -> None:
        self.inner.create(record, **kw)

    def update(self, record: KeyRecord, **kw: Any) -> None:
        self.inner.update(record, **kw)

    def get_idempotency(self, key_id: str, token: str, *, now: float) -> IdempotencyEntry | None:
        return self.inner.get_idempotency(key_id, token, now=now)

    def list(self, **kw: Any) -> Page:
        return self.inner.list(**kw)

    def add_audit(self, event: AuditEvent) -> None:
        self.inner.add_audit(event)

    def audit(self, *, key_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        return self.inner.audit(key_id=key_id, limit=limit)

    def get_setting(self, name: str) -> str | None:
        return self.inner.get_setting(name)

    def set_setting(self, name: str, value: str, *, only_if_absent: bool = False) -> str:
        return self.inner.set_setting(name, value, only_if_absent=only_if_absent)


class Clock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    code: str | None
    retry_after: int | None


Path = Callable[[Verifier, str, str], Reply]


def _decision(d: Any) -> Reply:
    return Reply(d.status, d.code.value if d.code else None, d.retry_after)


def via_verify(v: Verifier, header: str, peer: str) -> Reply:
    return _decision(v.verify(header, peer=peer))


def via_averify(v: Verifier, header: str, peer: str) -> Reply:
    return _decision(asyncio.run(v.averify(header, peer=(peer, 4000))))


def via_authenticate(v: Verifier, header: str, peer: str) -> Reply:
    return _decision(v.authenticate(header, peer=peer))


def via_aauthenticate(v: Verifier, header: str, peer: str) -> Reply:
    return _decision(asyncio.run(v.aauthenticate(header, peer=peer)))


async def _ok_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def via_asgi(v: Verifier, header: str, peer: str) -> Reply:
    """The ASGI middleware: verify_nowait first, then averify."""
    app = KeyGuardMiddleware(_ok_asgi, verifier=v)
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"authorization", header.encode())],
        "client": (peer, 4000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    headers = dict(sent[0]["headers"])
    body = json.loads(sent[1]["body"])
    retry = headers.get(b"retry-after")
    return Reply(status, body.get("code"), int(retry) if retry else None)


def _ok_wsgi(environ: Any, start_response: Any) -> Any:
    start_response("200 OK", [])
    return [b"{}"]


def via_wsgi(v: Verifier, header: str, peer: str) -> Reply:
    app = KeyGuardWSGIMiddleware(_ok_wsgi, verifier=v)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": peer,
        "HTTP_AUTHORIZATION": header,
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
    }
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen["status"] = int(status.split()[0])
        seen["headers"] = {k.lower(): v for k, v in headers}

    body = json.loads(b"".join(app(environ, start_response)))
    retry = seen["headers"].get("retry-after")
    return Reply(seen["status"], body.get("code"), int(retry) if retry else None)


PATHS = [
    pytest.param(via_verify, id="verify"),
    pytest.param(via_averify, id="averify"),
    pytest.param(via_authenticate, id="authenticate"),
    pytest.param(via_aauthenticate, id="aauthenticate"),
    pytest.param(via_asgi, id="asgi"),
    pytest.param(via_wsgi, id="wsgi"),
]


@pytest.fixture
def store() -> CountingWrapper:
    return CountingWrapper(MemoryStore())


@pytest.fixture
def factory(store: CountingWrapper) -> KeyFactory:
    return KeyFactory(store.inner)


def fresh() -> str:
    return "UserKey " + KeyFormat().generate().plaintext


def make(store: KeyStore, clock: Clock, **kw: Any) -> Verifier:
    kw.setdefault("brute_force", BruteForceGuard(threshold=5, window=60, clock=clock))
    return Verifier(
        store,
        hasher=Hasher(pepper_from_env=False),
        rate_limits=None,
        monotonic=clock,
        clock=clock,
        **kw,
    )


def block(v: Verifier, send: Path, peer: str) -> None:
    # The guard answers its threshold (5) of failures; the next one is refused.
    replies = [send(v, fresh(), peer) for _ in range(6)]
    assert [r.code for r in replies] == ["invalid_api_key"] * 5 + ["rate_limited"]


@pytest.mark.parametrize("send", PATHS)
def test_a_blocked_address_causes_no_store_reads(
    store: CountingWrapper, factory: KeyFactory, send: Path
) -> None:
    clock = Clock()
    v = make(store, clock)
    block(v, send, A)
    assert store.reads == 6
    store.reads = 0
    for _ in range(200):
        r = send(v, fresh(), A)
        assert (r.status, r.code) == (429, "rate_limited")
        assert r.retry_after is not None
        assert 1 <= r.retry_after <= 60
    # A real key id with a wrong secret, not cached: no read either.
    key = factory.issue()
    wrong = "UserKey " + KeyFormat().generate(key.key_id).plaintext
    assert send(v, wrong, A).code == "rate_limited"
    assert store.reads == 0
    # Another address is not blocked and is read for as usual.
    assert send(v, fresh(), B).code == "invalid_api_key"
    assert store.reads == 1


@pytest.mark.parametrize("send", PATHS)
def test_the_owner_of_a_cached_key_is_not_locked_out(
    store: CountingWrapper, factory: KeyFactory, send: Path
) -> None:
    clock = Clock()
    v = make(store, clock, cache_ttl=1.0)
    owner = factory.issue()
    assert send(v, owner.header, A).status == 200  # cached now
    block(v, send, A)
    assert send(v, owner.header, A).status == 200  # fresh in the cache
    # The cached copy goes stale: the secret matches it, so the store is read (the owner
    # holds the key) and a revocation made meanwhile is seen.
    clock.now += 5
    store.reads = 0
    assert send(v, owner.header, A).status == 200
    assert store.reads == 1
    factory.change(owner, revoked_at=clock.now)
    clock.now += 5
    r = send(v, owner.header, A)
    assert r.code == "revoked_api_key"
    assert store.reads == 2
    # A guesser using the owner's (stale) key id with a wrong secret causes no read.
    clock.now += 5
    wrong = "UserKey " + KeyFormat().generate(owner.key_id).plaintext
    assert send(v, wrong, A).code == "rate_limited"
    assert store.reads == 2


@pytest.mark.parametrize("send", PATHS)
def test_an_uncached_key_from_a_blocked_address_waits_for_the_block(
    store: CountingWrapper, factory: KeyFactory, send: Path
) -> None:
    clock = Clock()
    v = make(store, clock)
    owner = factory.issue()
    block(v, send, A)
    store.reads = 0
    r = send(v, owner.header, A)
    # Verifying it would need a store read, which a blocked address does not get.
    assert (r.status, r.code) == (429, "rate_limited")
    assert store.reads == 0
    assert send(v, owner.header, B).status == 200
    clock.now += 61  # the block is over
    assert send(v, owner.header, A).status == 200


@pytest.mark.parametrize("send", PATHS)
def test_a_flood_of_fresh_ids_is_bounded_by_the_lookup_budget(
    store: CountingWrapper, factory: KeyFactory, send: Path
) -> None:
    clock = Clock()
    budget = LookupBudget(10, 60.0, clock=clock)
    v = make(store, clock, brute_force=None, unknown_id_budget=budget)
    replies = [send(v, fresh(), A) for _ in range(100)]
    assert {(r.status, r.code) for r in replies} == {(401, "invalid_api_key")}
    assert store.reads == 10
    assert send(v, fresh(), B).code == "invalid_api_key"
    assert store.reads == 11
    clock.now += 6  # one lookup's worth of refill (10 per 60 s)
    for _ in range(5):
        send(v, fresh(), A)
    assert store.reads == 12
    # A real key's owner at A gets in when the key is cached...
    owner = factory.issue()
    assert send(v, owner.header, B).status == 200
    assert send(v, owner.header, A).status == 200


@pytest.mark.parametrize("send", PATHS)
def test_lookups_of_existing_keys_do_not_spend_the_budget(
    store: CountingWrapper, factory: KeyFactory, send: Path
) -> None:
    clock = Clock()
    v = make(store, clock, brute_force=None, unknown_id_budget=LookupBudget(3, 60.0, clock=clock))
    keys = [factory.issue() for _ in range(30)]
    assert all(send(v, k.header, A).status == 200 for k in keys)
    assert store.reads == 30
    assert [send(v, fresh(), A).code for _ in range(5)] == ["invalid_api_key"] * 5
    assert store.reads == 33


@pytest.mark.parametrize("send", PATHS)
def test_refusals_past_the_budget_count_as_failures(store: CountingWrapper, send: Path) -> None:
    clock = Clock()
    guard = BruteForceGuard(threshold=20, window=60, clock=clock)
    v = make(store, clock, brute_force=guard, unknown_id_budget=LookupBudget(5, 60, clock=clock))
    codes = [send(v, fresh(), A).code for _ in range(21)]
    assert codes == ["invalid_api_key"] * 20 + ["rate_limited"]
    assert store.reads == 5


def test_no_client_address_means_no_gate(store: CountingWrapper) -> None:
    """authenticate() without a peer (DRF's path today): the store is read as before."""
    clock = Clock()
    v = make(store, clock, unknown_id_budget=LookupBudget(1, 60, clock=clock))
    for _ in range(3):
        assert v.authenticate(fresh()).code is not None
    assert store.reads == 3


# -- LookupBudget --------------------------------------------------------------------------
def test_budget_refills_at_its_rate_and_caps_at_its_size() -> None:
    clock = Clock()
    b = LookupBudget(3, 30.0, clock=clock)
    assert [b.take(A) for _ in range(4)] == [True, True, True, False]
    clock.now += 10  # one token
    assert [b.take(A) for _ in range(2)] == [True, False]
    clock.now += 1_000
    assert [b.take(A) for _ in range(4)] == [True, True, True, False]
    b.refund(A)
    b.refund(A)
    b.refund(A)
    b.refund(A)  # capped at the size
    assert [b.take(A) for _ in range(4)] == [True, True, True, False]
    assert b.take(None) is True  # unknown addresses are not limited
    b.refund(None)
    b.refund(B)  # never seen: nothing to refund
    assert len(b) == 1


def test_budget_ignores_a_clock_stepping_back() -> None:
    clock = Clock()
    b = LookupBudget(2, 10.0, clock=clock)
    assert b.take(A)
    assert b.take(A)
    assert not b.take(A)
    clock.now -= 100
    assert not b.take(A)
    clock.now += 100 + 5  # five seconds after the last real update: one token
    assert b.take(A)
    assert not b.take(A)


def test_budget_memory_is_bounded() -> None:
    b = LookupBudget(1, 60.0, max_clients=3)
    for i in range(10):
        assert b.take(f"10.0.0.{i}")
    assert len(b) == 3
    assert not b.take("10.0.0.9")  # the most recent are kept
    assert b.take("10.0.0.0")  # the oldest were forgotten (a fresh bucket)


def test_budget_defaults() -> None:
    b = LookupBudget()
    assert (b.lookups, b.per, b.max_clients) == (60, 60.0, 10_000)
    assert all(b.take(A) for _ in range(60))
    assert not b.take(A)
    assert repr(b) == "LookupBudget(lookups=60, per=60)"


@pytest.mark.parametrize(
    "kw",
    [
        {"lookups": 0},
        {"lookups": True},
        {"lookups": 1.5},
        {"per": 0},
        {"per": -1},
        {"per": float("inf")},
        {"per": float("nan")},
        {"per": "1"},
        {"max_clients": 0},
        {"max_clients": True},
    ],
)
def test_budget_validation(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        LookupBudget(**kw)


def test_the_verifier_default_budget_is_sixty_a_minute(store: CountingWrapper) -> None:
    v = Verifier(store, hasher=Hasher(pepper_from_env=False), brute_force=None)
    budget = v.unknown_id_budget
    assert isinstance(budget, LookupBudget)
    assert (budget.lookups, budget.per) == (60, 60.0)
    for _ in range(70):
        v.verify(fresh(), peer=A)
    assert store.reads == 60
    assert Verifier(store, unknown_id_budget=None).unknown_id_budget is None


class RecordingGuard(BruteForceGuard):
    """Remembers the client each failure was counted for."""

    def __init__(self) -> None:
        super().__init__(threshold=100, window=60)
        self.clients: list[str | None] = []

    def record_failure(self, client: str | None) -> int | None:
        self.clients.append(client)
        return super().record_failure(client)


@pytest.mark.parametrize(
    "peer",
    [
        "203.0.113.7",
        " 203.0.113.7 ",
        "[203.0.113.7]",
        "203.0.113.7:8080",
        "::ffff:203.0.113.7",
        "2001:DB8::1",
        "[2001:db8::1]:443",
        "01.2.3.4",
        "testclient",
        "x" * 80,
    ],
)
@pytest.mark.parametrize("send", PATHS)
def test_failures_are_counted_under_the_canonical_peer(
    store: CountingWrapper, send: Path, peer: str
) -> None:
    """Each path counts a failure for the peer as peer_address() spells it (the request
    path shortcuts the IPv4 case: it must agree)."""
    guard = RecordingGuard()
    v = make(store, Clock(), brute_force=guard)
    for header in ("UserKey not-a-key", fresh()):
        assert send(v, header, peer).code in {"invalid_api_key", "invalid_api_key_format"}
    assert guard.clients == [peer_address(peer)] * 2
