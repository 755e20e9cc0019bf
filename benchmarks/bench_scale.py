"""keyguard with many active keys: the hit path at 100,000 keys vs 10, memory per cached key,
the default cache sizes, and the cache hit ratio under a Zipf-like key popularity.

Run: ``python benchmarks/bench_scale.py`` (about a minute, most of it generating 100,000 keys;
``--quick`` for a smoke run with 5,000 keys, ``--keys N``, ``--json PATH``).

1. **Hit path at scale.** ``KeyGuardMiddleware`` with the full default path (auth + scope +
   the platform's three windows in a ``MemoryRateLimiter``, headers on; the admitting clock of
   the other benchmarks) called directly as the ASGI app around a trivial ASGI app, requests
   going round-robin over N keys' prebuilt scopes, against the same with 10 keys; each beside
   the trivial app alone cycling over the same scopes (the baseline: what walking N scopes
   costs without keyguard). The verifier's cache and the limiter are sized to hold every key
   (``cache_size`` and ``max_keys`` = 2N), every key is verified once before timing, and the
   run fails if the store is read while timed: every timed request is a cache hit. The
   hand-written floor (``_floor.py``: a digest dict and one GCRA time per key) at 10 and at N
   keys beside them: what cold memory costs a guard that touches a few objects per request,
   so keyguard's ratio can be read against it.
2. **Memory per cached key**: ``tracemalloc`` around verifying M fresh keys (cache entry,
   fast-path index entry, decision and principal; the header strings excluded), without and
   with the limiter (its per-key state included), divided by M.
3. **Default sizes**: the ``Verifier`` and ``MemoryRateLimiter`` defaults, read from their
   signatures.
4. **Hit ratio under Zipf**: a stream of requests whose key is drawn with probability ∝
   1/rank (Zipf, s = 1, seeded) over the N keys, at a simulated 5,000 requests/s (the
   verifier's clocks are injected and advance 0.2 ms per request), through a verifier with
   the **default** cache (10,000 entries, 1 s TTL), then with the TTL raised to an hour (what
   the size alone allows). Hit ratio = 1 - store reads / requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import itertools
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _labels as L
from benchmarks._floor import Floor, FloorGuard
from benchmarks._inprocess import (
    EPOCH,
    PATH,
    SCOPE,
    BenchmarkError,
    CountingStore,
    admitting_clock,
)
from benchmarks._results import Row, describe, environment, group_json, write_json
from benchmarks.bench_asgi import make_scope, receive, send
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier

ZIPF_RATE = 5_000.0
FEW = 10


class ManyKeys:
    def __init__(self, n: int) -> None:
        self.store = CountingStore()
        self.hasher = Hasher(pepper_from_env=False)
        fmt = KeyFormat()
        self.headers: list[str] = []
        for _ in range(n):
            g = fmt.generate()
            self.store.create(
                KeyRecord(
                    key_id=g.key_id,
                    name="bench",
                    digest=self.hasher.digest(g.plaintext),
                    scopes=frozenset({SCOPE}),
                )
            )
            self.headers.append(f"UserKey {g.plaintext}")

    def verifier(self, **options: Any) -> Verifier:
        settings: dict[str, Any] = {
            "policy": RoutePolicy({f"GET {PATH}": SCOPE}),
            "hasher": self.hasher,
            "cache_ttl": 3600,
            "negative_cache_ttl": 3600,
            "touch_interval": 1e9,
        }
        settings.update(options)
        return Verifier(self.store, **settings)


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


class Bad:
    def __init__(self) -> None:
        self.count = 0

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            self.count += 1


def hit_path(keys: ManyKeys, number: int, repeat: int) -> list[Row]:
    n = len(keys.headers)
    loop = asyncio.new_event_loop()
    few_scopes = [make_scope(h) for h in keys.headers[:FEW]]
    many_scopes = [make_scope(h) for h in keys.headers]

    def guard(count: int) -> KeyGuardMiddleware:
        limiter = MemoryRateLimiter(max_keys=2 * count, clock=admitting_clock())
        verifier = keys.verifier(cache_size=2 * count, limiter=limiter)
        return KeyGuardMiddleware(ok_app, verifier=verifier)

    def floor(count: int) -> FloorGuard:
        table = dict.fromkeys(keys.headers[:count], frozenset({SCOPE}))
        return FloorGuard(ok_app, floor=Floor(table, admitting_clock()))

    bad = Bad()
    apps: dict[str, tuple[Callable[..., Any], list[Any]]] = {
        L.SC_BARE_FEW: (ok_app, few_scopes),
        L.SC_KG_FEW: (guard(FEW), few_scopes),
        L.SC_BARE_MANY: (ok_app, many_scopes),
        L.SC_KG_MANY: (guard(n), many_scopes),
        L.SC_FLOOR_FEW: (floor(FEW), few_scopes),
        L.SC_FLOOR_MANY: (floor(n), many_scopes),
    }

    async def warm() -> None:
        for app, scopes in apps.values():
            for scope in scopes:
                await app(scope.copy(), receive, bad.send)

    loop.run_until_complete(warm())
    if bad.count:
        raise BenchmarkError(f"{bad.count} warm-up requests were not answered 200")
    cycles = {label: itertools.cycle(scopes) for label, (_, scopes) in apps.items()}

    async def serve(app: Callable[..., Any], scopes: Any) -> int:
        start = time.perf_counter_ns()
        for scope in itertools.islice(scopes, number):
            await app(scope.copy(), receive, send)
        return time.perf_counter_ns() - start

    rows = {
        L.SC_BARE_FEW: Row(L.SC_BARE_FEW),
        L.SC_KG_FEW: Row(L.SC_KG_FEW, baseline=L.SC_BARE_FEW),
        L.SC_BARE_MANY: Row(L.SC_BARE_MANY),
        L.SC_KG_MANY: Row(L.SC_KG_MANY, baseline=L.SC_BARE_MANY),
        L.SC_FLOOR_FEW: Row(L.SC_FLOOR_FEW, baseline=L.SC_BARE_FEW),
        L.SC_FLOOR_MANY: Row(L.SC_FLOOR_MANY, baseline=L.SC_BARE_MANY),
    }
    labels = list(rows)
    gc.collect()
    gc.freeze()  # the keys and scopes are the server's long-lived state
    reads = keys.store.reads
    for r in range(repeat):
        for i in range(len(labels)):
            label = labels[(i + r) % len(labels)]
            gc.collect()
            ns = loop.run_until_complete(serve(apps[label][0], cycles[label]))
            rows[label].runs.append(ns / number / 1_000)
    loop.run_until_complete(warm())
    gc.unfreeze()
    loop.close()
    if bad.count:
        raise BenchmarkError(f"{bad.count} requests were not answered 200 after timing")
    if keys.store.reads != reads:
        raise BenchmarkError("keyguard read the store while timed: not cache hits")
    return list(rows.values())


def memory_per_key(keys: ManyKeys, m: int) -> dict[str, float]:
    """Bytes held per key after verifying ``m`` keys once, without and with the limiter."""
    headers = keys.headers[:m]
    out: dict[str, float] = {}
    for name, options in (
        ("cache", {"rate_limits": None}),
        ("cache_and_limiter", {"limiter": MemoryRateLimiter(max_keys=2 * m)}),
    ):
        verifier = keys.verifier(cache_size=2 * m, **options)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for h in headers:
            if not verifier.verify(h, "GET", PATH).allowed:
                raise BenchmarkError("a key was refused while filling the cache")
        gc.collect()
        out[name] = (tracemalloc.get_traced_memory()[0] - base) / m
        tracemalloc.stop()
        del verifier
    return out


def default_sizes() -> dict[str, Any]:
    verifier = inspect.signature(Verifier.__init__).parameters
    limiter = inspect.signature(MemoryRateLimiter.__init__).parameters
    return {
        "cache_size": verifier["cache_size"].default,
        "cache_ttl_s": verifier["cache_ttl"].default,
        "negative_cache_size": verifier["negative_cache_size"].default,
        "negative_cache_ttl_s": verifier["negative_cache_ttl"].default,
        "limiter_max_keys": limiter["max_keys"].default,
    }


def zipf_hit_ratio(keys: ManyKeys, requests: int) -> dict[str, Any]:
    n = len(keys.headers)
    rng = random.Random(13)
    cum = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(n)))
    stream = rng.choices(range(n), cum_weights=cum, k=requests)
    distinct = len(set(stream))
    step = 1.0 / ZIPF_RATE
    out: dict[str, Any] = {"requests": requests, "distinct_keys": distinct, "rate": ZIPF_RATE}
    for name, options in (("default", {}), ("ttl_1h", {"cache_ttl": 3600.0})):
        now = [0.0]

        def mono(now: list[float] = now) -> float:
            return now[0]

        def wall(now: list[float] = now) -> float:
            return EPOCH + now[0]

        verifier = Verifier(
            keys.store,
            hasher=keys.hasher,
            rate_limits=None,
            brute_force=None,
            clock=wall,
            monotonic=mono,
            **options,
        )
        headers = keys.headers
        reads = keys.store.reads
        for index in stream:
            now[0] += step
            if not verifier.authenticate(headers[index]).allowed:
                raise BenchmarkError("a key was refused in the Zipf stream")
        misses = keys.store.reads - reads
        out[name] = {"hit_ratio": round(1 - misses / requests, 4), "store_reads": misses}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 keys")
    parser.add_argument("--keys", type=int, help="active keys (default 100,000)")
    parser.add_argument("--number", type=int, help="requests per timed run (default 2,000)")
    parser.add_argument("--repeat", type=int, help="timed runs per row (default 25)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    n = args.keys or (5_000 if args.quick else 100_000)
    number = args.number or (200 if args.quick else 2_000)
    repeat = args.repeat or (3 if args.quick else 25)
    if n <= FEW or number < 1 or repeat < 1:
        parser.error(f"--keys must be above {FEW}; --number and --repeat at least 1")
    traced = min(n, 2_000 if args.quick else 20_000)
    zipf_requests = 20_000 if args.quick else 300_000

    env = environment()
    print("keyguard — many active keys: hit path, memory per cached key, hit ratio (Zipf)")
    print(describe(env))
    started = time.perf_counter()
    keys = ManyKeys(n)
    print(f"{n:,} keys generated and stored in {time.perf_counter() - started:.1f} s\n")

    rows = hit_path(keys, number, repeat)
    by_label = {r.label: r for r in rows}
    print(f"1. Hit path, µs per request ({number:,} requests per run x {repeat} runs)\n")
    width = max(len(r.label) for r in rows) + 2
    for r in rows:
        text = f"  {r.label:<{width}} min {r.min:7.2f}  median {r.median:7.2f}"
        if r.baseline:
            b = by_label[r.baseline]
            text += f"   adds {r.min - b.min:+.2f} / {r.median - b.median:+.2f}"
        print(text)
    few = by_label[L.SC_KG_FEW].min - by_label[L.SC_BARE_FEW].min
    many = by_label[L.SC_KG_MANY].min - by_label[L.SC_BARE_MANY].min
    print(f"  keyguard's cost at {n:,} keys / at {FEW} keys: x{many / few:.2f} (minimums)")
    floor_few = by_label[L.SC_FLOOR_FEW].min - by_label[L.SC_BARE_FEW].min
    floor_many = by_label[L.SC_FLOOR_MANY].min - by_label[L.SC_BARE_MANY].min
    print(
        f"  the floor's cost at {n:,} keys / at {FEW} keys: x{floor_many / floor_few:.2f} "
        "(what a guard keeping ~2 objects per key pays for cold memory)"
    )

    memory = memory_per_key(keys, traced)
    sizes = default_sizes()
    print(f"\n2. Memory per cached key (tracemalloc, {traced:,} keys verified once)\n")
    print(f"  verifier cache (entry, fast-path index, decision): {memory['cache']:,.0f} B")
    print(
        f"  cache + MemoryRateLimiter state (3 windows):        "
        f"{memory['cache_and_limiter']:,.0f} B"
    )
    print("\n3. Default sizes\n")
    print(
        f"  Verifier: cache_size={sizes['cache_size']:,} (TTL {sizes['cache_ttl_s']:g} s), "
        f"negative_cache_size={sizes['negative_cache_size']:,} (TTL "
        f"{sizes['negative_cache_ttl_s']:g} s); MemoryRateLimiter: "
        f"max_keys={sizes['limiter_max_keys']:,}"
    )
    print(
        f"  at the defaults the verifier cache holds about "
        f"{sizes['cache_size'] * memory['cache'] / 1e6:,.1f} MB when full"
    )

    zipf = zipf_hit_ratio(keys, zipf_requests)
    print(
        f"\n4. Cache hit ratio, Zipf (s=1) over {n:,} keys, {zipf_requests:,} requests at a "
        f"simulated {ZIPF_RATE:,.0f} req/s ({zipf['distinct_keys']:,} distinct keys seen)\n"
    )
    print(
        f"  default cache (size {sizes['cache_size']:,}, TTL {sizes['cache_ttl_s']:g} s): "
        f"hit ratio {zipf['default']['hit_ratio']:.1%} "
        f"({zipf['default']['store_reads']:,} store reads)"
    )
    print(
        f"  TTL raised to 1 h (size only):    hit ratio {zipf['ttl_1h']['hit_ratio']:.1%} "
        f"({zipf['ttl_1h']['store_reads']:,} store reads)"
    )
    data = group_json(
        "scale",
        "many active keys",
        rows,
        options={"number": number, "repeat": repeat},
        facts={
            "keys": n,
            "few_keys": FEW,
            "bytes_per_cached_key": round(memory["cache"], 1),
            "bytes_per_key_cache_and_limiter": round(memory["cache_and_limiter"], 1),
            "traced_keys": traced,
            "default_sizes": sizes,
            "zipf": zipf,
        },
        env=env,
    )
    if args.json:
        write_json(args.json, data)
        print(f"\nwrote {args.json}")
    from benchmarks.goals import print_goals

    print_goals({"scale": data})


if __name__ == "__main__":
    main()
