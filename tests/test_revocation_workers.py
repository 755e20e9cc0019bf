"""A revocation reaches every worker process: four processes each hold a warm cache of a key (a
cache TTL of a minute, so only a pushed invalidation can explain a quick refusal), the key is
revoked through the KeyManager, and each worker reports when it first refused the key.

On Redis the invalidation is pushed (pub/sub): the measured maximum latency is printed (the
issue's goal is 100 ms; ``benchmarks/bench_revocation.py`` reports it too) and asserted well
under the cache TTL. On SQLite there is no push: the bound is the cache freshness deadline.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from keyguard.core.hashing import Hasher
from keyguard.core.verifier import Verifier
from keyguard.management import KeyManager
from keyguard.stores import from_url
from tests.conftest import REDIS_URL, _redis_or_skip

WORKERS = 4
pytestmark = pytest.mark.slow


def _worker(url: str, header: str, cache_ttl: float, conn: Connection) -> None:
    store = from_url(url)
    verifier = Verifier(
        store, rate_limits=None, cache_ttl=cache_ttl, hasher=Hasher(pepper_from_env=False)
    )
    listener = getattr(store, "invalidation_listener", None)
    if listener is not None:
        listener.wait_subscribed(10)
    assert verifier.verify(header).allowed  # warm: cached, and on the fast path
    conn.send("ready")
    conn.recv()  # go
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        decision = verifier.verify(header)
        if not decision.allowed:
            conn.send(("refused", time.time(), str(decision.code)))
            break
        time.sleep(0.0005)
    else:
        conn.send(("never", time.time(), ""))
    store.close()


def _revoke_and_measure(url: str, cache_ttl: float) -> list[float]:
    with KeyManager(url, hasher=Hasher(pepper_from_env=False)) as keys:
        created = keys.create("shared", ["agents:read"])
        ctx = multiprocessing.get_context("spawn")
        pipes, procs = [], []
        for _ in range(WORKERS):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(url, f"UserKey {created.plaintext}", cache_ttl, child)
            )
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        try:
            for pipe in pipes:
                assert pipe.poll(60), "a worker did not start"
                assert pipe.recv() == "ready"
            for pipe in pipes:
                pipe.send("go")
            time.sleep(0.05)
            revoked_at = time.time()
            keys.revoke(created.key_id, reason="test")
            latencies = []
            for pipe in pipes:
                assert pipe.poll(60)
                outcome, at, code = pipe.recv()
                assert outcome == "refused", "a worker kept accepting a revoked key"
                assert code == "revoked_api_key"
                latencies.append(at - revoked_at)
        finally:
            for proc in procs:
                proc.join(10)
                if proc.is_alive():  # pragma: no cover
                    proc.kill()
    return latencies


@pytest.fixture
def redis_store_url() -> Iterator[str]:
    _redis_or_skip()
    import redis

    prefix = "kgrev" + uuid.uuid4().hex[:8]
    yield f"{REDIS_URL}?prefix={prefix}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for pattern in (f"{prefix}:*", "{" + prefix + "}:*"):
            keys = list(client.scan_iter(match=pattern))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


def test_every_worker_refuses_a_revoked_key_at_once_on_redis(redis_store_url: str) -> None:
    latencies = _revoke_and_measure(redis_store_url, cache_ttl=60.0)
    print(
        f"\nRedis: revocation seen by {WORKERS} workers; max latency {max(latencies) * 1e3:.1f} ms"
    )
    # Pushed, not waited out: far below the 60 s cache TTL (timing on a shared machine is
    # noisy, so the assertion is loose; the figure above is the measurement).
    assert max(latencies) < 5.0


def test_every_worker_refuses_a_revoked_key_within_the_deadline_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    ttl = 0.5
    latencies = _revoke_and_measure(url, cache_ttl=ttl)
    print(
        f"\nSQLite: revocation seen by {WORKERS} workers; max latency {max(latencies) * 1e3:.1f} ms"
    )
    assert max(latencies) < ttl + 5.0
