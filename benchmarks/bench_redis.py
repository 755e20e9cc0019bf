"""Rate limiting in Redis: round trips per check, cost against a PING, and through ASGI.

Run: ``python benchmarks/bench_redis.py`` (under a minute; ``--quick`` for a smoke run,
``--url`` for another server, ``--json PATH`` to keep the figures). Needs a Redis server:
without one it prints why and exits 0. Everything it writes lives under a fresh key prefix
(``kgbench<pid>x<random>``) in the URL's database (default 15) and is deleted at the end.

1. **Round trips per check**, counted by Redis itself, for ``RedisRateLimiter.hit`` (sync),
   ``ahit`` (async) and a request through ``KeyGuardMiddleware`` with a Redis limiter (cache
   hit): the commands Redis received from this script's limiter connections (``MONITOR``;
   each is one request/reply exchange, nothing is pipelined), and the ``INFO commandstats``
   deltas: ``EVALSHA`` calls, and the sum of all calls, which also counts every
   ``redis.call`` the script makes inside that one ``EVALSHA``.
2. **Cost of a check against a PING** in the same run, same client, same connection:
   ``client.ping()`` vs ``limiter.hit(...)``, ``await async_client.ping()`` vs
   ``await limiter.ahit(...)``; the PING is the price of any round trip, so ``hit - PING``
   is what the script and its arguments add.
3. **The same through the ASGI middleware**: bare Starlette, keyguard without a limit, with
   the in-process limiter, with ``RedisRateLimiter.from_url(...)``, and an async PING,
   timed round-robin in one run.

Every check uses the platform's windows (``DEFAULT_WINDOWS``: 20/10 s, 100/minute,
5,000/day) and Redis's own clock, and must be admitted: checks go round-robin over many
buckets (keys), so none comes near its limits; the run aborts if one is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis
import redis.asyncio
from starlette.middleware import Middleware

from benchmarks import _labels as L
from benchmarks._inprocess import (
    PATH,
    SCOPE,
    BenchmarkError,
    CountingStore,
)
from benchmarks._results import Row as ResultRow
from benchmarks._results import describe, environment, group_json, write_json
from benchmarks.bench_asgi import make_scope, receive, starlette_app
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.stores.redis_ratelimit import RedisRateLimiter
from keyguard.stores.redis_store import RedisStore

Message = MutableMapping[str, Any]
DEFAULT_URL = "redis://127.0.0.1:6379/15"


# -- setup ------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis URL (default {DEFAULT_URL})")
    parser.add_argument("--quick", action="store_true", help="smoke run (a few seconds)")
    parser.add_argument("--number", type=int, help="calls per timed run (default 1,000)")
    parser.add_argument("--repeat", type=int, help="timed runs per row (default 20)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.number is None:
        args.number = 100 if args.quick else 1_000
    if args.repeat is None:
        args.repeat = 3 if args.quick else 20
    if args.number < 1 or args.repeat < 1:
        parser.error("--number and --repeat must be at least 1")
    #: Buckets (and API keys) the checks go round-robin over. With the default windows a
    #: bucket takes 100 checks a minute; 10,000 buckets keep each one far below that.
    args.buckets = 1_000 if args.quick else 10_000
    #: Checks (or requests) whose round trips are counted.
    args.count = 200 if args.quick else 1_000
    return args


def with_query(url: str, **params: str) -> str:
    """``url`` with query parameters added (the limiter reads ``prefix``, redis-py the rest)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))


def safe_url(url: str) -> str:
    """The URL without any password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def connect(url: str) -> redis.Redis | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=10.0)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        print(
            f"bench_redis: skipped: Redis at {safe_url(url)} is unreachable ({type(exc).__name__})"
        )
        client.close()
        return None
    return client


def cleanup(admin: redis.Redis, prefix: str) -> int:
    """Delete everything written under ``prefix`` (the limiter's ``prefix:…`` keys, the key
    store's ``prefix…:…`` and ``{prefix…}:…`` keys)."""
    deleted = 0
    batch: list[bytes] = []
    for pattern in (f"{prefix}*", "{" + prefix + "*"):
        for key in admin.scan_iter(match=pattern, count=1_000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += admin.delete(*batch)
                batch.clear()
    if batch:
        deleted += admin.delete(*batch)
    return deleted


# -- counting round trips ---------------------------------------------------------------------
@dataclass
class Count:
    """What Redis saw during ``n`` checks."""

    label: str
    n: int
    #: Commands received from this script's limiter connections (MONITOR), or None.
    round_trips: int | None
    #: INFO commandstats deltas: EVALSHA/EVAL calls, and every call but INFO.
    evalsha: int
    commands: int
    #: Commands run inside those scripts (MONITOR's "lua" lines after our EVALSHAs).
    in_scripts: int | None
    #: Commands from other connections during the count (they inflate ``commands``).
    others: int | None
    by_command: dict[str, int] = field(default_factory=dict)

    def per(self, x: int | None) -> str:
        return "n/a" if x is None else f"{x / self.n:.2f}"


def _commandstats(admin: redis.Redis) -> dict[str, tuple[int, int]]:
    """Per command: (calls, µs spent executing them), as Redis counts them."""
    return {
        name: (int(s["calls"]), int(s["usec"])) for name, s in admin.info("commandstats").items()
    }


class Monitor:
    """``MONITOR`` on its own connection, read by a thread until a sentinel ``ECHO``."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=30.0)
        self.sentinel = f"kgbench-stop-{secrets.token_hex(8)}"
        self.lines: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            with self.client.monitor() as monitor:
                self._ready.set()
                for line in monitor.listen():
                    if line["command"] == f"ECHO {self.sentinel}":
                        return
                    self.lines.append(line)
        except BaseException as exc:  # reported by stop(); the count then says n/a
            self.error = exc
            self._ready.set()

    def start(self) -> bool:
        self._thread.start()
        self._ready.wait(10)
        time.sleep(0.05)  # MONITOR is acknowledged before the stream starts
        return self.error is None

    def stop(self, admin: redis.Redis) -> list[dict[str, Any]] | None:
        if self.error is None:
            admin.echo(self.sentinel)
        self._thread.join(30)
        self.client.close()
        if self.error is not None or self._thread.is_alive():
            return None
        return self.lines


#: Counts retried when another client used Redis meanwhile (its commands would be in INFO).
ATTEMPTS = 3


def count_round_trips(
    label: str, url: str, admin: redis.Redis, name: str, n: int, work: Callable[[], None]
) -> Count:
    """:func:`count_once`, again (up to :data:`ATTEMPTS`) while other clients interfere."""
    for _ in range(ATTEMPTS):
        count = count_once(label, url, admin, name, n, work)
        if not count.others:
            break
    return count


def count_once(
    label: str, url: str, admin: redis.Redis, name: str, n: int, work: Callable[[], None]
) -> Count:
    """Run ``work`` (``n`` checks) with MONITOR on, between two INFO commandstats."""
    monitor = Monitor(url)
    monitoring = monitor.start()
    before = _commandstats(admin)
    work()
    after = _commandstats(admin)
    lines = monitor.stop(admin) if monitoring else None
    zero = (0, 0)
    delta = {
        k: (calls - before.get(k, zero)[0], usec - before.get(k, zero)[1])
        for k, (calls, usec) in after.items()
        if calls != before.get(k, zero)[0]
    }
    scripts = [delta.get(k, zero) for k in ("cmdstat_evalsha", "cmdstat_eval")]
    evalsha = sum(calls for calls, _ in scripts)
    commands = sum(calls for k, (calls, _) in delta.items() if k != "cmdstat_info")
    by_command = {k: calls for k, (calls, _) in delta.items()}
    count = Count(label, n, None, evalsha, commands, None, None, by_command)
    if lines is None:
        return count
    ours = {c["addr"] for c in admin.client_list() if c.get("name") == name and c.get("addr")}
    count.round_trips = count.in_scripts = count.others = 0
    owner = None
    for line in lines:
        if line["client_type"] == "lua":
            if owner == "ours":
                count.in_scripts += 1
            elif owner == "other":
                count.others += 1
            continue
        addr = f"{line['client_address']}:{line['client_port']}"
        if addr in ours:
            owner = "ours"
            count.round_trips += 1
        elif line["command"].startswith("INFO"):
            owner = "admin"  # the snapshots themselves (or another client's INFO)
        else:
            owner = "other"
            count.others += 1
    return count


def print_counts(counts: Sequence[Count]) -> None:
    width = max(len(c.label) for c in counts)
    print(
        f"{'':<{width}}  {'round trips':>11}  {'EVALSHA':>8}  {'commands':>10}  "
        f"{'in script':>9}  {'other':>6}"
    )
    print(
        f"{'per check':<{width}}  {'(MONITOR)':>11}  {'(INFO)':>8}  {'(INFO) (1)':>10}  "
        f"{'(MONITOR)':>9}  {'(2)':>6}"
    )
    print("-" * (width + 57))
    for c in counts:
        others = "n/a" if c.others is None else str(c.others)
        print(
            f"{c.label:<{width}}  {c.per(c.round_trips):>11}  {c.per(c.evalsha):>8}  "
            f"{c.per(c.commands):>10}  {c.per(c.in_scripts):>9}  {others:>6}"
        )
    print()
    print(
        "round trips: commands Redis received from this script's limiter connections "
        "(MONITOR, filtered by client name), per check; EVALSHA: INFO commandstats delta."
    )
    print(
        "(1) sum of every INFO commandstats 'calls' delta except INFO's: Redis counts each "
        "redis.call() made inside a script as a call too, so this is 1 EVALSHA + the script's "
        "own commands, all in ONE round trip."
    )
    print(
        "(2) commands from other connections while counting (another client using this "
        f"Redis; the count is retried up to {ATTEMPTS} times to avoid them): when not 0, the "
        "INFO columns include them and the MONITOR columns do not."
    )
    if any(c.round_trips is None for c in counts):
        print("MONITOR unavailable on this server: round trips not counted (n/a).")


# -- timing -------------------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    #: ``timed(number)`` -> nanoseconds for ``number`` calls.
    timed: Callable[[int], int]
    baseline: str | None = None
    runs_us: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.runs_us)

    @property
    def median(self) -> float:
        return statistics.median(self.runs_us)


#: A timed run that hits a Redis timeout (another client paused or flooded the shared server)
#: is thrown away and run again, at most this many times in a row.
RETRIES = 3


def time_rows(rows: Sequence[Row], number: int, repeat: int) -> None:
    """Warm every row, then time them round-robin (order rotated each repeat)."""
    for row in rows:
        _timed(row, min(number, 200))
    count = len(rows)
    for r in range(repeat):
        for i in range(count):
            row = rows[(i + r) % count]
            gc.collect()
            row.runs_us.append(_timed(row, number) / number / 1_000)


def _timed(row: Row, number: int) -> int:
    for attempt in range(RETRIES + 1):
        try:
            return row.timed(number)
        except redis.TimeoutError as exc:
            if attempt == RETRIES:
                raise BenchmarkError(
                    f"{row.label}: Redis timed out {RETRIES + 1} times in a row ({exc}); is "
                    "another client pausing or flooding it?"
                ) from exc
            print(f"  ({row.label}: Redis timed out, run discarded and repeated)")
    raise AssertionError("unreachable")


def print_rows(rows: Sequence[Row]) -> None:
    by_label = {r.label: r for r in rows}
    width = max(44, *(len(r.label) for r in rows))
    print(f"{'':<{width}}  {'min':>8}  {'median':>8}   overhead (min / median)")
    print("-" * (width + 60))
    for r in rows:
        text = f"{r.label:<{width}}  {r.min:8.2f}  {r.median:8.2f}"
        if r.baseline is not None:
            b = by_label[r.baseline]
            text += (
                f"   {r.min - b.min:+7.2f} / {r.median - b.median:+7.2f}  "
                f"(x{r.min / b.min:.2f})  vs {r.baseline}"
            )
        print(text)


def ratio_line(check: Row, ping: Row) -> str:
    return (
        f"{check.label} / {ping.label}: x{check.min / ping.min:.2f} (min), "
        f"x{check.median / ping.median:.2f} (median); the check adds "
        f"{check.min - ping.min:.1f} µs (min) / {check.median - ping.median:.1f} µs (median) "
        "to a round trip"
    )


class Refusals:
    """Counts checks that were refused while timed: there must be none."""

    def __init__(self) -> None:
        self.count = 0

    def check(self) -> None:
        if self.count:
            raise BenchmarkError(
                f"{self.count} timed checks were refused (429): the rows would not measure "
                "the admitted path; use more buckets"
            )


def limiter_rows(
    limiter: RedisRateLimiter,
    loop: asyncio.AbstractEventLoop,
    buckets: Iterator[str],
    refusals: Refusals,
) -> list[Row]:
    client = limiter.client
    aclient = limiter.async_client
    assert client is not None
    assert aclient is not None

    def ping(number: int) -> int:
        p = client.ping
        start = time.perf_counter_ns()
        for _ in range(number):
            p()
        return time.perf_counter_ns() - start

    def hit(number: int) -> int:
        h = limiter.hit
        refused = 0
        start = time.perf_counter_ns()
        for bucket in itertools.islice(buckets, number):
            if not h(bucket):
                refused += 1
        ns = time.perf_counter_ns() - start
        refusals.count += refused
        return ns

    async def _aping(number: int) -> int:
        p = aclient.ping
        start = time.perf_counter_ns()
        for _ in range(number):
            await p()
        return time.perf_counter_ns() - start

    async def _ahit(number: int) -> int:
        h = limiter.ahit
        refused = 0
        start = time.perf_counter_ns()
        for bucket in itertools.islice(buckets, number):
            if not await h(bucket):
                refused += 1
        ns = time.perf_counter_ns() - start
        refusals.count += refused
        return ns

    def on_loop(coro: Callable[[int], Awaitable[int]]) -> Callable[[int], int]:
        return lambda number: loop.run_until_complete(coro(number))  # type: ignore[arg-type]

    return [
        Row(L.R_PING, ping),
        Row(L.R_HIT, hit, L.R_PING),
        Row(L.R_APING, on_loop(_aping)),
        Row(L.R_AHIT, on_loop(_ahit), L.R_APING),
    ]


# -- through the ASGI middleware ------------------------------------------------------------------
class ManyKeys:
    """``n`` API keys with ``agents:read`` in one counting memory store, one ASGI scope each."""

    def __init__(self, n: int) -> None:
        self.store = CountingStore()
        self.hasher = Hasher(pepper_from_env=False)
        fmt = KeyFormat()
        self.scopes = []
        self.ids: list[str] = []
        for _ in range(n):
            g = fmt.generate()
            self.ids.append(g.key_id)
            self.store.create(
                KeyRecord(
                    key_id=g.key_id,
                    name="bench",
                    digest=self.hasher.digest(g.plaintext),
                    scopes=frozenset({SCOPE}),
                )
            )
            self.scopes.append(make_scope(f"UserKey {g.plaintext}"))

    def verifier(self, **options: Any) -> Verifier:
        return Verifier(
            self.store,
            policy=RoutePolicy({f"GET {PATH}": SCOPE}),
            hasher=self.hasher,
            cache_size=2 * len(self.scopes),
            cache_ttl=3600,
            touch_interval=1e9,
            **options,
        )


KG_PLAIN = "Starlette + keyguard: auth + scope"
KG_MEMORY = "Starlette + keyguard: + 3-window limit (memory)"
KG_REDIS = "Starlette + keyguard: + 3-window limit (Redis)"
AHIT_ALONE = "RedisRateLimiter.ahit alone (same buckets)"
PING_SAME_RUN = "PING, async (same run)"


class StatusSend:
    """An ASGI ``send`` that does nothing but count responses that are not 200."""

    def __init__(self) -> None:
        self.bad = 0
        self.last: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            self.last = status
            if status != 200:
                self.bad += 1


def asgi_rows(
    keys: ManyKeys,
    redis_limiter: RedisRateLimiter,
    loop: asyncio.AbstractEventLoop,
    send: StatusSend,
) -> tuple[list[Row], Any]:
    """The ASGI rows, and the keyguard + Redis app (for the round-trip count)."""
    bare = "Starlette, bare"
    cycle = itertools.cycle(keys.scopes)

    def kg(**options: Any) -> Any:
        return starlette_app(Middleware(KeyGuardMiddleware, verifier=keys.verifier(**options)))

    apps = {
        bare: starlette_app(),
        KG_PLAIN: kg(rate_limits=None),
        KG_MEMORY: kg(limiter=MemoryRateLimiter()),
        KG_REDIS: kg(limiter=redis_limiter),
    }

    async def serve(app: Any, number: int) -> int:
        start = time.perf_counter_ns()
        for scope in itertools.islice(cycle, number):
            await app(scope.copy(), receive, send)
        return time.perf_counter_ns() - start

    # Every key once through every app: cache filled, Redis script loaded, buckets created.
    async def warm() -> None:
        for app in apps.values():
            for scope in keys.scopes:
                await app(scope.copy(), receive, send)

    loop.run_until_complete(warm())
    if send.bad:
        raise BenchmarkError(f"{send.bad} warm-up requests were not answered 200")

    aclient = redis_limiter.async_client
    assert aclient is not None

    async def aping(number: int) -> int:
        p = aclient.ping
        start = time.perf_counter_ns()
        for _ in range(number):
            await p()
        return time.perf_counter_ns() - start

    def timer(app: Any) -> Callable[[int], int]:
        return lambda number: loop.run_until_complete(serve(app, number))

    # The limiter alone, on the same buckets (the keys' ids) as the middleware's checks.
    ids = itertools.cycle(keys.ids)

    async def ahit(number: int) -> int:
        h = redis_limiter.ahit
        refused = 0
        start = time.perf_counter_ns()
        for bucket in itertools.islice(ids, number):
            if not await h(bucket):
                refused += 1
        ns = time.perf_counter_ns() - start
        send.bad += refused
        return ns

    rows = [Row(label, timer(app), None if label == bare else bare) for label, app in apps.items()]
    rows.append(Row(AHIT_ALONE, lambda n: loop.run_until_complete(ahit(n))))
    rows.append(Row(PING_SAME_RUN, lambda n: loop.run_until_complete(aping(n))))
    return rows, apps[KG_REDIS]


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    args = parse_args()
    admin_probe = connect(args.url)
    if admin_probe is None:
        if args.json:
            write_json(
                args.json,
                group_json("redis", TITLE, [], facts={"skipped": "Redis unreachable"}),
            )
        return
    admin_probe.close()
    prefix = f"kgbench{os.getpid()}x{secrets.token_hex(4)}"
    admin = redis.Redis.from_url(
        with_query(args.url, client_name=f"{prefix}-admin"), socket_timeout=10.0
    )
    limiter_url = with_query(args.url, prefix=prefix, client_name=prefix)
    limiter = RedisRateLimiter.from_url(limiter_url)
    loop = asyncio.new_event_loop()
    results: dict[str, Any] = {}
    try:
        run(args, admin, prefix, limiter, loop, results)
    except redis.RedisError as exc:
        raise BenchmarkError(f"Redis error: {type(exc).__name__}: {exc}") from None
    finally:
        limiter.close()
        loop.run_until_complete(limiter.aclose())
        loop.close()
        deleted = cleanup(admin, prefix)
        admin.close()
        print(f"\ncleaned up: {deleted} Redis keys under {prefix}*")
    rows = [
        ResultRow(r.label, r.runs_us, baseline=r.baseline)
        for r in (*results.pop("rows"), *results.pop("store_rows"), *results.pop("asgi_rows"))
    ]
    data = group_json(
        "redis",
        TITLE,
        rows,
        options={"number": args.number, "repeat": args.repeat, "buckets": args.buckets},
        facts=results,
        env=results.pop("environment"),
    )
    if args.json:
        write_json(args.json, data)
        print(f"wrote {args.json}")
    from benchmarks.goals import print_goals

    print_goals({"redis": data})


TITLE = "Redis: rate-limit round trips and cost vs PING; key store miss vs PING"


def store_rows(args: argparse.Namespace, prefix: str) -> tuple[list[Row], dict[str, Any]]:
    """Issue 9's figure: ``Verifier.authenticate`` on a cache miss against a ``RedisStore``
    (every call reads the key's record: ``cache_ttl=0``), against a PING on another
    connection to the same server, round-robin in the same run."""
    store = CountingRedisStore.from_url(with_query(args.url, prefix=f"{prefix}s"))
    hasher = Hasher(pepper_from_env=False)
    fmt = KeyFormat()
    headers = []
    for _ in range(100):
        g = fmt.generate()
        store.create(
            KeyRecord(
                key_id=g.key_id,
                name="bench",
                digest=hasher.digest(g.plaintext),
                scopes=frozenset({SCOPE}),
            )
        )
        headers.append(f"UserKey {g.plaintext}")
    verifier = Verifier(
        store,
        hasher=hasher,
        rate_limits=None,
        cache_ttl=0,
        negative_cache_ttl=0,
        touch_interval=1e9,
        brute_force=None,
    )
    client = redis.Redis.from_url(args.url, socket_timeout=10.0)
    cycle = itertools.cycle(headers)
    refused = [0]

    def ping(number: int) -> int:
        p = client.ping
        start = time.perf_counter_ns()
        for _ in range(number):
            p()
        return time.perf_counter_ns() - start

    def miss(number: int) -> int:
        authenticate = verifier.authenticate
        start = time.perf_counter_ns()
        for header in itertools.islice(cycle, number):
            if not authenticate(header).allowed:
                refused[0] += 1
        return time.perf_counter_ns() - start

    rows = [Row(L.R_STORE_PING, ping), Row(L.R_STORE_MISS, miss, L.R_STORE_PING)]
    try:
        reads = store.reads
        time_rows(rows, args.number, args.repeat)
        calls = store.reads - reads
    finally:
        client.close()
        store.close()
    expected = args.repeat * args.number + min(args.number, 200)
    if refused[0] or calls != expected:
        raise BenchmarkError(
            f"RedisStore rows: {refused[0]} refused, {calls} store reads for {expected} calls: "
            "not every call was a cache miss"
        )
    return rows, {"store_reads_per_miss": calls / expected}


class CountingRedisStore(RedisStore):
    """A Redis key store that counts reads (every cache miss must read it once)."""

    reads = 0

    def get(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        return super().get(key_id)


def run(
    args: argparse.Namespace,
    admin: redis.Redis,
    prefix: str,
    limiter: RedisRateLimiter,
    loop: asyncio.AbstractEventLoop,
    results: dict[str, Any],
) -> None:
    env = environment()
    server = admin.info("server")
    print("keyguard — rate limiting in Redis: round trips, cost against a PING, through ASGI")
    print(describe(env))
    print(
        f"Redis {server.get('redis_version')} at {safe_url(args.url)} · redis-py "
        f"{redis.__version__} · prefix {prefix} · windows: DEFAULT_WINDOWS (20/10s, 100/minute, "
        f"5000/day), Redis clock"
    )
    print(
        f"checks round-robin over {args.buckets:,} buckets (keys); {args.number:,} calls per "
        f"run x {args.repeat} runs per row, round-robin"
    )
    results.update(environment=env, redis_version=server.get("redis_version"))

    buckets = itertools.cycle([f"b{i}" for i in range(args.buckets)])
    refusals = Refusals()
    rows = limiter_rows(limiter, loop, buckets, refusals)
    # Warm: every bucket once (script loaded, state created), both connections open.
    for _ in range(args.buckets):
        limiter.hit(next(buckets))
    loop.run_until_complete(limiter.ahit(next(buckets)))

    print("\n1. Round trips per rate-limit check, counted by Redis\n")
    n = args.count

    def sync_checks() -> None:
        for bucket in itertools.islice(buckets, n):
            if not limiter.hit(bucket):
                refusals.count += 1

    async def _async_checks() -> None:
        for bucket in itertools.islice(buckets, n):
            if not await limiter.ahit(bucket):
                refusals.count += 1

    counts = [
        count_round_trips("RedisRateLimiter.hit (sync)", args.url, admin, prefix, n, sync_checks),
        count_round_trips(
            "RedisRateLimiter.ahit (async)",
            args.url,
            admin,
            prefix,
            n,
            lambda: loop.run_until_complete(_async_checks()),
        ),
    ]
    refusals.check()

    # The ASGI apps now (their warm-up makes one request per key per app), so the third
    # count can run through the middleware.
    keys = ManyKeys(args.buckets)
    send = StatusSend()
    asgi, redis_app = asgi_rows(keys, limiter, loop, send)

    async def _requests() -> None:
        for scope in itertools.islice(itertools.cycle(keys.scopes), n):
            await redis_app(scope.copy(), receive, send)

    counts.append(
        count_round_trips(
            "ASGI request: keyguard + RedisRateLimiter",
            args.url,
            admin,
            prefix,
            n,
            lambda: loop.run_until_complete(_requests()),
        )
    )
    if send.bad:
        raise BenchmarkError(f"{send.bad} counted requests were not answered 200")
    print_counts(counts)
    results["round_trips"] = [
        {
            "label": c.label,
            "checks": c.n,
            "round_trips_per_check": None if c.round_trips is None else c.round_trips / c.n,
            "evalsha_per_check": c.evalsha / c.n,
            "commands_per_check": c.commands / c.n,
            "in_script_per_check": None if c.in_scripts is None else c.in_scripts / c.n,
            "other_clients": c.others,
            "commandstats_delta": c.by_command,
        }
        for c in counts
    ]

    # Everything built so far lives for the whole run, as a server's startup state does:
    # frozen, it is not walked by the gc.collect() before each timed run (0.2 s each).
    gc.collect()
    gc.freeze()
    print("\n2. A rate-limit check against a PING (same client, same run), µs per call\n")
    before = _commandstats(admin)
    time_rows(rows, args.number, args.repeat)
    after = _commandstats(admin)
    refusals.check()
    print_rows(rows)
    print()
    print(ratio_line(rows[1], rows[0]))
    print(ratio_line(rows[3], rows[2]))
    server = {}
    for command in ("evalsha", "ping"):
        b, a = before.get(f"cmdstat_{command}", (0, 0)), after.get(f"cmdstat_{command}", (0, 0))
        server[command] = (a[1] - b[1]) / (a[0] - b[0]) if a[0] > b[0] else None
    if server["evalsha"] is not None and server["ping"] is not None:
        print(
            f"inside Redis (INFO commandstats usec / calls over these runs): one EVALSHA, the "
            f"script's own commands included, {server['evalsha']:.1f} µs; one PING "
            f"{server['ping']:.1f} µs. The rest of a check is the round trip and the client."
        )
    results["rows"] = rows
    results["server_us"] = server

    print("\n2b. Verify on a cache miss against the Redis key store vs a PING, µs per call\n")
    srows, sfacts = store_rows(args, prefix)
    print_rows(srows)
    print()
    print(ratio_line(srows[1], srows[0]))
    results["store_rows"] = srows
    results.update(sfacts)

    print("\n3. Through the ASGI middleware (cache-hit keys), µs per request\n")
    reads = keys.store.reads
    time_rows(asgi, args.number, args.repeat)
    if send.bad:
        raise BenchmarkError(f"{send.bad} timed requests were not answered 200")
    if keys.store.reads != reads:
        raise BenchmarkError("keyguard read the store while timed: not cache hits")
    print_rows(asgi)
    by_label = {r.label: r for r in asgi}
    plain, red, mem = by_label[KG_PLAIN], by_label[KG_REDIS], by_label[KG_MEMORY]
    alone, ping = by_label[AHIT_ALONE], by_label[PING_SAME_RUN]
    print()
    added_min, added_median = red.min - plain.min, red.median - plain.median
    print(
        f"the Redis limit adds {added_min:.1f} µs (min) / {added_median:.1f} µs (median) to "
        f"auth + scope: x{added_min / ping.min:.2f} / x{added_median / ping.median:.2f} of an "
        "async PING"
    )
    print(
        f"a request through Starlette + keyguard + Redis costs {red.min - alone.min:.1f} µs "
        f"(min) / {red.median - alone.median:.1f} µs (median) more than the ahit alone; "
        f"ahit alone / PING: x{alone.min / ping.min:.2f} (min), x{alone.median / ping.median:.2f} "
        "(median)"
    )
    print(
        f"the memory limit adds {mem.min - plain.min:.1f} µs (min) / "
        f"{mem.median - plain.median:.1f} µs (median) to auth + scope"
    )
    print(
        f"keys: {len(keys.scopes):,}, requests round-robin over them; all answered 200, none "
        "read the store"
    )
    results["asgi_rows"] = asgi


if __name__ == "__main__":
    main()
