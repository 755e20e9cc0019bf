"""Rate-limiter memory per active key: the in-process limiter with 100,000 keys, and Redis.

Run: ``python benchmarks/bench_memory.py`` (about 30 s; ``--quick`` for a smoke run with
10,000 keys, ``--keys N``, ``--url`` for the Redis part, ``--json PATH``).

**In process.** ``MemoryRateLimiter(max_keys=200_000)`` (so nothing is evicted) with the
platform's windows (``DEFAULT_WINDOWS``: 20/10 s, 100/minute, 5,000/day), in two states:

- *1 hit*: every key checked once;
- *at the burst limit*: every key checked 20 times within the 10 s window (the limiter's
  clock is injected and advanced by hand, 0.1 s per round, so the run is fast and
  deterministic); one more check would be refused (verified).

Each state is built in a fresh child process and measured twice, each time in its own
process: with ``tracemalloc`` (Python allocations made by the limiter, after
``gc.collect()``, the key-id strings excluded: a server holds them anyway) and without it,
as the growth of the process's resident memory (``VmRSS`` in ``/proc/self/status``: what
the OS sees, allocator slack included). Bytes per key = growth / number of keys. The
largest allocation sites (tracemalloc) show where the bytes go.

**In Redis** (when reachable; ``--url``, default ``redis://127.0.0.1:6379/15``): the same
two states for a sample of buckets, through ``RedisRateLimiter`` (Redis's clock), then
``MEMORY USAGE <key> SAMPLES 0`` of the two keys holding each bucket (``…:log``, a sorted
set, and ``…:state``, a hash). Keys live under a fresh prefix and are deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import linecache
import os
import secrets
import statistics
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._results import environment
from keyguard.core.ratelimit import DEFAULT_WINDOWS, MemoryRateLimiter, format_windows

DEFAULT_URL = "redis://127.0.0.1:6379/15"
MAX_KEYS = 200_000
#: Checks per key in the "at the burst limit" state: the burst window's limit.
BURST = DEFAULT_WINDOWS[0].limit
EPOCH = 1_700_000_000.0
#: (label, checks per key)
STATES = (("1 hit per key", 1), (f"{BURST} hits per key (at the burst limit)", BURST))


def key_ids(n: int) -> list[str]:
    """``n`` distinct 12-character key ids, like the key format's."""
    ids: set[str] = set()
    while len(ids) < n:
        ids.add(secrets.token_urlsafe(9))
    return list(ids)


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# -- the child: one state, one way of measuring ------------------------------------------------
def child(keys: int, hits: int, mode: str) -> dict[str, Any]:
    ids = key_ids(keys)
    now = [EPOCH]
    limiter = MemoryRateLimiter(max_keys=MAX_KEYS, clock=lambda: now[0])
    hit = limiter.hit
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        base = tracemalloc.get_traced_memory()[0]
    else:
        base = rss_bytes()
    start = time.perf_counter()
    refused = 0
    for round_ in range(hits):
        now[0] = EPOCH + round_ * 0.1
        for key in ids:
            if not hit(key):
                refused += 1
    elapsed = time.perf_counter() - start
    gc.collect()
    result: dict[str, Any] = {"keys": keys, "hits": hits, "mode": mode, "refused": refused}
    if mode == "tracemalloc":
        result["bytes"] = tracemalloc.get_traced_memory()[0] - base
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        top = after.compare_to(before, "lineno")[:6]
        result["sites"] = [
            {
                "where": _where(s.traceback[0].filename, s.traceback[0].lineno),
                "bytes": s.size_diff,
                "blocks": s.count_diff,
            }
            for s in top
        ]
    else:
        result["bytes"] = rss_bytes() - base
    result["seconds"] = elapsed
    # Nothing evicted, and (at the burst limit) one more check would be refused.
    result["stored"] = len(limiter)
    sample = ids[: min(100, keys)]
    result["next_refused"] = sum(not limiter.peek(k) for k in sample) / len(sample)
    return result


def _where(filename: str, lineno: int) -> str:
    """``file.py:123  source line`` (the decision code is generated: no file, no source)."""
    if filename.startswith("<keyguard.ratelimit"):
        return f"WindowPlan.run (generated):{lineno}"
    source = linecache.getline(filename, lineno).strip()
    return f"{os.path.basename(filename)}:{lineno}  {source[:60]}"


def run_child(keys: int, hits: int, mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", str(keys), str(hits), mode],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark aborted: child failed:\n{proc.stderr}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- Redis ---------------------------------------------------------------------------------------
def redis_part(url: str, sample: int) -> list[dict[str, Any]] | str:
    """Bytes per bucket in Redis for each state, or why it was skipped."""
    import redis

    from keyguard.stores.redis_ratelimit import RedisRateLimiter

    admin = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=10.0)
    try:
        admin.ping()
    except (redis.RedisError, OSError) as exc:
        admin.close()
        return f"skipped: Redis is unreachable ({type(exc).__name__})"
    prefix = f"kgbench{os.getpid()}x{secrets.token_hex(4)}"
    limiter = RedisRateLimiter(url=url, prefix=prefix, socket_timeout=5.0, budget=10.0)
    rows = []
    try:
        version = admin.info("server").get("redis_version")
        for label, hits in STATES:
            buckets = key_ids(sample)
            refused = 0
            at_limit = 0
            for bucket in buckets:
                decision = None
                for _ in range(hits):
                    decision = limiter.hit(bucket)
                    refused += not decision
                # The burst window's remaining count after the last check.
                if decision is not None and decision.counts[0] == 0:
                    at_limit += 1
            log, state = [], []
            for bucket in buckets:
                log_key, state_key = limiter.keys(bucket)
                log.append(admin.memory_usage(log_key, samples=0) or 0)
                state.append(admin.memory_usage(state_key, samples=0) or 0)
            rows.append(
                {
                    "state": label,
                    "hits": hits,
                    "buckets": sample,
                    "refused": refused,
                    "at_burst_limit": at_limit,
                    "log_bytes": statistics.mean(log),
                    "state_bytes": statistics.mean(state),
                    "bytes": statistics.mean(a + b for a, b in zip(log, state, strict=True)),
                    "redis_version": version,
                    "log_encoding": _text(admin.object("encoding", limiter.keys(buckets[0])[0])),
                    "state_encoding": _text(admin.object("encoding", limiter.keys(buckets[0])[1])),
                }
            )
    finally:
        limiter.close()
        batch = list(admin.scan_iter(match=f"{prefix}:*", count=1_000))
        for i in range(0, len(batch), 500):
            admin.delete(*batch[i : i + 500])
        admin.close()
    return rows


# -- the parent ----------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 10,000 keys")
    parser.add_argument("--keys", type=int, help="active keys (default 100,000)")
    parser.add_argument(
        "--trace-keys",
        type=int,
        default=None,
        help="keys traced in the at-the-burst-limit state (default 25,000; quick 5,000)",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis URL (default {DEFAULT_URL})")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis part")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    keys = args.keys or (10_000 if args.quick else 100_000)
    if not 1 <= keys <= MAX_KEYS:
        parser.error(f"--keys must be between 1 and {MAX_KEYS:,}")
    sample = 100 if args.quick else 1_000
    if args.trace_keys is None:
        args.trace_keys = 5_000 if args.quick else 25_000
    if args.trace_keys < 1:
        parser.error("--trace-keys must be at least 1")

    env = environment()
    print("keyguard — rate-limiter memory per active key")
    print(
        f"Python {env['python']} ({env['implementation']}) · {env['platform']} · "
        f"{env['cpus']} CPUs · {env['date']}"
    )
    print(
        f"MemoryRateLimiter(max_keys={MAX_KEYS:,}), windows {format_windows(DEFAULT_WINDOWS)}, "
        f"{keys:,} keys; each figure from a fresh process\n"
    )

    results: dict[str, Any] = {"environment": env, "keys": keys, "memory": [], "redis": None}
    # Tracing makes every allocation slow (each check makes ~30 short-lived ones): the
    # at-the-burst-limit state (20 checks per key) is traced on fewer keys; the 1-hit state is
    # traced on both counts, showing that the per-key figure does not depend on the count.
    traced_burst = min(keys, args.trace_keys)
    jobs = {
        ("tracemalloc", 1, keys): None,
        ("tracemalloc", BURST, traced_burst): None,
        ("tracemalloc", 1, traced_burst): None,
        ("rss", 1, keys): None,
        ("rss", BURST, keys): None,
    }
    # Two children at a time (memory figures do not depend on the CPU being shared).
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {job: pool.submit(run_child, job[2], job[1], job[0]) for job in jobs}
        done = {job: f.result() for job, f in futures.items()}
    for (_mode, hits, n), r in done.items():
        if r["refused"] or r["stored"] != n:
            raise SystemExit(
                f"benchmark aborted: {r['refused']} checks refused, {r['stored']:,} of {n:,} "
                "keys stored"
            )
        if hits == BURST and r["next_refused"] != 1.0:
            raise SystemExit("benchmark aborted: the keys are not at their burst limit")

    width = max(len(label) for label, _ in STATES)
    print(
        f"{'state':<{width}}  {'tracemalloc':>11}  {'keys':>7}  {'RSS growth':>10}  "
        f"{'keys':>7}  total at {keys:,} keys"
    )
    print(
        f"{'':<{width}}  {'B per key':>11}  {'traced':>7}  {'B per key':>10}  "
        f"{'':>7}  (tracemalloc)"
    )
    print("-" * (width + 70))
    sites: list[tuple[str, int, list[dict[str, Any]]]] = []
    for label, hits in STATES:
        n_traced = keys if hits == 1 else traced_burst
        traced = done[("tracemalloc", hits, n_traced)]
        rss = done[("rss", hits, keys)]
        per_traced = traced["bytes"] / n_traced
        per_rss = rss["bytes"] / keys
        print(
            f"{label:<{width}}  {per_traced:11,.0f}  {n_traced:7,}  {per_rss:10,.0f}  "
            f"{keys:7,}  {per_traced * keys / 1e6:,.1f} MB"
        )
        sites.append((label, n_traced, traced["sites"]))
        results["memory"].append(
            {
                "state": label,
                "hits_per_key": hits,
                "tracemalloc_bytes_per_key": round(per_traced, 1),
                "tracemalloc_keys": n_traced,
                "rss_bytes_per_key": round(per_rss, 1),
                "rss_keys": keys,
                "sites": traced["sites"],
            }
        )
    check = done[("tracemalloc", 1, traced_burst)]
    if traced_burst != keys:
        print(
            f"{'(scaling check) 1 hit per key':<{width}}  {check['bytes'] / traced_burst:11,.0f}  "
            f"{traced_burst:7,}"
        )
    print(
        "\ntracemalloc: Python allocations still held after gc.collect() (key-id strings not "
        "counted). RSS growth: the same work in a process without tracing, on all the keys "
        "(allocator slack included; it moves by a few hundred kB from run to run)."
    )
    for label, n_traced, top in sites:
        print(f"\nlargest allocation sites, {label} (bytes per key):")
        for site in top:
            per_key, blocks = site["bytes"] / n_traced, site["blocks"] / n_traced
            print(f"  {per_key:7,.0f}  ({blocks:5.2f} blocks)  {site['where']}")

    if not args.no_redis:
        print(
            f"\nIn Redis: MEMORY USAGE (SAMPLES 0) of each bucket's two keys, {sample:,} buckets\n"
        )
        rows = redis_part(args.url, sample)
        if isinstance(rows, str):
            print(f"Redis part {rows}")
        else:
            results["redis"] = rows
            print(
                f"{'state':<{width}}  {'log (zset)':>10}  {'state (hash)':>12}  "
                f"{'B per key':>9}  x{keys:,} keys"
            )
            print("-" * (width + 60))
            for r in rows:
                if r["refused"] or (r["hits"] == BURST and r["at_burst_limit"] != r["buckets"]):
                    raise SystemExit(f"benchmark aborted: Redis, {r['state']}: not as expected")
                print(
                    f"{r['state']:<{width}}  {r['log_bytes']:10,.0f}  {r['state_bytes']:12,.0f}  "
                    f"{r['bytes']:9,.0f}  {r['bytes'] * keys / 1e6:,.1f} MB"
                )
            print(
                f"\nRedis {rows[0]['redis_version']}; encodings: log {rows[-1]['log_encoding']}, "
                f"state {rows[-1]['state_encoding']}; MEMORY USAGE counts the key, the value and "
                "their allocations, not the TTL's entry in the expires dict."
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
