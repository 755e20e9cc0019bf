"""Crash safety of the audit log: a mutation and its audit event commit together or not at all.

A worker loops create/rotate/update/revoke on a SQLite store and is SIGKILLed at random moments,
many times over; afterwards every key's committed history (its version: 1 at creation, +1 per
mutation) must equal its audit events one for one. The kills come from a small harness process
that forks the workers (a fork costs a millisecond where starting an interpreter costs a
hundred), so a few seconds give dozens of kills (before the fix, 40 kills lost several events
every time); the harness runs in a fresh interpreter so that forking never happens inside the
multi-threaded test process.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keyguard.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork() and SIGKILL")

KILLS = 40

HARNESS = textwrap.dedent(
    """
    import os, random, signal, sys, time

    from keyguard.core.hashing import Hasher
    from keyguard.management import KeyManager
    from keyguard.stores.sqlite import SQLiteStore

    path, kills = sys.argv[1], int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]))


    def work(ready: int) -> None:
        store = SQLiteStore(path, timeout=10)
        manager = KeyManager(store, hasher=Hasher(pepper_from_env=False))
        key = manager.create("k", ["agents:read"]).key_id
        os.write(ready, b"x")
        i = 0
        while True:
            i += 1
            manager.rotate(key, grace=60)
            if i % 3 == 0:
                manager.update(key, name=f"k{i}")
            if i % 5 == 0:
                manager.revoke(key, reason="loop")
                key = manager.create("k", ["agents:read"]).key_id


    completed = 0
    for _ in range(kills):
        ready, signal_ready = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready)
            try:
                work(signal_ready)
            finally:
                os._exit(1)
        os.close(signal_ready)
        got = os.read(ready, 1)
        os.close(ready)
        time.sleep(rng.uniform(0.0, 0.04))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if got and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            completed += 1
    print(completed)
    """
)

MUTATIONS = {"create", "update", "rotate", "revoke", "expire"}


class _Version:
    __slots__ = ("version",)

    def __init__(self, version: int) -> None:
        self.version = version


@pytest.mark.slow
def test_no_mutation_survives_a_sigkill_without_its_audit_event(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    SQLiteStore(db).close()
    seed = int.from_bytes(os.urandom(4), "big")
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, str(db), str(KILLS), str(seed)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == KILLS, f"not every worker was killed mid-loop (seed {seed})"

    # Every row, read straight from the file (the store's pages stop at 1,000 items).
    with SQLiteStore(db):
        pass  # a clean open: recovers the WAL the killed workers left
    conn = sqlite3.connect(db)
    try:
        versions = dict(conn.execute("SELECT key_id, version FROM keyguard_keys").fetchall())
        events = conn.execute("SELECT key_id, action FROM keyguard_audit").fetchall()
    finally:
        conn.close()
    records = {k: _Version(v) for k, v in versions.items()}
    per_key = collections.Counter(k for k, action in events if action in MUTATIONS)
    creates = collections.Counter(k for k, action in events if action == "create")
    lost = {k: (r.version, per_key[k]) for k, r in records.items() if r.version != per_key[k]}
    assert not lost, f"version vs audit events differ (seed {seed}): {lost}"
    assert set(per_key) == set(records), "audit events for keys that were never committed"
    assert all(creates[k] == 1 for k in records)
    # The kills landed inside the loop: every worker created a key, and mutated some.
    assert len(records) >= KILLS
    assert sum(r.version - 1 for r in records.values()) >= KILLS
