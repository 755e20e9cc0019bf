"""What every store keeps for the management API: suspension and network fields, the
``suspended`` status filter, and idempotency entries written atomically with their change.

Runs against memory, SQLite (file) and the shared Redis; the Redis layout test also checks
that an entry shares its key's Cluster slot (so it commits in the same script)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from keyguard.core.errors import AlreadyProcessed, ConfigurationError, ConflictError, KeyExists
from keyguard.core.records import AuditEvent, IdempotencyEntry, KeyRecord, KeyStatus
from keyguard.stores.base import KeyStore
from keyguard.stores.memory import MemoryStore
from keyguard.stores.sqlite import MIGRATIONS, SQLiteStore
from tests.conftest import REDIS_URL, _redis_or_skip
from tests.stores.contract import record

NOW = 1_000_000.0


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "memory":
        made: KeyStore = MemoryStore()
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path / "keys.db")
    else:
        _redis_or_skip()
        from keyguard.stores.redis_store import RedisStore

        prefix = "kgtest" + uuid.uuid4().hex[:10]
        made = RedisStore(REDIS_URL, prefix=prefix)
    yield made
    made.close()
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for pattern in (f"{prefix}:*", "{" + prefix + "}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
        client.close()


def entry(
    key_id: str = "k0000000000A", token: str = "t" * 64, **fields: object
) -> IdempotencyEntry:
    values: dict[str, object] = {
        "key_id": key_id,
        "token": token,
        "fingerprint": "f" * 64,
        "at": NOW,
        "expires_at": NOW + 3600,
        "outcome": {"status": 201, "key_id": key_id},
    }
    values.update(fields)
    return IdempotencyEntry(**values)  # type: ignore[arg-type]


def test_new_fields_round_trip(store: KeyStore) -> None:
    rec = record(
        description="CI deploys — «ünïcødé»",
        suspended_at=NOW,
        suspended_reason="abuse: 10k requests/min from one address",
        allowed_networks=("10.0.0.0/8", "2001:db8::/32"),
    )
    store.create(rec)
    got = store.get(rec.key_id)
    assert got == rec
    assert got is not None
    assert isinstance(got.allowed_networks, tuple)
    resumed = replace(
        got,
        description=None,
        suspended_at=None,
        suspended_reason=None,
        allowed_networks=(),
        version=2,
    )
    store.update(resumed)
    assert store.get(rec.key_id) == resumed


def test_status_filter_knows_suspended(store: KeyStore) -> None:
    active = record("active000001")
    suspended = record("suspended001", suspended_at=NOW - 5)
    expired_suspended = record("expsusp00001", suspended_at=NOW - 5, expires_at=NOW - 1)
    revoked = record("revoked00001", revoked_at=NOW - 1, suspended_at=NOW - 5)
    for r in (active, suspended, expired_suspended, revoked):
        store.create(r)

    def ids(status: KeyStatus) -> list[str]:
        return [r.key_id for r in store.list(status=status, now=NOW).items]

    assert ids(KeyStatus.ACTIVE) == ["active000001"]
    assert ids(KeyStatus.SUSPENDED) == ["suspended001"]
    assert ids(KeyStatus.EXPIRED) == ["expsusp00001"]
    assert ids(KeyStatus.REVOKED) == ["revoked00001"]


def test_idempotency_entry_is_written_with_the_create(store: KeyStore) -> None:
    rec = record()
    e = entry()
    assert store.get_idempotency(rec.key_id, e.token, now=NOW) is None
    store.create(rec, audit=AuditEvent(NOW, "create", rec.key_id, "t"), idempotency=e)
    assert store.get_idempotency(rec.key_id, e.token, now=NOW + 1) == e
    # Not live any more once it expired; other tokens and keys are unaffected.
    assert store.get_idempotency(rec.key_id, e.token, now=e.expires_at) is None
    assert store.get_idempotency(rec.key_id, "u" * 64, now=NOW) is None
    assert store.get_idempotency("other0000000", e.token, now=NOW) is None


def test_a_second_write_with_a_live_entry_changes_nothing(store: KeyStore) -> None:
    rec = record()
    e = entry()
    store.create(rec, idempotency=e)
    # An update carrying the same token is refused before the version check; nothing lands.
    changed = rec.evolve(name="changed twice?")
    with pytest.raises(AlreadyProcessed) as info:
        store.update(changed, audit=AuditEvent(NOW, "rotate", rec.key_id, "t"), idempotency=e)
    assert info.value.key_id == rec.key_id
    assert store.get(rec.key_id) == rec
    assert store.audit(key_id=rec.key_id) == []
    # So is a stale update with the token (the retry learns it already ran, not "conflict").
    with pytest.raises(AlreadyProcessed):
        store.update(rec, idempotency=e)
    # And a create of the same key with the token.
    with pytest.raises((AlreadyProcessed, KeyExists)):
        store.create(rec, idempotency=e)


def test_an_expired_entry_does_not_block(store: KeyStore) -> None:
    rec = record()
    store.create(rec, idempotency=entry(expires_at=NOW + 1))
    later = entry(at=NOW + 2, expires_at=NOW + 100)
    store.update(rec.evolve(name="again"), idempotency=later)
    assert store.get_idempotency(rec.key_id, later.token, now=NOW + 3) == later


def test_update_with_an_entry_still_checks_the_version(store: KeyStore) -> None:
    rec = record()
    store.create(rec)
    store.update(rec.evolve(name="first"))
    with pytest.raises(ConflictError):
        store.update(rec.evolve(name="stale"), idempotency=entry())
    assert store.get_idempotency(rec.key_id, entry().token, now=NOW) is None


def test_entries_are_checked(store: KeyStore) -> None:
    rec = record()
    with pytest.raises(ConfigurationError, match="name the key"):
        store.create(rec, idempotency=entry(key_id="other0000000"))
    with pytest.raises(ConfigurationError, match="expire after"):
        store.create(rec, idempotency=entry(expires_at=NOW))
    with pytest.raises(ConfigurationError, match="JSON"):
        store.create(rec, idempotency=entry(outcome={"x": object()}))
    assert store.get(rec.key_id) is None


def test_concurrent_writers_with_one_token_apply_once(store: KeyStore) -> None:
    """Eight threads race to rotate the same key under one token: one change lands, the others
    learn the request was processed (possibly after a version conflict)."""
    rec = record()
    store.create(rec)
    barrier = threading.Barrier(8)
    e = entry()

    def attempt(i: int) -> str:
        barrier.wait()
        for _ in range(20):
            current = store.get(rec.key_id)
            assert current is not None
            try:
                store.update(
                    current.evolve(name=f"writer {i}"),
                    audit=AuditEvent(NOW, "rotate", rec.key_id, f"w{i}"),
                    idempotency=e,
                )
                return "applied"
            except AlreadyProcessed:
                return "replayed"
            except ConflictError:
                continue
        return "gave up"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert sorted(outcomes) == ["applied"] + ["replayed"] * 7
    got = store.get(rec.key_id)
    assert got is not None
    assert got.version == 2
    assert len(store.audit(key_id=rec.key_id)) == 1


def test_sqlite_migration_3_upgrades_a_version_2_file(tmp_path: Path) -> None:
    """A file written before suspension existed gains the columns with defaults, keeps its
    keys, and gets the idempotency table."""
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE keyguard_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER)"
    )
    for step in MIGRATIONS[:2]:
        for statement in step:
            conn.execute(statement)
    conn.execute("INSERT INTO keyguard_schema VALUES (1, 2)")
    conn.execute(
        "INSERT INTO keyguard_keys (key_id, name, digest, created_at, prefix, version)"
        " VALUES ('old000000001', 'old key', 'sha256$x', 1.0, 'kg', 1)"
    )
    conn.commit()
    conn.close()
    with SQLiteStore(db) as store:
        got = store.get("old000000001")
        assert got == KeyRecord(
            key_id="old000000001", name="old key", digest="sha256$x", created_at=1.0
        )
        assert got.suspended_at is None
        assert got.allowed_networks == ()
        store.create(record(), idempotency=entry())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM keyguard_schema").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("SELECT count(*) FROM keyguard_idempotency").fetchone() == (1,)


def test_sqlite_forgets_expired_entries_as_new_ones_arrive(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "k.db") as store:
        store.create(record("a00000000001"), idempotency=entry("a00000000001", expires_at=NOW + 1))
        store.create(
            record("b00000000001"),
            idempotency=entry("b00000000001", at=NOW + 5, expires_at=NOW + 9),
        )
    with sqlite3.connect(tmp_path / "k.db") as conn:
        rows = conn.execute("SELECT key_id FROM keyguard_idempotency").fetchall()
    assert rows == [("b00000000001",)]


def test_redis_entry_shares_its_keys_slot_and_expires() -> None:
    _redis_or_skip()
    import redis
    from redis.crc import key_slot

    from keyguard.stores.redis_store import RedisStore

    prefix = "kgtest" + uuid.uuid4().hex[:10]
    store = RedisStore(REDIS_URL, prefix=prefix)
    try:
        rec = record()
        store.create(rec, idempotency=entry(expires_at=NOW + 60))
        client = redis.Redis.from_url(REDIS_URL)
        names = [k.decode() for k in client.scan_iter(match=f"{prefix}:k:*", count=1000)]
        idem = [n for n in names if ":idem:" in n]
        assert len(idem) == 1
        assert key_slot(idem[0].encode()) == key_slot(f"{prefix}:k:{{{rec.key_id}}}".encode())
        assert 0 < client.pttl(idem[0]) <= 60_000
        client.close()
    finally:
        store.close()
        client = redis.Redis.from_url(REDIS_URL)
        for pattern in (f"{prefix}:*", "{" + prefix + "}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
        client.close()
