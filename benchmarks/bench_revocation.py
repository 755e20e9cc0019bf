"""How fast a revocation reaches every worker process on the Redis key store (issue 9).

Run: ``python benchmarks/bench_revocation.py`` (about 20 s; ``--quick`` for 2 revocations,
``--revocations N``, ``--url``, ``--json PATH``). Needs Redis: without one it says so and
exits 0. Everything lives under a fresh key prefix, deleted at the end.

Four worker processes (``spawn``) each open the store and a :class:`Verifier` with a cache TTL
of a minute — so only the pushed invalidation (pub/sub) can explain a quick refusal — and wait
until subscribed. For each revocation: a fresh key is created, every worker verifies it once
(cached, on the fast path) and reports ready, then spins verifying it every 0.5 ms; the parent
revokes it through the ``KeyManager`` and each worker reports the wall-clock time of its first
refusal. Latency = refusal time - the time just before ``revoke()`` was called. Rows: the
slowest worker per revocation, and every worker's latency, in ms. Goal (issue 9): the slowest
≤ 100 ms. ``tests/test_revocation_workers.py`` runs one such revocation as a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import contextlib

from benchmarks import _labels as L
from benchmarks._results import Row, describe, environment, group_json, write_json

DEFAULT_URL = "redis://127.0.0.1:6379/15"
WORKERS = 4
TITLE = "revocation latency across 4 worker processes (Redis key store)"


def _worker(url: str, conn: Connection) -> None:
    from keyguard.core.hashing import Hasher
    from keyguard.core.verifier import Verifier
    from keyguard.stores import from_url

    store = from_url(url)
    verifier = Verifier(
        store, rate_limits=None, cache_ttl=60.0, hasher=Hasher(pepper_from_env=False)
    )
    listener = getattr(store, "invalidation_listener", None)
    if listener is not None:
        listener.wait_subscribed(10)
    try:
        while True:
            header = conn.recv()
            if header is None:
                return
            ok = verifier.verify(header).allowed  # warm: cached, on the fast path
            conn.send("ready" if ok else "refused before the revocation")
            conn.recv()  # go
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                decision = verifier.verify(header)
                if not decision.allowed:
                    conn.send(("refused", time.time(), str(decision.code)))
                    break
                time.sleep(0.0005)
            else:
                conn.send(("never", time.time(), ""))
    finally:
        store.close()


def measure(url: str, revocations: int) -> list[list[float]]:
    """Latencies (seconds) of every worker, per revocation."""
    from keyguard.core.hashing import Hasher
    from keyguard.management import KeyManager

    ctx = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    procs: list[Any] = []
    for _ in range(WORKERS):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(url, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    results: list[list[float]] = []
    try:
        with KeyManager(url, hasher=Hasher(pepper_from_env=False)) as keys:
            for n in range(revocations):
                created = keys.create(f"revocation-{n}", ["agents:read"])
                for pipe in pipes:
                    pipe.send(f"UserKey {created.plaintext}")
                for pipe in pipes:
                    if not pipe.poll(60):
                        raise SystemExit("benchmark aborted: a worker did not start")
                    answer = pipe.recv()
                    if answer != "ready":
                        raise SystemExit(f"benchmark aborted: a worker answered {answer!r}")
                for pipe in pipes:
                    pipe.send("go")
                time.sleep(0.05)
                revoked_at = time.time()
                keys.revoke(created.key_id, reason="benchmark")
                latencies = []
                for pipe in pipes:
                    if not pipe.poll(30):
                        raise SystemExit("benchmark aborted: a worker never answered")
                    outcome, at, code = pipe.recv()
                    if outcome != "refused" or code != "revoked_api_key":
                        raise SystemExit(
                            f"benchmark aborted: a worker kept accepting a revoked key ({code})"
                        )
                    latencies.append(at - revoked_at)
                results.append(latencies)
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 revocations")
    parser.add_argument("--revocations", type=int, help="revocations measured (default 10)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis URL (default {DEFAULT_URL})")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    count = args.revocations or (2 if args.quick else 10)
    if count < 1:
        parser.error("--revocations must be at least 1")

    import redis

    env = environment()
    print(f"keyguard — {TITLE}")
    print(describe(env))
    admin = redis.Redis.from_url(args.url, socket_connect_timeout=1.0, socket_timeout=10.0)
    try:
        admin.ping()
    except (redis.RedisError, OSError) as exc:
        print(f"bench_revocation: skipped: Redis is unreachable ({type(exc).__name__})")
        if args.json:
            write_json(args.json, group_json("revocation", TITLE, [], facts={"skipped": str(exc)}))
        return
    prefix = f"kgrevbench{os.getpid()}x{secrets.token_hex(4)}"
    sep = "&" if "?" in args.url else "?"
    try:
        results = measure(f"{args.url}{sep}prefix={prefix}", count)
    finally:
        for pattern in (f"{prefix}:*", "{" + prefix + "}:*"):
            keys = list(admin.scan_iter(match=pattern, count=1_000))
            if keys:
                admin.delete(*keys)
        admin.close()
    slowest = Row(L.RV_MAX, [max(r) * 1e3 for r in results], unit="ms")
    every = Row(L.RV_ALL, [x * 1e3 for r in results for x in r], unit="ms")
    print(f"\n{count} revocations, {WORKERS} workers each, latency in ms\n")
    for row in (slowest, every):
        print(
            f"  {row.label:<44} median {row.median:7.1f}  max {max(row.runs):7.1f}  "
            f"min {row.min:7.1f}"
        )
    data = group_json(
        "revocation",
        TITLE,
        [slowest, every],
        options={"revocations": count, "workers": WORKERS},
        facts={"latencies_ms": [[round(x * 1e3, 2) for x in r] for r in results]},
        env=env,
    )
    if args.json:
        write_json(args.json, data)
        print(f"\nwrote {args.json}")
    from benchmarks.goals import print_goals

    print_goals({"revocation": data})


if __name__ == "__main__":
    main()
