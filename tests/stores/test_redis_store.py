"""The Redis key store against the store contract — on the shared standalone Redis and on a
real three-master Redis Cluster this module starts itself — plus what is particular to it:
pushed invalidations, the key layout (hash tags, no KEYS/SCAN), fail-closed behaviour."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from keyguard.core.errors import (
    ConfigurationError,
    ConflictError,
    KeyExists,
    StoreUnavailable,
)
from keyguard.core.records import AuditEvent
from keyguard.stores import from_url
from keyguard.stores.base import KeyStore
from keyguard.stores.redis_store import RedisStore
from tests.conftest import REDIS_URL, _redis_or_skip
from tests.redis_servers import Cluster, Server
from tests.stores.contract import StoreContract, StoreFactory, record

redis = pytest.importorskip("redis")


def _cleanup(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for pattern in (f"{prefix}:*", "{" + prefix + "}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


class TestRedisStore(StoreContract):
    @pytest.fixture
    def make_store(self) -> Iterator[StoreFactory]:
        _redis_or_skip()
        made: list[tuple[KeyStore, str]] = []

        def make() -> KeyStore:
            prefix = "kgtest" + uuid.uuid4().hex[:10]
            made.append((RedisStore(REDIS_URL, prefix=prefix), prefix))
            return made[-1][0]

        yield make
        for store, prefix in made:
            store.close()
            _cleanup(REDIS_URL, prefix)


@pytest.mark.slow
class TestRedisClusterStore(StoreContract):
    @pytest.fixture
    def make_store(self, cluster: Cluster) -> Iterator[StoreFactory]:
        made: list[KeyStore] = []

        def make() -> KeyStore:
            prefix = "kgtest" + uuid.uuid4().hex[:10]
            made.append(from_url(f"{cluster.url}?prefix={prefix}"))
            return made[-1]

        yield make
        for store in made:
            store.close()

    def test_keys_spread_over_the_cluster_and_each_write_stays_in_one_slot(
        self, store: KeyStore, cluster: Cluster
    ) -> None:
        assert isinstance(store, RedisStore)
        assert store.cluster
        for i in range(30):
            store.create(
                record(f"spread{i:06d}", owner="o"),
                audit=AuditEvent(at=1.0, action="create", key_id=f"spread{i:06d}", actor="t"),
            )
        holders = set()
        for node in cluster.nodes:
            client = redis.Redis(host="127.0.0.1", port=node.port)
            try:
                if client.dbsize():
                    holders.add(node.port)
            finally:
                client.close()
        assert len(holders) == 3  # records are spread by their {key id} hash tag
        assert len(store.list(owner="o", limit=100).items) == 30
        assert [e.key_id for e in store.audit(key_id="spread000007")] == ["spread000007"]
        assert len(store.audit(limit=100)) == 30


# -- standalone specifics --------------------------------------------------------------------
@pytest.fixture
def store() -> Iterator[RedisStore]:
    _redis_or_skip()
    prefix = "kgtest" + uuid.uuid4().hex[:10]
    s = RedisStore(REDIS_URL, prefix=prefix)
    yield s
    s.close()
    _cleanup(REDIS_URL, prefix)


def test_from_url_options_and_schemes() -> None:
    s = from_url("redis://:s3cret@127.0.0.1:6379/15?prefix=abc&timeout=0.2&max_audit=10")
    assert isinstance(s, RedisStore)
    assert (s.prefix, s.timeout, s.max_audit, s.cluster) == ("abc", 0.2, 10, False)
    assert "s3cret" not in repr(s)
    assert from_url("redis+cluster://127.0.0.1:7000").cluster  # type: ignore[attr-defined]
    assert from_url("redis+cluster://127.0.0.1:7000/0").cluster  # type: ignore[attr-defined]
    for bad in (
        "redis+cluster://h:7000/1",  # a Cluster has database 0 only: said at once, not a 503
        "redis://h/0?timeout=x",
        "redis://h/0?timeout=-1",
        "redis://h/0?prefix=a%7Bb",
        "redis://h/0?max_audit=0",
    ):
        with pytest.raises(ConfigurationError):
            from_url(bad)


def test_no_key_material_and_digests_only(store: RedisStore) -> None:
    rec = record("layout000001", owner="acme")
    store.create(rec, audit=AuditEvent(at=1.0, action="create", key_id=rec.key_id, actor="t"))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"*{store.prefix}*"))
    finally:
        client.close()
    p = store.prefix
    assert keys == sorted(
        [
            f"{p}:k:{{layout000001}}",
            f"{p}:k:{{layout000001}}:audit",
            f"{{{p}}}:audit",
            f"{{{p}}}:created",
            f"{{{p}}}:owner:acme",
        ]
    )


def test_a_change_and_its_audit_event_commit_together(store: RedisStore) -> None:
    rec = record("atomic000001")
    store.create(rec, audit=AuditEvent(at=1.0, action="create", key_id=rec.key_id, actor="t"))
    # A refused write (stale version) writes no audit event either.
    with pytest.raises(ConflictError):
        store.update(
            rec.evolve(name="x").evolve(),
            audit=AuditEvent(at=2.0, action="update", key_id=rec.key_id, actor="t"),
        )
    with pytest.raises(KeyExists):
        store.create(rec, audit=AuditEvent(at=3.0, action="create", key_id=rec.key_id, actor="t"))
    assert [e.at for e in store.audit(key_id=rec.key_id)] == [1.0]
    assert [e.at for e in store.audit()] == [1.0]


def test_invalidations_are_pushed_to_subscribers(store: RedisStore) -> None:
    other = RedisStore(REDIS_URL, prefix=store.prefix)  # another process, in effect
    seen: list[str | None] = []
    got = threading.Event()

    def callback(key_id: str | None) -> None:
        seen.append(key_id)
        got.set()

    try:
        assert other.subscribe_invalidations(callback)
        listener = other.invalidation_listener
        assert listener is not None
        assert listener.wait_subscribed(5)
        rec = record("pushed000001")
        store.create(rec)
        assert got.wait(5)
        got.clear()
        store.update(rec.evolve(revoked_at=5.0))
        assert got.wait(5)
        assert seen == ["pushed000001", "pushed000001"]
        # touch is not a lifecycle change: nothing is published.
        got.clear()
        store.touch(rec.key_id, 10.0)
        assert not got.wait(0.3)
    finally:
        other.close()


def test_a_dropped_subscription_flushes_and_resubscribes(store: RedisStore) -> None:
    seen: list[str | None] = []
    store.subscribe_invalidations(seen.append)
    listener = store.invalidation_listener
    assert listener is not None
    assert listener.wait_subscribed(5)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # Kill the listener's connection from the server side.
        for info in client.client_list():
            if info.get("cmd") in ("subscribe", "ssubscribe") or int(info.get("sub", 0)):
                client.client_kill_filter(_id=info["id"])
    finally:
        client.close()
    deadline = time.monotonic() + 10
    while listener.subscriptions < 2:
        assert time.monotonic() < deadline, "did not resubscribe"
        time.sleep(0.05)
    assert None in seen  # the cache was told to forget everything
    seen.clear()
    store.create(record("afterdrop001"))
    deadline = time.monotonic() + 5
    while "afterdrop001" not in seen:
        assert time.monotonic() < deadline, "no invalidation after resubscribing"
        time.sleep(0.02)


# -- failures --------------------------------------------------------------------------------
@pytest.fixture
def own_redis() -> Iterator[Server]:
    server = Server()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.slow
def test_a_dead_redis_is_unavailable_within_the_timeout_and_recovers(own_redis: Server) -> None:
    store = RedisStore(own_redis.url, prefix="kg", timeout=0.3)
    try:
        store.create(record("survivor0001"))
        own_redis.kill()
        for call in (
            lambda: store.get("survivor0001"),
            lambda: store.create(record("new000000001")),
            lambda: store.list(),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert time.monotonic() - started < 3.0
            assert str(own_redis.port) not in str(info.value) or "unavailable" in str(info.value)
        own_redis.start()  # same port, empty (no persistence): the store reconnects by itself
        assert store.get("survivor0001") is None
        store.create(record("back00000001"))
        assert store.get("back00000001") is not None
    finally:
        store.close()


@pytest.mark.slow
def test_a_paused_redis_times_out(own_redis: Server) -> None:
    store = RedisStore(own_redis.url, prefix="kg", timeout=0.2)
    try:
        store.create(record("paused000001"))
        own_redis.pause()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get("paused000001")
        assert time.monotonic() - started < 2.0
    finally:
        own_redis.resume()
        store.close()
    with RedisStore(own_redis.url, prefix="kg", timeout=1.0) as again:
        assert again.get("paused000001") is not None


# -- cluster specifics -----------------------------------------------------------------------
def _slot_owner(cluster: Cluster, slot: int) -> tuple[str, int, str]:
    """(node id, port, host) of the master holding ``slot``."""
    client = redis.Redis(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                host, port, node_id = master[0], master[1], master[2]
                return (
                    node_id.decode() if isinstance(node_id, bytes) else node_id,
                    int(port),
                    host.decode() if isinstance(host, bytes) else host,
                )
    finally:
        client.close()
    raise AssertionError(f"slot {slot} is not served")


def _move_slot(cluster: Cluster, slot: int) -> None:
    """Migrate one slot, keys included, to another master (what a resharding does)."""
    source_id, source_port, _ = _slot_owner(cluster, slot)
    target = next(n for n in cluster.nodes if n.port != source_port)
    src = redis.Redis(host="127.0.0.1", port=source_port)
    dst = redis.Redis(host="127.0.0.1", port=target.port)
    try:
        target_id = dst.execute_command("CLUSTER MYID")
        target_id = target_id.decode() if isinstance(target_id, bytes) else target_id
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for node in cluster.nodes:
            c = redis.Redis(host="127.0.0.1", port=node.port)
            try:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            finally:
                c.close()
    finally:
        src.close()
        dst.close()


@pytest.mark.slow
def test_a_moved_slot_is_followed_not_an_error(cluster: Cluster) -> None:
    from keyguard.core.verifier import Verifier
    from tests.keyfactory import KeyFactory

    store = from_url(f"{cluster.url}?prefix=kgmove{uuid.uuid4().hex[:6]}")
    try:
        assert isinstance(store, RedisStore)
        key = KeyFactory(store).issue("agents:read")
        verifier = Verifier(store, rate_limits=None, cache_ttl=0)
        assert verifier.verify(key.header).allowed
        slot = int(store._sync().keyslot(store._rec(key.key_id)))
        _move_slot(cluster, slot)
        # The client's slot map is now stale: it gets MOVED and follows it.
        assert verifier.verify(key.header).allowed
        moved = store.get(key.key_id)
        assert moved is not None
        assert moved.digest == key.record.digest
        store.update(moved.evolve(name="after the move"))
        got = store.get(key.key_id)
        assert got is not None
        assert got.name == "after the move"
    finally:
        store.close()


@pytest.mark.slow
def test_invalidations_cross_the_cluster(cluster: Cluster) -> None:
    prefix = "kgpub" + uuid.uuid4().hex[:6]
    writer = from_url(f"{cluster.url}?prefix={prefix}")
    reader = from_url(f"redis+cluster://127.0.0.1:{cluster.nodes[2].port}?prefix={prefix}")
    seen: list[str | None] = []
    got = threading.Event()

    def callback(key_id: str | None) -> None:
        seen.append(key_id)
        got.set()

    try:
        assert isinstance(reader, RedisStore)
        reader.subscribe_invalidations(callback)
        listener = reader.invalidation_listener
        assert listener is not None
        assert listener.wait_subscribed(10)
        for i in range(6):  # keys in slots of every node: publishes from every master
            writer.create(record(f"pub{i:09d}"))
        deadline = time.monotonic() + 5
        while len(seen) < 6:
            assert got.wait(max(0.0, deadline - time.monotonic())), seen
            got.clear()
        assert sorted(s for s in seen if s) == [f"pub{i:09d}" for i in range(6)]
    finally:
        writer.close()
        reader.close()


@pytest.mark.slow
def test_a_cluster_node_down_is_unavailable_not_an_error() -> None:
    own = Cluster()
    own.start()
    store = from_url(f"{own.url}?prefix=kgdown&timeout=0.3")
    try:
        assert isinstance(store, RedisStore)
        ids = [f"down{i:08d}" for i in range(12)]
        for key_id in ids:
            store.create(record(key_id))
        own.nodes[1].kill()
        failures = 0
        for key_id in ids:
            started = time.monotonic()
            try:
                store.get(key_id)
            except StoreUnavailable:
                failures += 1
            assert time.monotonic() - started < 10.0
        assert failures >= 1  # the keys on the dead master; never another exception type
    finally:
        store.close()
        own.stop()
