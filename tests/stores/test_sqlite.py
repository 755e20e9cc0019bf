"""The SQLite store against the store contract, plus its own promises: WAL, schema versions,
file permissions, several processes, failures surfacing as StoreUnavailable, no key in the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import math
import multiprocessing
import os
import pwd
import shutil
import sqlite3
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.records import AuditEvent, KeyRecord
from keyguard.stores import sqlite as sqlite_module
from keyguard.stores.base import KeyStore
from keyguard.stores.sqlite import COLUMNS, MIGRATIONS, SQLiteStore
from tests.stores.contract import StoreContract, StoreFactory, record

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to inspect or tamper with a store's file."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[StoreFactory]:
        made: list[KeyStore] = []

        def make() -> KeyStore:
            made.append(SQLiteStore(tmp_path / f"keys{len(made)}.db", timeout=10))
            return made[-1]

        yield make
        for store in made:
            store.close()


class TestSQLiteMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self) -> Iterator[StoreFactory]:
        made: list[KeyStore] = []

        def make() -> KeyStore:
            made.append(SQLiteStore(":memory:"))
            return made[-1]

        yield make
        for store in made:
            store.close()


# -- schema -------------------------------------------------------------------------------
def test_columns_are_the_record_fields() -> None:
    assert tuple(f.name for f in dataclasses.fields(KeyRecord)) == COLUMNS


def test_wal_mode_is_on(db: Path) -> None:
    SQLiteStore(db).close()
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_schema_is_versioned_and_reopening_is_idempotent(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.create(record())
    with SQLiteStore(db) as store:
        assert store.get(record().key_id) == record()
    with raw(db) as conn:
        assert conn.execute("SELECT id, version FROM keyguard_schema").fetchall() == [
            (1, len(MIGRATIONS))
        ]
        indexes = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
    assert {
        "keyguard_keys_owner",
        "keyguard_keys_created_by",
        "keyguard_keys_created",
        "keyguard_audit_key",
        "keyguard_audit_at",
    } <= indexes


def test_list_uses_the_created_index(db: Path) -> None:
    SQLiteStore(db).close()
    with raw(db) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT key_id FROM keyguard_keys"
            " WHERE (created_at, key_id) > (1.0, 'a') ORDER BY created_at, key_id LIMIT 5"
        ).fetchall()
    assert "keyguard_keys_created" in str(plan)
    assert "TEMP B-TREE" not in str(plan)


def test_a_newer_schema_is_refused(db: Path) -> None:
    SQLiteStore(db).close()
    with raw(db) as conn:
        conn.execute("UPDATE keyguard_schema SET version = 999")
    with pytest.raises(ConfigurationError, match="newer") as info:
        SQLiteStore(db)
    assert str(db) in str(info.value)


def test_migrations_apply_in_order_inside_one_transaction(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SQLiteStore(db).close()
    broken = ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL")
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(StoreUnavailable):
        SQLiteStore(db)
    with raw(db) as conn:
        assert conn.execute("SELECT version FROM keyguard_schema").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name='extra'").fetchone() is None

    fixed = ("CREATE TABLE extra (x INTEGER)", "INSERT INTO extra VALUES (42)")
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*MIGRATIONS, fixed])
    SQLiteStore(db).close()
    SQLiteStore(db).close()  # nothing left to apply: the INSERT does not run twice
    with raw(db) as conn:
        assert conn.execute("SELECT version FROM keyguard_schema").fetchone() == (
            len(MIGRATIONS) + 1,
        )
        assert conn.execute("SELECT x FROM extra").fetchall() == [(42,)]


# -- a change and its audit event ----------------------------------------------------------
def test_a_failing_audit_insert_rolls_the_change_back(db: Path) -> None:
    """The audit row is written inside the change's transaction: if it cannot be written,
    the change is not committed either."""
    with SQLiteStore(db) as store:
        rec = record()
        store.create(rec)
        with raw(db) as conn:
            conn.execute(
                "CREATE TRIGGER no_audit BEFORE INSERT ON keyguard_audit"
                " BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
            )
        event = AuditEvent(at=1.0, action="update", key_id=rec.key_id, actor="a")
        with pytest.raises(StoreUnavailable):
            store.update(rec.evolve(name="renamed"), audit=event)
        assert store.get(rec.key_id) == rec
        with pytest.raises(StoreUnavailable):
            store.create(record("other0000001"), audit=event)
        assert store.get("other0000001") is None
        store.update(rec.evolve(name="renamed"))  # without an event, the change goes through
        got = store.get(rec.key_id)
        assert got is not None
        assert got.name == "renamed"


# -- files ----------------------------------------------------------------------------------
def _modes(db: Path) -> dict[str, int]:
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm")))
        if p.exists()
    }


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@posix_only
@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_files_are_private(db: Path, mask: int) -> None:
    with umask(mask), SQLiteStore(db) as store:
        store.create(record())
        assert _modes(db) == {"keys.db": 0o600, "keys.db-wal": 0o600, "keys.db-shm": 0o600}


@posix_only
def test_an_existing_world_readable_database_is_made_private(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database made by another tool under umask 022: it and its live -wal/-shm are 0644."""
    with umask(0o022):
        SQLiteStore(db).close()
        db.chmod(0o644)
        with raw(db) as other:  # keeps -wal and -shm in place, created 0644 like the file
            other.execute("PRAGMA journal_mode = WAL")
            other.execute("CREATE TABLE other_tool (x)")
            other.execute("INSERT INTO other_tool VALUES (1)")
            assert set(_modes(db).values()) == {0o644}
            assert len(_modes(db)) == 3
            with caplog.at_level(logging.WARNING, logger="keyguard.stores"):
                store = SQLiteStore(db)
            assert _modes(db) == {"keys.db": 0o600, "keys.db-wal": 0o600, "keys.db-shm": 0o600}
            assert caplog.text.count("accessible to other users") == 3
            store.create(record())
            store.close()
        # Files SQLite creates afresh follow the (now private) database file.
        for side in ("keys.db-wal", "keys.db-shm"):
            db.with_name(side).unlink(missing_ok=True)
        with SQLiteStore(db) as store:
            store.create(record("k0000000000B"))
            assert _modes(db) == {"keys.db": 0o600, "keys.db-wal": 0o600, "keys.db-shm": 0o600}


@posix_only
def test_tightening_never_adds_a_permission(db: Path) -> None:
    SQLiteStore(db).close()
    db.chmod(0o444)
    try:
        # Read-only for its owner (root writes it anyway; others cannot set up WAL).
        with contextlib.suppress(StoreUnavailable):
            SQLiteStore(db).close()
        assert _modes(db)["keys.db"] == 0o400
    finally:
        db.chmod(0o600)


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A directory another user may enter (pytest's own tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="keyguard-modes-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def as_another_user() -> Iterator[None]:
    """Run the block as ``nobody`` (root drops its privileges; CI runs as root).

    Non-root runs cannot become another user: the caller decides what that means for it.
    Effective ids only, restored afterwards: file access checks use them.
    """
    assert os.geteuid() == 0
    nobody = pwd.getpwnam("nobody")
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(nobody.pw_gid)
    os.seteuid(nobody.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _needs_root() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI runs as root: this test needs root to act as another user")
    pytest.skip("needs root, to act as another user")


@posix_only
def test_a_database_that_cannot_be_made_private_is_refused() -> None:
    _needs_root()
    with shared_directory() as directory:
        db = directory / "keys.db"
        SQLiteStore(db).close()
        db.chmod(0o644)  # owned by root, readable by all
        with as_another_user(), pytest.raises(ConfigurationError, match="chmod 600") as info:
            SQLiteStore(db)
        assert "0644" in str(info.value)
        assert _modes(db)["keys.db"] == 0o644


@posix_only
def test_unreadable_file_is_unavailable(db: Path) -> None:
    """Root reads anything, so as root the file is opened by ``nobody``."""
    if os.geteuid() != 0:
        SQLiteStore(db).close()
        db.chmod(0)
        try:
            with pytest.raises(StoreUnavailable):
                SQLiteStore(db)
        finally:
            db.chmod(0o600)
        return
    with shared_directory() as directory:
        shared = directory / "keys.db"
        SQLiteStore(shared).close()
        shared.chmod(0)
        directory.chmod(0o777)  # nobody may create -wal/-shm: only the file itself is refused
        with as_another_user(), pytest.raises(StoreUnavailable) as info:
            SQLiteStore(shared)
        assert str(shared) in str(info.value)
        # Control: the same user opens the same file once it is theirs.
        shared.chmod(0o600)
        os.chown(shared, pwd.getpwnam("nobody").pw_uid, -1)
        with as_another_user():
            SQLiteStore(shared).close()


def test_missing_parent_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        SQLiteStore(tmp_path / "nope" / "keys.db")
    assert not (tmp_path / "nope").exists()


def test_garbage_file_is_unavailable(db: Path) -> None:
    db.write_bytes(b"this is not a database, just garbage " * 200)
    with pytest.raises(StoreUnavailable) as info:
        SQLiteStore(db)
    assert str(db) in str(info.value)
    assert not isinstance(info.value, sqlite3.Error)


def test_file_corrupted_under_a_running_store_is_unavailable(db: Path) -> None:
    with SQLiteStore(db) as seed:
        seed.create(record())
    store = SQLiteStore(db)
    try:
        db.write_bytes(os.urandom(8192))
        with pytest.raises(StoreUnavailable, match="unavailable"):
            store.get(record().key_id)
        with pytest.raises(StoreUnavailable):
            store.ping()
        with pytest.raises(StoreUnavailable):
            store.list()
    finally:
        store.close()


def test_a_path_that_cannot_be_opened_is_unavailable(db: Path) -> None:
    db.mkdir()  # unable to open, even for root
    with pytest.raises(StoreUnavailable, match="unavailable") as info:
        SQLiteStore(db)
    assert str(db) in str(info.value)


def test_use_after_close_is_unavailable(db: Path) -> None:
    store = SQLiteStore(db)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreUnavailable, match="closed"):
        store.get("k0000000000A")


def test_metadata_must_be_json(db: Path) -> None:
    with SQLiteStore(db) as store:
        with pytest.raises(ConfigurationError):
            store.create(record(metadata={"x": math.nan}))
        with pytest.raises(ConfigurationError):
            store.create(record(metadata={"x": object()}))
        assert store.get(record().key_id) is None


def test_repr_names_the_path(db: Path) -> None:
    with SQLiteStore(db) as store:
        assert repr(store) == f"SQLiteStore({str(db)!r})"


# -- connections (white-box: these properties are invisible until they leak) --------------
def test_a_thread_connection_closes_when_its_thread_ends(db: Path) -> None:
    with SQLiteStore(db) as store:
        threads = [threading.Thread(target=store.get, args=("k",)) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gc.collect()
        assert store._conns == {}  # e.g. a thread-per-request server must not leak connections


def test_connections_inherited_across_fork_are_left_alone(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db)
    store.create(record())
    inherited = store._local.holder.conn
    real_pid = os.getpid()
    try:
        monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # as if in a forked child
        assert store.get(record().key_id) == record()
        assert store._local.holder.conn is not inherited
        store.close()
        monkeypatch.undo()
        assert inherited in sqlite_module._INHERITED
        assert inherited.execute("SELECT count(*) FROM keyguard_keys").fetchone() == (1,)
    finally:
        monkeypatch.undo()
        with contextlib.suppress(ValueError):
            sqlite_module._INHERITED.remove(inherited)
        inherited.close()
        store.close()


# -- contention ---------------------------------------------------------------------------
def _hold_write_lock(path: Path, seconds: float, started: threading.Event) -> None:
    with raw(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        started.set()
        time.sleep(seconds)
        conn.execute("COMMIT")


def test_a_writer_waits_for_the_lock(db: Path) -> None:
    with SQLiteStore(db, timeout=10) as store:
        started = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(db, 0.3, started))
        holder.start()
        started.wait()
        store.create(record())  # blocks until the other writer commits, then succeeds
        holder.join()
        assert store.get(record().key_id) == record()


def test_a_lock_held_too_long_is_unavailable_not_a_raw_error(db: Path) -> None:
    with SQLiteStore(db, timeout=0.2) as store:
        started = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(db, 0.5, started))
        holder.start()
        started.wait()
        try:
            with pytest.raises(StoreUnavailable, match="stayed locked"):
                store.create(record())
            assert store.get(record().key_id) is None  # readers are not blocked by WAL writers
        finally:
            holder.join()


class FlakyConnection(sqlite3.Connection):
    """Answers "database is locked" to the next ``failures`` writes, as a busy peer would."""

    failures = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE" and FlakyConnection.failures > 0:
            FlakyConnection.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().execute(sql, *args)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> type[FlakyConnection]:
    connect = sqlite3.connect

    def flaky_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, factory=FlakyConnection, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", flaky_connect)
    monkeypatch.setattr(FlakyConnection, "failures", 0)
    return FlakyConnection


def test_busy_errors_are_retried_with_backoff(db: Path, flaky: type[FlakyConnection]) -> None:
    with SQLiteStore(db, timeout=5) as store:
        flaky.failures = 5
        store.create(record())
        assert flaky.failures == 0
        assert store.get(record().key_id) == record()


def test_busy_errors_give_up_at_the_timeout(db: Path, flaky: type[FlakyConnection]) -> None:
    with SQLiteStore(db, timeout=0.3) as store:
        flaky.failures = 10**9
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="stayed locked"):
            store.touch(record().key_id, 1.0)
        assert 0.1 < time.monotonic() - started < 2.0


def _process_worker(path: str, worker: int, count: int) -> int:
    """Run in a child process: create, update, touch and audit `count` keys."""
    with SQLiteStore(path, timeout=30) as store:
        for i in range(count):
            rec = record(f"w{worker}k{i:09d}", owner=f"worker{worker}", created_at=float(i))
            store.create(rec)
            store.update(rec.evolve(name="updated"))
            store.touch(rec.key_id, 1_000.0 + i)
            store.add_audit(AuditEvent(at=float(i), action="create", key_id=rec.key_id, actor="w"))
    return count


@pytest.mark.slow
def test_several_processes_share_one_file(db: Path) -> None:
    workers, count = 4, 50
    SQLiteStore(db).close()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_process_worker, str(db), w, count) for w in range(workers)]
        assert [f.result(timeout=120) for f in futures] == [count] * workers
    with SQLiteStore(db) as store:
        records = store.list(limit=1000).items
        assert len(records) == workers * count
        assert all(r.version == 2 and r.name == "updated" for r in records)
        assert all(r.last_used_at is not None and r.last_used_at >= 1_000 for r in records)
        assert len(store.audit(limit=1000)) == workers * count


# -- the canary: no key material in any file ------------------------------------------------
@pytest.mark.parametrize(
    "hasher",
    [
        pytest.param(Hasher(pepper_from_env=False), id="sha256"),
        pytest.param(Hasher(b"pepper-pepper-pepper", pepper_from_env=False), id="hmac"),
    ],
)
def test_no_key_material_reaches_the_files(db: Path, hasher: Hasher) -> None:
    fmt = KeyFormat("canary")
    needles: list[bytes] = []
    digests: list[bytes] = []

    def remember(plaintext: str) -> str:
        body = plaintext[: -len("XXXXXX")]
        secret = body.split("_", 2)[2]
        needles.extend(s.encode() for s in (plaintext, body, secret))
        digest = hasher.digest(plaintext)
        digests.append(digest.encode())
        return digest

    store = SQLiteStore(db)
    try:
        for _ in range(20):
            key = fmt.generate()
            rec = KeyRecord(
                key_id=key.key_id,
                name="canary",
                digest=remember(key.plaintext),
                prefix="canary",
                created_at=time.time(),
                metadata={"key_id": key.key_id},
            )
            store.create(rec)
            rotated = fmt.generate(key.key_id)  # a rotation keeps the old digest for a while
            store.update(rec.evolve(digest=remember(rotated.plaintext), previous_digest=rec.digest))
            store.touch(key.key_id, time.time())
            store.add_audit(AuditEvent(time.time(), "rotate", key.key_id, "admin"))
        files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
        assert {p.name for p in files} >= {"keys.db", "keys.db-wal", "keys.db-shm"}
        _assert_absent(files, needles, digests)
    finally:
        store.close()
    # After close the WAL is checkpointed into the main file: scan again.
    _assert_absent([p for p in db.parent.iterdir() if p.name.startswith(db.name)], needles, digests)


def _assert_absent(files: list[Path], needles: list[bytes], digests: list[bytes]) -> None:
    blob = b"".join(p.read_bytes() for p in files)
    # The scan sees what the store wrote (so absence means something)...
    assert all(d in blob for d in digests)
    # ...and no key, key body or secret is among it.
    leaked = [n for n in needles if n in blob]
    assert not leaked, f"{len(leaked)} key fragments found in the database files"


# -- URLs ------------------------------------------------------------------------------------
def test_url_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SQLiteStore.from_url("sqlite:///./x.db") as store:
        assert store.path == str(tmp_path / "x.db")
    with SQLiteStore.from_url("sqlite:///sub%20dir.db?timeout=2") as store:
        assert store.path == str(tmp_path / "sub dir.db")


def test_url_absolute_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/abs.db"
    assert url.startswith("sqlite:////")
    with SQLiteStore.from_url(url) as store:
        assert store.path == str(tmp_path / "abs.db")
    assert (tmp_path / "abs.db").exists()


def test_url_memory() -> None:
    with SQLiteStore.from_url("sqlite:///:memory:") as store:
        assert store.path == ":memory:"
        store.create(record())
        assert store.get(record().key_id) == record()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("sqlite://", id="no-path"),
        pytest.param("sqlite:///", id="empty-path"),
        pytest.param("sqlite://host/keys.db", id="host"),
        pytest.param("sqlite:///keys.db?bogus=1", id="unknown-option"),
        pytest.param("sqlite:///keys.db?timeout=soon", id="bad-timeout"),
        pytest.param("sqlite:///keys.db?timeout=0", id="zero-timeout"),
        pytest.param("sqlite:///keys.db?timeout=inf", id="infinite-timeout"),
        pytest.param("redis://localhost/0", id="other-scheme"),
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStore.from_url(url)
