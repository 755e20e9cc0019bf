"""Usage counting: the application's own status for admitted requests, keyguard's for the
refusals of a key's holder, batched flushes (one store write per flush, one batch per key),
retries that never count twice, nothing lost on a clean shutdown, bounded route labels."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.policy import RoutePolicy
from keyguard.core.usage import UsageBatch
from keyguard.management.manager import KeyManager
from keyguard.observability import Observer, UsageCounter
from keyguard.observability.usage import needed_scopes, route_label
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory
from tests.observability.support import TRANSPORTS, observe

POLICY = {
    "GET /agents": "agents:read",
    "GET /agents/{agent_id}": "agents:read",
    "POST /agents": "agents:write",
    "POST /tasks/{task_id}/execute": ["tasks:execute", "agents:read"],
}


def today() -> str:
    """Read when asserting: a module constant goes stale when a run crosses midnight UTC."""
    return datetime.now(UTC).date().isoformat()


def _fields(store: Any, key_id: str) -> dict[str, int]:
    totals = store.usage_totals(key_id=key_id, since="2000-01-01")
    assert len(totals.days) <= 1
    return dict(next(iter(totals.days.values()), {}))


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("status", "cls"),
    [(200, "2xx"), (201, "2xx"), (304, "3xx"), (404, "4xx"), (429, "429"), (503, "5xx")],
)
def test_admitted_requests_count_the_applications_status(
    transport: str, status: int, cls: str
) -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read", owner="acme")
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY), "rate_limits": None})
    send = TRANSPORTS[transport](verifier, status)
    for _ in range(3):
        assert send("GET", "/agents/7", [("Authorization", key.header)]).status == status
    verifier.observer.close()  # type: ignore[union-attr]
    assert _fields(store, key.key_id) == {
        f"s:{cls}": 3,
        "r:GET /agents/{agent_id}": 3,
        "q:agents:read": 3,
    }


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
def test_an_application_that_fails_counts_as_500(transport: str) -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY)})
    send = TRANSPORTS[transport](verifier, fail=True)
    with pytest.raises(RuntimeError):
        send("GET", "/agents", [("Authorization", key.header)])
    verifier.observer.close()  # type: ignore[union-attr]
    assert _fields(store, key.key_id)["s:5xx"] == 1


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
def test_refusals_of_a_keys_holder_count_with_keyguards_status_and_guesses_do_not(
    transport: str,
) -> None:
    store = MemoryStore()
    factory = KeyFactory(store)
    reader = factory.issue("agents:read")
    revoked = factory.issue("agents:read", revoked_at=1.0, revoked_reason="x")
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY), "rate_limits": "2/minute"})
    send = TRANSPORTS[transport](verifier)
    auth = [("Authorization", reader.header)]
    assert send("POST", "/agents", auth).status == 403  # scope
    assert [send("GET", "/agents", auth).status for _ in range(3)] == [200, 200, 429]
    assert send("GET", "/nowhere", auth).status == 403  # no rule: denied by default
    assert send("GET", "/agents", [("Authorization", revoked.header)]).status == 401
    wrong = KeyFactory(store).format.generate(reader.key_id).plaintext
    assert send("GET", "/agents", [("Authorization", f"UserKey {wrong}")]).status == 401
    assert send("GET", "/agents", []).status == 401
    verifier.observer.close()  # type: ignore[union-attr]
    assert _fields(store, reader.key_id) == {
        "s:2xx": 2,
        "s:4xx": 2,
        "s:429": 1,
        "r:GET /agents": 3,
        "r:POST /agents": 1,
        "r:(other)": 1,
        "q:agents:read": 3,
        "q:agents:write": 1,
    }  # the wrong secret is somebody's guess: not this key's usage
    assert _fields(store, revoked.key_id) == {"s:4xx": 1, "r:GET /agents": 1, "q:agents:read": 1}


def test_public_routes_count_nothing() -> None:
    store = MemoryStore()
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY, public=["/health"])})
    assert TRANSPORTS["asgi"](verifier)("GET", "/health", []).status == 200
    assert verifier.observer.usage.stats.counted == 0  # type: ignore[union-attr]
    verifier.observer.close()  # type: ignore[union-attr]


def test_the_report_through_the_key_manager() -> None:
    store = MemoryStore()
    manager = KeyManager(store)
    made = manager.create("k", ["agents:read"], owner="acme")
    other = manager.create("k2", ["agents:read"], owner="acme")
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY), "rate_limits": None})
    send = TRANSPORTS["wsgi"](verifier)
    headers = [("Authorization", f"UserKey {made.plaintext}"), ("X-Forwarded-For", "x")]
    for path in ("/agents", "/agents", "/agents/1"):
        send("GET", path, headers)
    TRANSPORTS["asgi"](verifier, 404)(
        "GET", "/agents/9", [("Authorization", f"UserKey {other.plaintext}")]
    )
    verifier.observer.close()  # type: ignore[union-attr]
    report = manager.usage(made.key_id, days=7)
    assert len(report.days) == 7
    assert report.days[-1].day.isoformat() == today()
    assert report.total == 3
    assert dict(report.days[-1].by_status) == {"2xx": 3, "3xx": 0, "4xx": 0, "429": 0, "5xx": 0}
    assert dict(report.days[-1].by_route) == {"GET /agents": 2, "GET /agents/{agent_id}": 1}
    assert all(d.total == 0 for d in report.days[:-1])
    assert report.last_client == "127.0.0.1"  # X-Forwarded-For is not trusted by default
    assert report.last_used_at is not None
    assert abs(report.last_used_at - time.time()) < 60
    assert store.get(made.key_id).last_used_at == report.last_used_at  # type: ignore[union-attr]
    owner = manager.owner_usage("acme", days=1)
    assert owner.total == 4
    assert dict(owner.days[0].by_status)["4xx"] == 1
    assert owner.owner == "acme"


def test_report_arguments_are_checked() -> None:
    manager = KeyManager(MemoryStore())
    with pytest.raises(ConfigurationError):
        manager.owner_usage("acme", days=0)
    with pytest.raises(ConfigurationError):
        manager.owner_usage("", days=3)
    from keyguard.core.errors import KeyNotFound

    with pytest.raises(KeyNotFound):
        manager.usage("nosuchkey000")


class _CountingStore(MemoryStore):
    """Records each add_usage call; can be told to fail the next ones."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[UsageBatch]] = []
        self.fail = 0
        self.fail_after_applying = False

    def add_usage(self, batches: Sequence[UsageBatch], *, retention_days: int = 90) -> None:
        self.calls.append(list(batches))
        if self.fail:
            self.fail -= 1
            if self.fail_after_applying:  # the write happened, its reply was lost
                super().add_usage(batches, retention_days=retention_days)
            raise StoreUnavailable("the test store failed")
        super().add_usage(batches, retention_days=retention_days)


def test_one_store_write_per_flush_and_one_batch_per_key() -> None:
    store = _CountingStore()
    factory = KeyFactory(store)
    keys = [factory.issue("agents:read") for _ in range(3)]
    counter = UsageCounter(store, start=False)
    for n in range(300):
        counter.count(keys[n % 3].key_id, "GET", "/agents", 200)
    assert store.calls == []  # nothing written on the request path
    assert counter.flush()
    (batches,) = store.calls
    assert sorted(b.key_id for b in batches) == sorted(k.key_id for k in keys)
    assert all(b.total == 100 for b in batches)
    assert counter.flush()  # nothing new: no write at all
    assert len(store.calls) == 1
    counter.close()


@pytest.mark.parametrize("applied", [False, True], ids=["nothing-applied", "reply-lost"])
def test_a_failed_flush_is_retried_and_never_counted_twice(applied: bool) -> None:
    store = _CountingStore()
    key = KeyFactory(store).issue("agents:read")
    counter = UsageCounter(store, start=False)
    for _ in range(5):
        counter.count(key.key_id, "GET", "/agents", 200)
    store.fail, store.fail_after_applying = 1, applied
    assert not counter.flush()
    for _ in range(2):
        counter.count(key.key_id, "GET", "/agents", 200)
    assert counter.flush()
    assert _fields(store, key.key_id)["s:2xx"] == 7
    stats = counter.stats
    assert (stats.counted, stats.failed_flushes, stats.flushes, stats.lost) == (7, 1, 1, 0)
    counter.close()


def test_close_writes_what_is_pending() -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    with UsageCounter(store, interval=3600) as counter:  # its thread would wait an hour
        for _ in range(4):
            counter.count(key.key_id, "GET", "/agents", 200, "192.0.2.4")
    assert _fields(store, key.key_id)["s:2xx"] == 4
    assert store.usage_totals(key_id=key.key_id, since=today()).last_client == "192.0.2.4"
    assert counter.closed


def test_the_background_thread_flushes_every_interval() -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    counter = UsageCounter(store, interval=0.05)
    try:
        counter.count(key.key_id, "GET", "/agents", 200)
        deadline = time.monotonic() + 10
        while not store.usage_totals(key_id=key.key_id, since=today()).days:
            assert time.monotonic() < deadline, "no flush within 10 s"
            time.sleep(0.02)
    finally:
        counter.close()


def test_usage_since_is_recorded_once_by_the_first_counter() -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    first = UsageCounter(store, start=False, clock=lambda: 1_000.0)
    second = UsageCounter(store, start=False, clock=lambda: 2_000.0)
    for counter in (first, second):
        counter.count(key.key_id, "GET", "/agents", 200)
        counter.close()
    assert store.get_setting("usage_since") == "1000.0"


def test_a_counter_needs_a_store_that_keeps_usage() -> None:
    class Bare:
        keeps_usage = False

    with pytest.raises(ConfigurationError):
        UsageCounter(Bare())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        UsageCounter(MemoryStore(), interval=0)
    with pytest.raises(ConfigurationError):
        UsageCounter(MemoryStore(), retention_days=0)


def test_route_labels_are_bounded() -> None:
    assert route_label("get", "/agents") == "GET /agents"
    assert route_label("BREW", "/pot") == "OTHER /pot"  # any method a client invents
    assert route_label("GET", None) == "(other)"  # every path no rule matched


def test_needed_scopes_follow_the_policy() -> None:
    policy = RoutePolicy({**POLICY, "* /any": "admin"})
    assert needed_scopes(policy, "POST", "/tasks/{task_id}/execute") == (
        "tasks:execute",
        "agents:read",
    )
    assert needed_scopes(policy, "DELETE", "/any") == ("admin",)
    assert needed_scopes(policy, "GET", None) == ()


def test_the_observer_counts_admitted_requests_as_200_when_no_response_is_seen() -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY)})
    assert verifier.verify(key.header, "GET", "/agents", peer="203.0.113.9").allowed
    observer = verifier.observer
    assert isinstance(observer, Observer)
    observer.close()
    assert _fields(store, key.key_id)["s:2xx"] == 1
    assert store.usage_totals(key_id=key.key_id, since=today()).last_client == "203.0.113.9"


def test_counting_usage_stops_the_verifiers_own_touch_writes() -> None:
    class Store(MemoryStore):
        touched = 0

        def touch(self, key_id: str, at: float) -> None:
            type(self).touched += 1

    store = Store()
    key = KeyFactory(store).issue("agents:read")
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY), "cache_ttl": 0})
    for _ in range(3):
        assert verifier.verify(key.header, "GET", "/agents").allowed
    assert Store.touched == 0
    verifier.observer.close()  # type: ignore[union-attr]
    assert store.get(key.key_id).last_used_at is not None  # type: ignore[union-attr]


def _child_flushes(counter: UsageCounter, key_id: str) -> None:
    # A child of a pre-forking server: what the parent counted is not its to write.
    counter.count(key_id, "GET", "/agents", 200)
    counter.close()


def test_a_forked_child_writes_only_its_own_counts(tmp_path: Any) -> None:
    import multiprocessing

    from keyguard.stores.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "keys.db")
    key = KeyFactory(store).issue("agents:read")
    counter = UsageCounter(store, interval=3600)
    for _ in range(3):
        counter.count(key.key_id, "GET", "/agents", 200)  # pending in the parent at fork time
    child = multiprocessing.get_context("fork").Process(
        target=_child_flushes, args=(counter, key.key_id)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    counter.close()
    assert _fields(store, key.key_id)["s:2xx"] == 4  # 3 from the parent, 1 from the child
    store.close()


def test_requests_beyond_capacity_are_counted_as_lost() -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    counter = UsageCounter(store, capacity=5, start=False)
    for _ in range(8):
        counter.count(key.key_id, "GET", "/agents", 200)
    assert counter.stats.pending == 5
    assert counter.flush()
    assert _fields(store, key.key_id)["s:2xx"] == 5
    assert counter.stats.lost == 3
    for _ in range(5):  # room again once tallied
        counter.count(key.key_id, "GET", "/agents", 200)
    counter.close()
    assert _fields(store, key.key_id)["s:2xx"] == 10


def test_recording_while_the_tally_runs_loses_and_mixes_nothing() -> None:
    """Threads record requests (the observer's way and count()'s) while the tally thread
    takes records from the same queue every few milliseconds: every request is counted once,
    under its own key, route and status."""
    import threading

    store = MemoryStore()
    factory = KeyFactory(store)
    keys = [factory.issue("agents:read") for _ in range(4)]
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY)})
    observer = verifier.observer
    assert isinstance(observer, Observer)
    counter = observer.usage
    assert counter is not None
    principals = [verifier.authenticate(k.header).principal for k in keys]
    per_thread = 3_000
    stop = threading.Event()

    def tally() -> None:
        while not stop.is_set():
            with counter._flush_lock:
                counter._tally()

    def record(i: int) -> None:
        for n in range(per_thread):
            if i % 2:
                admission = (verifier, principals[i], "GET", "/agents", "192.0.2.1", None, 0.0)
                observer.responded(admission, 200 + n % 2)  # type: ignore[arg-type]
            else:
                counter.count(keys[i].key_id, "POST", "/agents", 201 + n % 2 * 200, None)

    tallier = threading.Thread(target=tally)
    tallier.start()
    workers = [threading.Thread(target=record, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    tallier.join()
    observer.close()
    for i, key in enumerate(keys):
        fields = _fields(store, key.key_id)
        if i % 2:
            assert fields["r:GET /agents"] == fields["s:2xx"] == per_thread
        else:
            assert fields["r:POST /agents"] == per_thread
            assert fields["s:2xx"] == fields["s:4xx"] == per_thread // 2


def test_recording_a_request_leaves_nothing_for_the_garbage_collector() -> None:
    """A record is no object of its own: recording thousands of requests leaves the young
    generation's count where it was (a tuple per record would add one each), so the request
    path never sets off a collection."""
    import gc

    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    verifier, _ = observe(store, {"policy": RoutePolicy(POLICY)})
    observer = verifier.observer
    assert isinstance(observer, Observer)
    principal = verifier.authenticate(key.header).principal
    counter = observer.usage
    assert counter is not None
    admission = (verifier, principal, "GET", "/agents", ("192.0.2.1", 4711), None, 0.0)
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for n in range(2_000):
            observer.responded(admission, 200)  # type: ignore[arg-type]
            counter.count(key.key_id, "GET", "/agents", 200 + n % 3)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 50
    assert counter.stats.pending == 4_000
    observer.close()
    assert _fields(store, key.key_id)["s:2xx"] == 4_000
