"""Shared driver for the in-process request benchmarks (``bench_asgi.py``, ``bench_wsgi.py``).

A benchmark is a list of :class:`Variant` rows — a label, a function that builds the app, the
label of the row it is compared with, the request it is sent and the status it must answer.
:func:`run` builds every app, checks each answers its expected status (aborting otherwise),
warms it, then times the variants round-robin: repeat ``r`` runs every variant once, in an
order rotated by ``r``, so drift on a shared machine affects them all alike. Overheads are
differences of figures measured in the same run, from the minimums (the cost without
interference) and from the medians (what a typical run sees).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore

#: The one protected route of every app, and the scope it needs.
PATH = "/agents"
SCOPE = "agents:read"
#: The body every app answers ``GET /agents`` with, so the probe can tell the endpoint ran.
BODY = {"agents": []}

#: Which request a variant is sent: a key with ``agents:read``, no Authorization header, or a
#: valid key that lacks the scope.
GOOD, NO_KEY, NARROW = "good", "no key", "narrow"
REQUESTS = (GOOD, NO_KEY, NARROW)


class BenchmarkError(SystemExit):
    """A variant does not behave as the benchmark assumes: abort before printing figures."""

    def __init__(self, message: str) -> None:
        super().__init__(f"benchmark aborted: {message}")


class CountingStore(MemoryStore):
    """A memory store that counts reads, so a run can prove keyguard stayed on the cache."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        return super().get(key_id)


class Keys:
    """One store with two keys (one with ``agents:read``, one without) and the Authorization
    values for each request kind, shared by every variant of a run."""

    def __init__(self) -> None:
        self.store = CountingStore()
        self.hasher = Hasher(pepper_from_env=False)
        self.good = self._issue(SCOPE, "agents:write")
        self.narrow = self._issue("tasks:read")
        #: Authorization header value per request kind (None: no header).
        self.header: dict[str, str | None] = {
            GOOD: self.good,
            NO_KEY: None,
            NARROW: self.narrow,
        }
        #: What the hand-written guards and peer backends look up: header value → scopes.
        self.table: dict[str, frozenset[str]] = {
            self.good: frozenset({SCOPE, "agents:write"}),
            self.narrow: frozenset({"tasks:read"}),
        }

    def _issue(self, *scopes: str) -> str:
        g = KeyFormat().generate()
        self.store.create(
            KeyRecord(
                key_id=g.key_id,
                name="bench",
                digest=self.hasher.digest(g.plaintext),
                scopes=frozenset(scopes),
            )
        )
        return f"UserKey {g.plaintext}"

    def verifier(self, **options: Any) -> Verifier:
        """A keyguard verifier for ``GET /agents``; a long cache TTL so every timed request is
        a cache hit (the default 1 s TTL adds one store read per key per second). ``options``
        go to :class:`Verifier` (``rate_limits=``, ``limiter=``, ``ietf_headers=``, ...);
        without them the verifier has the library's defaults, rate limiting included."""
        settings: dict[str, Any] = {
            "policy": RoutePolicy({f"GET {PATH}": SCOPE}),
            "hasher": self.hasher,
            "cache_ttl": 3600,
            "touch_interval": 1e9,
        }
        settings.update(options)
        return Verifier(self.store, **settings)


#: Seconds the limiter's clock advances per check in the admitted rate-limit rows. The
#: platform's windows (20/10 s, 100/minute, 5,000/day) admit a key that sends one request
#: every 18 s for ever (4,800 a day), so every timed request is admitted, with the state of a
#: busy key: 3-4 units in the sliding log, ~50 units in each of the day window's 96 buckets.
ADMITTED_STEP = 18.0
#: Any epoch time: where the fake limiter clocks start.
EPOCH = 1_700_000_000.0


def admitting_limiter() -> MemoryRateLimiter:
    """A memory limiter whose clock advances :data:`ADMITTED_STEP` seconds per check, so the
    platform's own windows admit every request (same windows, same code path, no 429). The
    clock is ``itertools.count(...).__next__``: a C call, as cheap as ``time.time``."""
    return MemoryRateLimiter(clock=itertools.count(EPOCH, ADMITTED_STEP).__next__)


def frozen_limiter() -> MemoryRateLimiter:
    """A memory limiter whose clock never moves: once a key has spent its burst (20 requests
    in the 10 s window) every later request is refused, for as long as the benchmark runs."""
    return MemoryRateLimiter(clock=itertools.repeat(EPOCH).__next__)


#: Response headers a rate-limited keyguard row must send (and the headers-off row must not).
RATE_LIMIT_HEADERS = ("ratelimit-policy", "ratelimit", "x-ratelimit-remaining")

#: Footnotes of the keyguard rows, shared by bench_asgi.py and bench_wsgi.py.
NOTE_NO_LIMIT = "Verifier(rate_limits=None): authentication + scope (RoutePolicy), cache hit."
NOTE_LIMITED = (
    "the full default path: auth + scope + the platform's three windows (burst 20/10s, "
    "100/minute, 5000/day: DEFAULT_WINDOWS, unchanged) in a MemoryRateLimiter, with the "
    "IETF RateLimit-Policy/RateLimit and legacy X-RateLimit-* headers on every response. So "
    "that no timed request is refused, the limiter's clock (itertools.count, a C call like "
    "time.time) advances 18 s per check: the key is busy (4,800 requests a day) but never "
    "over. Raising the limits instead (e.g. 1000000000/10s) would NOT be the same code path: "
    "windows above 10,000 units are bucketed rather than exact sliding logs."
)
NOTE_NO_HEADERS = (
    "as above with ietf_headers=False, legacy_headers=False: the difference is what the "
    "rate-limit headers cost (formatting them and adding them to the response start)."
)
NOTE_429 = (
    "the 429 path: DEFAULT_WINDOWS, the limiter's clock frozen and the key's 20-request burst "
    "spent before timing, so every timed request is refused: auth + scope + limiter check, "
    "then a problem+json body with a fresh request id and Retry-After, RateLimit-Policy, "
    "RateLimit and X-RateLimit-* headers. The app never runs. Goal: under 10 µs per request "
    "(the row's own time, Starlette's middleware stack included)."
)


@dataclass(frozen=True)
class Variant:
    """One row: ``build()`` returns the app; ``baseline`` names the row it is compared with."""

    label: str
    build: Callable[[], Any]
    baseline: str | None = None
    request: str = GOOD
    status: int = 200
    #: Print whether the overhead (from the minimums) is under this many µs.
    goal_us: float | None = None
    #: Judge ``goal_us`` against the row's own time per request (min), not its overhead.
    goal_absolute: bool = False
    #: Requests sent (answers discarded) once the app is built, before any check: to spend a
    #: rate limit so the row measures the 429 path.
    prime: int = 0
    #: The body the row answers must contain this (checked before and after timing).
    body_has: bytes = b""
    #: Response headers (lower-case names) the row must send / must not send.
    headers_has: tuple[str, ...] = ()
    headers_lack: tuple[str, ...] = ()
    note: str = ""


class Driver(Protocol):
    """Sends requests to an app of one kind (ASGI or WSGI) without any network."""

    def probe(self, app: Any, request: str) -> tuple[int, list[str], bytes]:
        """One request: the status, response header names (lower-case) and body."""

    def timed(self, app: Any, request: str, number: int) -> int:
        """Nanoseconds spent answering ``number`` identical requests."""


@dataclass
class Result:
    variant: Variant
    runs_us: list[float]

    @property
    def min(self) -> float:
        return min(self.runs_us)

    @property
    def median(self) -> float:
        return statistics.median(self.runs_us)


def parse_args(doc: str | None, *, number: int, repeat: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few requests, few repeats (seconds)"
    )
    parser.add_argument("--number", type=int, help=f"requests per timed run (default {number:,})")
    parser.add_argument("--repeat", type=int, help=f"timed runs per variant (default {repeat})")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.number is None:
        args.number = 300 if args.quick else number
    if args.repeat is None:
        args.repeat = 3 if args.quick else repeat
    if args.number < 1 or args.repeat < 1:
        parser.error("--number and --repeat must be at least 1")
    return args


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run(
    title: str,
    variants: Sequence[Variant],
    driver: Driver,
    *,
    number: int,
    repeat: int,
    expected_body: bytes,
    keys: Keys,
    json_path: str | None = None,
    compare: Sequence[tuple[str, str]] = (),
) -> list[Result]:
    """Check, warm and time ``variants``; print the table (and write JSON when asked).

    ``compare``: pairs of labels ``(a, b)`` printed after the table as "a vs b" (time per
    request of each, from the minimums and the medians, and their ratio)."""
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise BenchmarkError("two variants share a label")
    for a, b in compare:
        if a not in labels or b not in labels:
            raise BenchmarkError(f"unknown label in comparison {a!r} vs {b!r}")
    for v in variants:
        if v.baseline is not None and v.baseline not in labels:
            raise BenchmarkError(f"{v.label!r}: unknown baseline {v.baseline!r}")
        if v.request not in REQUESTS:
            raise BenchmarkError(f"{v.label!r}: unknown request kind {v.request!r}")

    env = environment()
    print(f"keyguard — {title}: in-process per-request cost, µs per request")
    print(
        f"Python {env['python']} ({env['implementation']}) · {env['platform']} · "
        f"{env['cpus']} CPUs · {env['date']}"
    )
    print(
        f"{number:,} requests per run x {repeat} runs per variant, round-robin; "
        "overhead = variant - baseline, same run"
    )
    print()

    apps = {v.label: v.build() for v in variants}
    for v in variants:
        for _ in range(v.prime):
            driver.probe(apps[v.label], v.request)
    _check(variants, apps, driver, expected_body, "before timing")
    warm = min(number, 1_000)
    for v in variants:
        driver.timed(apps[v.label], v.request, warm)
    reads = keys.store.reads

    runs: dict[str, list[float]] = {v.label: [] for v in variants}
    count = len(variants)
    for r in range(repeat):
        for i in range(count):
            v = variants[(i + r) % count]
            gc.collect()
            ns = driver.timed(apps[v.label], v.request, number)
            runs[v.label].append(ns / number / 1_000)

    # Still answering as expected after thousands of requests (no rate limit hit, no cache
    # expiry), and keyguard never went back to the store: every timed request was a cache hit.
    _check(variants, apps, driver, expected_body, "after timing")
    if keys.store.reads != reads:
        raise BenchmarkError(
            f"keyguard read the store {keys.store.reads - reads} times while timed: "
            "the rows are not cache hits"
        )

    results = [Result(v, runs[v.label]) for v in variants]
    _print_table(results)
    _print_comparisons(results, compare)
    if json_path:
        _write_json(json_path, title, env, number, repeat, results)
        print(f"\nwrote {json_path}")
    return results


def _check(
    variants: Sequence[Variant],
    apps: dict[str, Any],
    driver: Driver,
    expected_body: bytes,
    when: str,
) -> None:
    for v in variants:
        status, names, body = driver.probe(apps[v.label], v.request)
        if status != v.status:
            raise BenchmarkError(
                f"{v.label!r} answered {status} {when}, expected {v.status}: {body[:200]!r}"
            )
        if v.status == 200 and body != expected_body:
            raise BenchmarkError(f"{v.label!r} answered an unexpected body {when}: {body!r}")
        if v.body_has not in body:
            raise BenchmarkError(
                f"{v.label!r} answered without {v.body_has!r} {when}: {body[:200]!r}"
            )
        missing = [h for h in v.headers_has if h not in names]
        extra = [h for h in v.headers_lack if h in names]
        if missing or extra:
            raise BenchmarkError(
                f"{v.label!r} {when}: headers {names}; missing {missing}, unexpected {extra}"
            )


def _by_label(results: Sequence[Result]) -> dict[str, Result]:
    return {r.variant.label: r for r in results}


def overheads(result: Result, results: Sequence[Result]) -> tuple[float, float] | None:
    """(overhead from the minimums, overhead from the medians) in µs, or None."""
    base = result.variant.baseline
    if base is None:
        return None
    b = _by_label(results)[base]
    return result.min - b.min, result.median - b.median


def goal_met(result: Result, results: Sequence[Result]) -> bool | None:
    """Whether the row meets its goal (None without one): its overhead from the minimums, or
    its own minimum time per request for an absolute goal."""
    v = result.variant
    if v.goal_us is None:
        return None
    if v.goal_absolute:
        return result.min < v.goal_us
    over = overheads(result, results)
    return None if over is None else over[0] < v.goal_us


def _print_table(results: Sequence[Result]) -> None:
    width = max(48, *(len(r.variant.label) for r in results))
    print(f"{'variant':<{width}}  status  {'min':>8}  {'median':>8}   overhead (min / median)")
    print("-" * (width + 70))
    notes: list[str] = []
    for r in results:
        v = r.variant
        text = f"{v.label:<{width}}  {v.status:>6}  {r.min:8.2f}  {r.median:8.2f}"
        over = overheads(r, results)
        if over is not None:
            base = _by_label(results)[v.baseline]  # type: ignore[index]
            text += (
                f"   {over[0]:+7.2f} / {over[1]:+7.2f}  (x{r.min / base.min:.2f})  vs {v.baseline}"
            )
        met = goal_met(r, results)
        if met is not None:
            what = "per request" if v.goal_absolute else "overhead"
            text += f"  [goal: {what} < {v.goal_us:g}: {'met' if met else 'MISSED'}]"
        if v.note:
            notes.append(v.note)
            text += f"  ({len(notes)})"
        print(text)
    if notes:
        print()
    for n, note in enumerate(notes, 1):
        print(f"({n}) {note}")


def _print_comparisons(results: Sequence[Result], compare: Sequence[tuple[str, str]]) -> None:
    by_label = _by_label(results)
    if compare:
        print()
    for a, b in compare:
        ra, rb = by_label[a], by_label[b]
        print(
            f"{a}  vs  {b}: {ra.min:.2f} vs {rb.min:.2f} µs per request (min), "
            f"{ra.median:.2f} vs {rb.median:.2f} (median): x{rb.min / ra.min:.1f} (min), "
            f"x{rb.median / ra.median:.1f} (median)"
        )


def _write_json(
    path: str,
    title: str,
    env: dict[str, Any],
    number: int,
    repeat: int,
    results: Sequence[Result],
) -> None:
    rows = []
    for r in results:
        over = overheads(r, results)
        rows.append(
            {
                "label": r.variant.label,
                "request": r.variant.request,
                "status": r.variant.status,
                "min_us": round(r.min, 3),
                "median_us": round(r.median, 3),
                "baseline": r.variant.baseline,
                "overhead_min_us": None if over is None else round(over[0], 3),
                "overhead_median_us": None if over is None else round(over[1], 3),
                "goal_us": r.variant.goal_us,
                "goal_on": "per request" if r.variant.goal_absolute else "overhead",
                "goal_met": goal_met(r, results),
                "note": r.variant.note,
                "runs_us": [round(x, 3) for x in r.runs_us],
            }
        )
    data = {
        "benchmark": title,
        "script": os.path.basename(sys.argv[0]),
        "environment": env,
        "number": number,
        "repeat": repeat,
        "rows": rows,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
