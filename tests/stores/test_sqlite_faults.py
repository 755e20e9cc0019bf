"""The SQLite store when its file misbehaves under a running process: a deleted database is not
served as a ghost (503, and never recreated empty), a restored or replaced one is picked up
without a restart, a corrupt one fails closed and recovers once repaired, and each incident is
one log line (plus one on recovery), not a traceback per request."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keyguard.core.errors import StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.verifier import Verifier
from keyguard.stores.sqlite import SQLiteStore
from tests.keyfactory import IssuedKey, KeyFactory


def _files(db: Path) -> list[Path]:
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


def _backup(db: Path, dest: Path) -> None:
    with sqlite3.connect(db) as src, sqlite3.connect(dest) as out:
        src.backup(out)
    os.chmod(dest, 0o600)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def setup(db: Path, tmp_path: Path) -> tuple[SQLiteStore, IssuedKey, Path]:
    store = SQLiteStore(db)
    key = KeyFactory(store).issue("agents:read")
    backup = tmp_path / "backup.db"
    _backup(db, backup)
    return store, key, backup


def _verifier(store: SQLiteStore) -> Verifier:
    return Verifier(store, rate_limits=None, cache_ttl=0, hasher=Hasher(pepper_from_env=False))


def test_a_deleted_database_is_unavailable_not_a_ghost_and_not_recreated(
    setup: tuple[SQLiteStore, IssuedKey, Path], db: Path
) -> None:
    store, key, backup = setup
    verifier = _verifier(store)
    assert verifier.verify(key.header).allowed  # this thread now holds a connection
    for path in _files(db):
        path.unlink()
    with pytest.raises(StoreUnavailable, match="gone"):
        store.get(key.key_id)
    decision = verifier.verify(key.header)
    assert decision.code == "auth_unavailable"
    assert decision.status == 503
    assert not db.exists()  # never silently recreated empty
    shutil.copy(backup, db)  # restored: served again, no restart
    assert verifier.verify(key.header).allowed
    store.close()


def test_a_replaced_database_is_reopened(
    setup: tuple[SQLiteStore, IssuedKey, Path], db: Path, tmp_path: Path
) -> None:
    store, key, _ = setup
    assert store.get(key.key_id) is not None
    other_path = tmp_path / "other.db"
    other = SQLiteStore(other_path)
    newcomer = KeyFactory(other).issue()
    other.close()
    for path in _files(db):
        path.unlink()
    shutil.copy(other_path, db)  # a different file (inode) at the same path
    assert store.get(key.key_id) is None
    assert store.get(newcomer.key_id) is not None
    store.close()


def test_a_corrupt_database_fails_closed_then_recovers_with_one_line_per_incident(
    db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(db)
    # Build, issue and verify from a thread that then ends: its connection closes, SQLite
    # checkpoints and removes the WAL, and the file alone holds the database (as after a
    # clean restart).
    with ThreadPoolExecutor(1) as setup:
        verifier = setup.submit(_verifier, store).result()
        key = setup.submit(lambda: KeyFactory(store).issue("agents:read")).result()
        assert setup.submit(verifier.verify, key.header).result().allowed
    gc.collect()
    assert not Path(f"{db}-wal").exists()
    backup = tmp_path / "backup.db"
    shutil.copy(db, backup)
    caplog.set_level(logging.DEBUG, logger="keyguard")
    # Corrupt it in place (same inode): every page after the header becomes junk.
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff" * (size - 100))
    with ThreadPoolExecutor(1) as worker:
        decisions = [worker.submit(verifier.verify, key.header).result() for _ in range(20)]
        assert {d.code for d in decisions} == {"auth_unavailable"}
        # Repaired in place (same file): the same worker recovers without a restart.
        with open(db, "r+b") as fh:
            fh.write(backup.read_bytes())
            fh.truncate()
        assert worker.submit(verifier.verify, key.header).result().allowed
    store_lines = [r for r in caplog.records if r.name == "keyguard.stores.sqlite"]
    assert [r.levelname for r in store_lines] == ["ERROR", "WARNING"]
    assert "recovered after 20 failed" in store_lines[-1].getMessage()
    assert all(r.exc_info is None for r in store_lines)
    store.close()
